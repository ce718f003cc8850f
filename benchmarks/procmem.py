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
