"""A process's own resident memory, read from /proc/<pid>/status (Linux).

Benchmarks report peak RSS as VmHWM, not `getrusage().ru_maxrss`: the latter survives fork
+ exec, so a child started by a big parent reports the parent's RSS at the fork as its own
peak. VmHWM belongs to the address space, which exec replaces.
"""

from __future__ import annotations

from pathlib import Path


def status_mb(field: str, pid: int | str = "self") -> float:
    """One kB field of /proc/<pid>/status (VmHWM, VmRSS, RssAnon...) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0]) / 1024
    raise KeyError(f"{field} not in /proc/{pid}/status")


def peak_rss_mb(pid: int | str = "self") -> float:
    """The process's peak resident set (VmHWM) in MiB."""
    return status_mb("VmHWM", pid)


def rss_mb(pid: int | str = "self") -> float:
    """The process's current resident set (VmRSS) in MiB."""
    return status_mb("VmRSS", pid)


def smaps_mb(pid: int | str = "self") -> dict[str, float]:
    """Resident MiB per mapping kind from /proc/<pid>/smaps: `anon` (mmap'd, which is
    where ONNX Runtime's arenas and large mallocs land), `heap` (brk: small mallocs),
    `lib:NAME` for shared libraries, `file:NAME` for other mapped files, `other`."""
    out: dict[str, float] = {}
    kind = "other"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if not fields[0].endswith(":"):  # a mapping's header: range perms offset dev inode [path]
            kind = _kind(fields[5] if len(fields) > 5 else "")
        elif fields[0] == "Rss:":
            out[kind] = out.get(kind, 0.0) + int(fields[1]) / 1024
    return dict(sorted(out.items(), key=lambda item: -item[1]))


def _kind(path: str) -> str:
    if not path:
        return "anon"
    if path == "[heap]":
        return "heap"
    if path.startswith("["):
        return "other"
    name = Path(path).name
    if ".so" in name:
        return "lib:onnxruntime" if "onnxruntime" in name else "lib:other"
    return f"file:{name}"
