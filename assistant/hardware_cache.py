"""The CPU's last-level cache size, from sysfs (the plan's decode-speed estimate uses it)."""

from __future__ import annotations

from pathlib import Path

_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}


def parse_cache_size(text: str) -> int | None:
    """sysfs `size` ("32768K", "1M", "512") -> bytes; None when unreadable."""
    text = text.strip().upper()
    scale = _UNITS.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in _UNITS else text
    return int(digits) * scale if digits.isdigit() else None


def last_level_cache_mb(root: Path = Path("/")) -> float | None:
    """Size in MiB of the highest-level data or unified cache cpu0 sees (L3 on most x86, L2
    on a Raspberry Pi 4); None where sysfs does not say (some ARM boards, containers)."""
    best: tuple[int, int] | None = None
    for index in sorted((root / "sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = parse_cache_size((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified") and size and (best is None or level > best[0]):
            best = (level, size)
    return None if best is None else best[1] / 2**20
