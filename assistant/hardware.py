"""The hardware probe: what the machine offers, read once from /proc, /sys and psutil.

It answers "what can this process actually use?" — inside an add-on container that is
the cgroup's CPU quota and memory limit, not the host's. The parsers are pure functions
of file contents so the container logic is tested without a container.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

from assistant.hardware_cache import last_level_cache_mb
from assistant.ort_providers import installed_providers

StorageClass = Literal["nvme", "ssd", "rotational", "sd_emmc", "unknown"]

# CPU flags that decide INT8 speed, normalised to one vocabulary across architectures.
_X86_FEATURES = {
    "avx2": "avx2",
    "avx512f": "avx512f",
    "avx512_vnni": "avx512_vnni",
    "avx512vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "amx_int8": "amx",
}
_ARM_FEATURES = {
    "asimd": "asimd",
    "asimddp": "dotprod",
    "i8mm": "i8mm",
    "sve": "sve",
}
# The same arm features as arm64 Linux HWCAP/HWCAP2 bits (asm/hwcap.h): what the kernel,
# or qemu-user (whose /proc/cpuinfo is the x86 host's), lets this process use.
_ARM_HWCAP = {"asimd": 1 << 1, "dotprod": 1 << 20, "sve": 1 << 22}
_ARM_HWCAP2 = {"i8mm": 1 << 13}
_UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a huge page-aligned number


@dataclass(frozen=True)
class HardwareFacts:
    """What the probe found; also written by hand in tests to describe other machines."""

    arch: str
    cpu_model: str | None
    logical_cpus: int  # the host's online CPUs
    usable_cpus: float  # after affinity and the cgroup CPU quota
    cpu_quota: float | None  # cgroup quota in CPUs, None when unlimited
    memory_total_mb: int  # host RAM
    memory_limit_mb: int | None  # cgroup memory.max, None when unlimited
    memory_available_mb: int  # what this process could still get
    cpu_features: frozenset[str]
    storage: StorageClass
    cpu_temp_c: float | None = None
    board: str | None = None  # e.g. "Raspberry Pi 4 Model B Rev 1.4" from the device tree
    power_limit_w: float | None = None  # from RAPL when readable
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    cache_mb: float | None = None  # last-level CPU cache (hardware_cache.py); None: unknown

    @property
    def cores(self) -> int:
        """Whole CPUs worth scheduling threads on (a 1.5-CPU quota gives 1)."""
        return max(1, int(self.usable_cpus))

    @property
    def memory_mb(self) -> int:
        """Memory this process may use at most: the host's or the cgroup's, whichever is less."""
        if self.memory_limit_mb is None:
            return self.memory_total_mb
        return min(self.memory_total_mb, self.memory_limit_mb)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cpu_features"] = sorted(self.cpu_features)
        data["providers"] = list(self.providers)
        data["cores"] = self.cores
        data["memory_mb"] = self.memory_mb
        return data


# --- pure parsers -------------------------------------------------------------------------


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 `cpu.max` ("max 100000" or "150000 100000") → CPUs, None when unlimited."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    quota, period = int(parts[0]), int(parts[1])
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` → CPUs, None when unlimited (-1)."""
    quota, period = int(quota_text.strip()), int(period_text.strip())
    return quota / period if quota > 0 and period > 0 else None


def parse_memory_limit(text: str) -> int | None:
    """cgroup `memory.max` (v2) or `memory.limit_in_bytes` (v1) → bytes, None when unlimited."""
    value = text.strip()
    if value == "max" or not value:
        return None
    number = int(value)
    return None if number >= _UNLIMITED else number


def parse_cpu_features(cpuinfo: str) -> frozenset[str]:
    """The INT8-relevant features from /proc/cpuinfo's `flags` (x86) or `Features` (arm)."""
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "flags":
            found.update(_X86_FEATURES[f] for f in value.split() if f in _X86_FEATURES)
        elif key == "features":
            found.update(_ARM_FEATURES[f] for f in value.split() if f in _ARM_FEATURES)
    return frozenset(found)


def parse_arm_hwcaps(hwcap: int, hwcap2: int) -> frozenset[str]:
    """arm64 INT8 features from the auxiliary vector's AT_HWCAP and AT_HWCAP2 words."""
    found = {name for name, bit in _ARM_HWCAP.items() if hwcap & bit}
    return frozenset(found | {name for name, bit in _ARM_HWCAP2.items() if hwcap2 & bit})


def _arm_hwcaps() -> tuple[int, int] | None:
    """getauxval(AT_HWCAP), getauxval(AT_HWCAP2) on arm64 Linux; None elsewhere."""
    if platform.machine() not in {"aarch64", "arm64"}:
        return None
    with contextlib.suppress(OSError, AttributeError):
        getauxval = ctypes.CDLL(None).getauxval
        getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
        return int(getauxval(16)), int(getauxval(26))
    return None


def parse_cpu_model(cpuinfo: str) -> str | None:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return None


def parse_cgroup_path(text: str, controller: str = "") -> str:
    """This process's cgroup path from /proc/self/cgroup: the unified (v2) one when
    `controller` is empty, else the v1 hierarchy holding that controller; "/" when unknown."""
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "-", "")
        if (controller in controllers.split(",")) if controller else controllers == "":
            return path.strip() or "/"
    return "/"


def classify_block_device(name: str, rotational: str | None) -> StorageClass:
    """NVMe / SD-eMMC by kernel name; otherwise the queue's rotational flag decides."""
    if name.startswith("nvme"):
        return "nvme"
    if name.startswith("mmcblk"):
        return "sd_emmc"
    if rotational is None:
        return "unknown"
    return "rotational" if rotational.strip() == "1" else "ssd"


# --- the probe ----------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


class Probe:
    """Reads the machine. `root` is "/" in production; tests point it at a hand-made tree."""

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root

    def _cgroup_dirs(self, controller: str = "") -> list[Path]:
        """Where this process's limits live: its own cgroup first (a container usually
        sees itself at the root), for v2 (`controller` empty) or one v1 hierarchy."""
        base = self.root / "sys/fs/cgroup"
        if controller:
            base = base / controller
        own = parse_cgroup_path(_read(self.root / "proc/self/cgroup") or "", controller)
        dirs = [base / own.lstrip("/")] if own != "/" else []
        return [*dirs, base]

    def _first(self, controller: str, *names: str) -> list[str | None] | None:
        """The contents of `names` in the first cgroup directory that holds `names[0]`."""
        for directory in self._cgroup_dirs(controller):
            first = _read(directory / names[0])
            if first is not None:
                return [first, *(_read(directory / n) for n in names[1:])]
        return None

    def cpu_quota(self) -> float | None:
        v2 = self._first("", "cpu.max")
        if v2 is not None and v2[0] is not None:
            return parse_cpu_max(v2[0])
        v1 = self._first("cpu", "cpu.cfs_quota_us", "cpu.cfs_period_us")
        if v1 is not None and v1[0] is not None and v1[1] is not None:
            return parse_cfs(v1[0], v1[1])
        return None

    def memory_limit_bytes(self) -> tuple[int | None, int | None]:
        """(limit, current usage) of this process's memory cgroup, None where unknown."""
        for controller, limit_file, usage_file in (
            ("", "memory.max", "memory.current"),
            ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes"),
        ):
            found = self._first(controller, limit_file, usage_file)
            if found is not None and found[0] is not None:
                limit_text, usage_text = found
                usage = int(usage_text) if usage_text and usage_text.strip().isdigit() else None
                return parse_memory_limit(limit_text or ""), usage
        return None, None

    def storage_class(self, directory: Path) -> StorageClass:
        """The kind of disk holding `directory` (the nearest existing parent)."""
        while not directory.exists() and directory != directory.parent:
            directory = directory.parent
        try:
            dev = directory.stat().st_dev
        except OSError:
            return "unknown"
        link = self.root / f"sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
        try:
            resolved = link.resolve(strict=True)
        except OSError:
            return "unknown"  # overlay or tmpfs: no block device behind it
        # A partition's queue/ lives in its parent disk's directory.
        disk = resolved if (resolved / "queue").exists() else resolved.parent
        return classify_block_device(disk.name, _read(disk / "queue/rotational"))

    def cpu_temperature(self) -> float | None:
        with contextlib.suppress(AttributeError, OSError):
            sensors = psutil.sensors_temperatures()
            for name in ("coretemp", "k10temp", "cpu_thermal", "cpu-thermal", "soc_thermal"):
                if sensors.get(name):
                    return round(sensors[name][0].current, 1)
        return None

    def power_limit_w(self) -> float | None:
        text = _read(self.root / "sys/class/powercap/intel-rapl:0/constraint_0_power_limit_uw")
        return int(text) / 1e6 if text and text.strip().isdigit() else None

    def board(self) -> str | None:
        text = _read(self.root / "proc/device-tree/model")
        return text.strip("\x00\n ") if text else None

    def providers(self) -> tuple[str, ...]:
        return installed_providers()

    def facts(self, model_dir: Path | None = None) -> HardwareFacts:
        cpuinfo = _read(self.root / "proc/cpuinfo") or ""
        logical = psutil.cpu_count(logical=True) or 1
        try:
            affinity = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            affinity = logical
        quota = self.cpu_quota()
        usable = float(affinity) if quota is None else min(float(affinity), quota)
        vm = psutil.virtual_memory()
        limit, usage = self.memory_limit_bytes()
        available = vm.available
        if limit is not None:
            available = min(available, max(0, limit - (usage or 0)))
        hwcaps = _arm_hwcaps()
        return HardwareFacts(
            arch=platform.machine(),
            cpu_model=parse_cpu_model(cpuinfo),
            logical_cpus=logical,
            usable_cpus=round(usable, 2),
            cpu_quota=None if quota is None else round(quota, 2),
            memory_total_mb=vm.total // 2**20,
            memory_limit_mb=None if limit is None else limit // 2**20,
            memory_available_mb=available // 2**20,
            cpu_features=parse_arm_hwcaps(*hwcaps) if hwcaps else parse_cpu_features(cpuinfo),
            storage=self.storage_class(model_dir or Path.home()),
            cpu_temp_c=self.cpu_temperature(),
            board=self.board(),
            power_limit_w=self.power_limit_w(),
            providers=self.providers(),
            cache_mb=last_level_cache_mb(self.root),
        )
