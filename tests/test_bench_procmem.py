"""benchmarks/procmem.py: a benchmark child's peak RSS is its own, not its parent's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
PRINT = (
    "import resource; from procmem import peak_rss_mb; "
    "print(peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
)


def child_peaks(setup: str = "") -> tuple[float, float]:
    """(VmHWM, ru_maxrss) in MiB of a fresh interpreter that first runs `setup`."""
    done = subprocess.run(
        [sys.executable, "-c", f"{setup}\n{PRINT}"],
        env={**os.environ, "PYTHONPATH": str(BENCH)},
        capture_output=True,
        text=True,
        check=True,
    )
    hwm, maxrss = done.stdout.split()
    return float(hwm), float(maxrss)


def test_a_child_reports_its_own_peak_not_the_parents() -> None:
    ballast = b"\x01" * (256 << 20)  # written, so resident in this (the parent) process
    idle_hwm, idle_maxrss = child_peaks()
    busy_hwm, _ = child_peaks("held = b'\\x01' * (64 << 20)\ndel held")
    assert len(ballast) == 256 << 20
    # ru_maxrss carries the parent's RSS across fork + exec: the reason for VmHWM.
    assert idle_maxrss >= 256
    assert idle_hwm < 64
    # The child's own allocation counts in its peak even after it was freed.
    assert busy_hwm - idle_hwm >= 60


def test_the_current_rss_is_at_most_the_peak() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import procmem  # noqa: PLC0415

        assert 0 < procmem.rss_mb(os.getpid()) <= procmem.peak_rss_mb(os.getpid())
    finally:
        sys.path.remove(str(BENCH))
