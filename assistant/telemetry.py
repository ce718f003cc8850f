"""The telemetry payload (contract.md "Telemetry fields"), from the hardware monitor, the
core's scheduler and worker client, and the MQTT link."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psutil

from assistant.core.core import Core
from assistant.hardware import HardwareFacts, Probe
from assistant.plan import Plan


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class HardwareMonitor:
    """The seed article's live view of the machine (cgroup-aware through the probe)."""

    def __init__(self, probe: Probe | None = None) -> None:
        self._probe = probe or Probe()
        # Its own baseline (psutil.cpu_percent keeps one for the whole process): MQTT
        # telemetry (every interval_s) and the page (every second) each get their interval.
        self._cpu = _busy_and_total()

    def get_cpu_usage(self) -> float:
        """System CPU use in percent since this monitor's previous call."""
        (busy, total), self._cpu = self._cpu, _busy_and_total()
        elapsed = self._cpu[1] - total
        return round(100.0 * (self._cpu[0] - busy) / elapsed, 1) if elapsed > 0 else 0.0

    def get_memory_info(self) -> tuple[int, int]:
        """(available MB, total MB), honouring the cgroup memory limit."""
        vm = psutil.virtual_memory()
        total, available = vm.total, vm.available
        limit, usage = self._probe.memory_limit_bytes()
        if limit is not None:
            total = min(total, limit)
            available = min(available, max(0, limit - (usage or 0)))
        return available // 2**20, total // 2**20

    def get_cpu_temperature(self) -> float | None:
        return self._probe.cpu_temperature()

    def get_load_average(self) -> tuple[float, float, float]:
        return os.getloadavg()

    @staticmethod
    def process_rss_mb(pid: int | None = None) -> float:
        try:
            return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
        except psutil.Error:
            return 0.0


def _busy_and_total() -> tuple[float, float]:
    """CPU seconds (busy, all) so far; guest time is already counted in user/nice."""
    times = psutil.cpu_times()
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    return total - times.idle - getattr(times, "iowait", 0.0), total


class Telemetry:
    """What `{base}/telemetry` publishes: the machine, the core and the MQTT link."""

    def __init__(
        self,
        core: Core,
        plan: Plan,
        facts: HardwareFacts,
        instance: str,
        counters: Callable[[], tuple[int, int]],
    ) -> None:
        """`counters`: (MQTT connects, payloads refused before they became requests)."""
        self.core = core
        self.plan = plan
        self.facts = facts
        self.instance = instance  # the MQTT client id: tells instances apart
        self.monitor = HardwareMonitor()
        self.started = time.monotonic()
        self._counters = counters

    def payload(self, monitor: HardwareMonitor | None = None) -> dict[str, Any]:
        """`monitor`: another caller's own (the page samples every second, MQTT every
        interval_s; each CPU percent covers its caller's interval)."""
        monitor = monitor or self.monitor
        stats, worker = self.core.stats(), self.core.worker
        connects, invalid = self._counters()
        available, total = monitor.get_memory_info()
        return {
            "ts": now_iso(),
            "instance": self.instance,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "cpu_percent": monitor.get_cpu_usage(),
            "cpu_count": self.facts.cores,
            "memory": {"available_mb": available, "total_mb": total},
            # Flat copy for Home Assistant value templates and charts.
            "memory_available_mb": available,
            "process_rss_mb": monitor.process_rss_mb(),
            "worker_rss_mb": worker.worker_rss_mb(),
            "cpu_temp_c": monitor.get_cpu_temperature(),
            "load_avg": [round(x, 2) for x in monitor.get_load_average()],
            "queue_depth": stats.queue_depth,
            "active_requests": stats.active,
            "requests_total": stats.requests_total,
            "errors_total": stats.errors_total + invalid,
            "errors_by_code": dict(stats.errors_by_code),
            "tokens_per_s": round(stats.tokens_per_s, 1),
            "model": self.plan.model.id,
            "tier": self.plan.tier,
            "worker_restarts": worker.restarts,
            "mqtt_connects": connects,
            "sessions": len(self.core.sessions),
        }
