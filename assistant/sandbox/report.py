"""What the worker sandbox should do (the policy) and what it did (the report)."""

from __future__ import annotations

import json
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

NOBODY = 65534  # "nobody"/"nogroup" on Debian and in the Home Assistant base images

LAYERS = (
    "net_namespace",
    "rlimit_as",
    "rlimit_nofile",
    "rlimit_fsize",
    "rlimit_core",
    "oom_score_adj",
    "uid",
    "rlimit_nproc",
    "pdeathsig",
    "no_new_privs",
    "landlock",
    "seccomp",
)
"""Every layer, in the order it is applied; each one appears in every report."""

State = Literal["active", "unavailable", "skipped"]


@dataclass(frozen=True)
class SandboxPolicy:
    """The limits the worker process puts on itself."""

    read_paths: tuple[Path, ...] = ()
    """Read-only under Landlock: code, stdlib, libraries, the model (`default_read_paths`)."""
    scratch_dir: Path | None = None
    """The one directory the worker may write to; None: no writable directory."""
    memory_bytes: int | None = None
    """RLIMIT_AS: model + KV cache + headroom. None: no limit."""
    uid: int = NOBODY
    """The unprivileged uid a worker started as root switches to."""
    gid: int = NOBODY
    max_open_files: int = 64
    """RLIMIT_NOFILE; raised to keep every fd already open usable."""
    max_file_bytes: int = 1 << 20
    """RLIMIT_FSIZE: largest file the worker may write (SIGXFSZ is ignored: EFBIG instead)."""
    max_tasks: int = 256
    """RLIMIT_NPROC after a uid switch: counts every thread of that uid, ORT's pools included."""


@dataclass(frozen=True)
class LayerStatus:
    """One layer's outcome; `detail` says what was done, or why not."""

    state: State
    detail: str = ""

    def __str__(self) -> str:
        return self.state if self.state == "active" else f"{self.state}: {self.detail}"


def active(detail: str = "") -> LayerStatus:
    return LayerStatus("active", detail)


def unavailable(reason: str) -> LayerStatus:
    return LayerStatus("unavailable", reason)


def skipped(reason: str) -> LayerStatus:
    return LayerStatus("skipped", reason)


@dataclass(frozen=True)
class SandboxReport:
    """Each layer's status, in application order; reported by doctor, `{base}/info` and hello."""

    layers: tuple[tuple[str, LayerStatus], ...] = field(default=())

    @classmethod
    def from_statuses(cls, statuses: Mapping[str, LayerStatus]) -> SandboxReport:
        """Build a report from a mapping, in `LAYERS` order; missing layers are skipped."""
        missing = skipped("not attempted")
        return cls(tuple((name, statuses.get(name, missing)) for name in LAYERS))

    def status(self, name: str) -> LayerStatus:
        """The status of one layer (KeyError for an unknown name)."""
        for layer, status in self.layers:
            if layer == name:
                return status
        raise KeyError(name)

    def is_active(self, name: str) -> bool:
        return self.status(name).state == "active"

    def with_layer(self, name: str, status: LayerStatus) -> SandboxReport:
        """A copy with one layer's status replaced."""
        return replace(self, layers=tuple((n, status if n == name else s) for n, s in self.layers))

    def as_dict(self) -> dict[str, str]:
        """Layer name → "active" / "unavailable: <reason>" / "skipped: <reason>"."""
        return {name: str(status) for name, status in self.layers}

    def to_payload(self) -> dict[str, Any]:
        """JSON-ready form: the states, and the details of what each active layer did."""
        return {
            "layers": self.as_dict(),
            "details": {n: s.detail for n, s in self.layers if s.state == "active" and s.detail},
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> SandboxReport:
        """Inverse of `to_payload` (the parent reads the worker's hello with it)."""
        layers = payload.get("layers")
        details = payload.get("details", {})
        if not isinstance(layers, dict) or not isinstance(details, dict):
            raise TypeError("sandbox report: 'layers' and 'details' must be objects")
        statuses: dict[str, LayerStatus] = {}
        for name, text in layers.items():
            if not isinstance(text, str):
                raise TypeError(f"sandbox report: layer {name!r} is not a string")
            state, _, reason = text.partition(": ")
            if state not in ("active", "unavailable", "skipped"):
                raise ValueError(f"sandbox report: layer {name!r} has state {state!r}")
            detail = str(details.get(name, "")) if state == "active" else reason
            statuses[name] = LayerStatus(state, detail)  # type: ignore[arg-type]
        return cls(tuple(statuses.items()))

    def to_json(self) -> str:
        return json.dumps(self.to_payload(), sort_keys=True)


def default_read_paths(*extra: Path | str) -> tuple[Path, ...]:
    """Paths a Python + numpy + onnxruntime worker reads at run time, plus `extra`.

    Covers this interpreter and its venv, the package, the shared libraries and the
    few /proc and /sys files onnxruntime's CPU detection reads. Add the model dir.
    """
    package_dir = Path(__file__).resolve().parents[1]
    python = {
        Path(sys.prefix),  # the venv
        Path(sys.exec_prefix),
        Path(sys.base_prefix) / "lib",  # libpython, the stdlib
        Path(sys.base_exec_prefix) / "lib",
    }
    keys = ("stdlib", "platstdlib", "purelib", "platlib")
    candidates: Iterable[str | Path] = (
        *sorted(python),
        *sorted({Path(p) for k, p in sysconfig.get_paths().items() if k in keys}),
        package_dir,
        "/usr/lib",
        "/usr/lib64",
        "/lib",
        "/lib64",
        "/usr/local/lib",
        "/etc/ld.so.cache",
        "/etc/localtime",
        "/proc/self",
        "/proc/cpuinfo",
        "/proc/meminfo",
        "/proc/stat",
        "/sys/devices",  # CPU topology, and the PCI devices onnxruntime lists at start
        "/sys/bus/pci/devices",
        "/sys/fs/cgroup",
        *extra,
    )
    seen: dict[Path, None] = {}
    for candidate in candidates:
        seen.setdefault(Path(candidate), None)
    return tuple(seen)
