"""The last-level cache size from a hand-made sysfs tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.hardware import Probe
from assistant.hardware_cache import last_level_cache_mb, parse_cache_size


def _cache(root: Path, index: int, level: int, kind: str, size: str) -> None:
    d = root / f"sys/devices/system/cpu/cpu0/cache/index{index}"
    d.mkdir(parents=True)
    (d / "level").write_text(f"{level}\n")
    (d / "type").write_text(f"{kind}\n")
    (d / "size").write_text(f"{size}\n")


@pytest.mark.parametrize(
    ("text", "expected"), [("32768K", 32 * 2**20), ("1M", 2**20), ("512", 512), ("x", None)]
)
def test_sizes(text: str, expected: int | None) -> None:
    assert parse_cache_size(text) == expected


def test_the_highest_data_or_unified_level_wins(tmp_path: Path) -> None:
    _cache(tmp_path, 0, 1, "Data", "48K")
    _cache(tmp_path, 1, 1, "Instruction", "32K")
    _cache(tmp_path, 2, 2, "Unified", "1024K")
    _cache(tmp_path, 3, 3, "Unified", "32768K")
    assert last_level_cache_mb(tmp_path) == 32.0
    assert Probe(tmp_path).facts().cache_mb == 32.0


def test_a_pi4_has_its_l2_and_a_bare_tree_nothing(tmp_path: Path) -> None:
    _cache(tmp_path / "pi", 0, 1, "Data", "32K")
    _cache(tmp_path / "pi", 1, 2, "Unified", "1024K")
    assert last_level_cache_mb(tmp_path / "pi") == 1.0
    assert last_level_cache_mb(tmp_path / "bare") is None
