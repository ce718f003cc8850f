"""The telemetry payload (contract.md "Telemetry fields"), from the hardware monitor, the
scheduler and the worker supervisor."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from assistant.hardware import HardwareMonitor


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def telemetry_payload(
    monitor: HardwareMonitor,
    *,
    instance: str,
    started: float,
    cpu_count: int,
    worker_rss_mb: float | None,
    queue_depth: int,
    active_requests: int,
    requests_total: int,
    errors_total: int,
    errors_by_code: dict[str, int],
    tokens_per_s: float,
    model: str,
    tier: str,
    worker_restarts: int,
    mqtt_connects: int,
) -> dict[str, Any]:
    available, total = monitor.get_memory_info()
    return {
        "ts": now_iso(),
        # The MQTT client id: tells instances apart when several share a base topic.
        "instance": instance,
        "uptime_s": round(time.monotonic() - started, 1),
        "cpu_percent": monitor.get_cpu_usage(),
        "cpu_count": cpu_count,
        "memory": {"available_mb": available, "total_mb": total},
        # Flat copy for Home Assistant value templates and charts.
        "memory_available_mb": available,
        "process_rss_mb": monitor.process_rss_mb(),
        "worker_rss_mb": worker_rss_mb,
        "cpu_temp_c": monitor.get_cpu_temperature(),
        "load_avg": [round(x, 2) for x in monitor.get_load_average()],
        "queue_depth": queue_depth,
        "active_requests": active_requests,
        "requests_total": requests_total,
        "errors_total": errors_total,
        "errors_by_code": errors_by_code,
        "tokens_per_s": round(tokens_per_s, 1),
        "model": model,
        "tier": tier,
        "worker_restarts": worker_restarts,
        "mqtt_connects": mqtt_connects,
    }
