"""The probe's parsers on real file formats, and the probe on this machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from assistant.hardware import (
    Probe,
    classify_block_device,
    parse_arm_hwcaps,
    parse_cfs,
    parse_cgroup_path,
    parse_cpu_features,
    parse_cpu_max,
    parse_memory_limit,
)
from assistant.telemetry import HardwareMonitor

PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
PI5_FEATURES = "Features\t: fp asimd evtstrm aes pmull sha1 crc32 atomics asimdhp asimddp\n"
X86_CPUINFO = "model name\t: Intel(R) N100\nflags\t\t: fpu sse avx2 avx_vnni fma\n"


def test_cgroup_quota_formats() -> None:
    assert parse_cpu_max("max 100000\n") is None
    assert parse_cpu_max("150000 100000\n") == 1.5
    assert parse_cfs("-1\n", "100000\n") is None
    assert parse_cfs("200000", "100000") == 2.0


def test_memory_limit_formats() -> None:
    assert parse_memory_limit("max\n") is None
    assert parse_memory_limit("1073741824\n") == 1 << 30
    assert parse_memory_limit("9223372036854771712\n") is None  # v1 "unlimited"


def test_cpu_features_per_architecture() -> None:
    assert parse_cpu_features(PI4_CPUINFO) == {"asimd"}
    assert parse_cpu_features(PI5_FEATURES) == {"asimd", "dotprod"}
    assert parse_cpu_features(X86_CPUINFO) == {"avx2", "avx_vnni"}
    amx = "flags : avx2 avx512f avx512_vnni amx_tile amx_int8\n"
    assert parse_cpu_features(amx) == {"avx2", "avx512f", "avx512_vnni", "amx"}


def test_cgroup_path_v1_and_v2() -> None:
    text = "4:memory:/docker/abc\n1:cpu,cpuacct:/docker/abc\n0::/system.slice/x\n"
    assert parse_cgroup_path(text) == "/system.slice/x"
    assert parse_cgroup_path(text, "memory") == "/docker/abc"
    assert parse_cgroup_path(text, "cpu") == "/docker/abc"
    assert parse_cgroup_path("", "cpu") == "/"


@pytest.mark.parametrize(
    ("name", "rotational", "expected"),
    [
        ("nvme0n1", "0", "nvme"),
        ("mmcblk0", "0", "sd_emmc"),
        ("sda", "1", "rotational"),
        ("sda", "0\n", "ssd"),
        ("vda", None, "unknown"),
    ],
)
def test_block_device_classes(name: str, rotational: str | None, expected: str) -> None:
    assert classify_block_device(name, rotational) == expected


def _tree(root: Path, files: dict[str, str]) -> Probe:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return Probe(root)


def test_probe_reads_a_v2_container_cgroup(tmp_path: Path) -> None:
    probe = _tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/\n",
            "sys/fs/cgroup/cpu.max": "150000 100000\n",
            "sys/fs/cgroup/memory.max": str(1 << 30),
            "sys/fs/cgroup/memory.current": str(300 << 20),
        },
    )
    assert probe.cpu_quota() == 1.5
    assert probe.memory_limit_bytes() == (1 << 30, 300 << 20)


def test_probe_reads_a_v1_nested_cgroup(tmp_path: Path) -> None:
    probe = _tree(
        tmp_path,
        {
            "proc/self/cgroup": "4:memory:/docker/c1\n2:cpu,cpuacct:/docker/c1\n",
            "sys/fs/cgroup/cpu/docker/c1/cpu.cfs_quota_us": "250000\n",
            "sys/fs/cgroup/cpu/docker/c1/cpu.cfs_period_us": "100000\n",
            "sys/fs/cgroup/memory/docker/c1/memory.limit_in_bytes": str(2 << 30),
            "sys/fs/cgroup/memory/docker/c1/memory.usage_in_bytes": str(1 << 20),
        },
    )
    assert probe.cpu_quota() == 2.5
    assert probe.memory_limit_bytes() == (2 << 30, 1 << 20)


def test_probe_on_this_machine() -> None:
    facts = Probe().facts()
    assert facts.logical_cpus == os.cpu_count()
    assert 1 <= facts.cores <= facts.logical_cpus
    assert facts.memory_mb > 0
    assert 0 < facts.memory_available_mb <= facts.memory_mb
    assert "CPUExecutionProvider" in facts.providers
    if "avx512_vnni" in Path("/proc/cpuinfo").read_text():
        assert "avx512_vnni" in facts.cpu_features


def test_monitor_reports_percent_and_megabytes() -> None:
    monitor = HardwareMonitor()
    usage = monitor.get_cpu_usage()
    assert 0.0 <= usage <= 100.0
    available, total = monitor.get_memory_info()
    assert 0 < available <= total
    assert monitor.process_rss_mb() > 10


def test_arm_features_come_from_the_hwcap_words() -> None:
    # Raspberry Pi 4 (Cortex-A72): fp asimd evtstrm crc32 cpuid.
    assert parse_arm_hwcaps(0x887, 0) == {"asimd"}
    # Raspberry Pi 5 (Cortex-A76): adds asimddp (bit 20) among others.
    assert parse_arm_hwcaps(0x1FFFFF, 0) == {"asimd", "dotprod"}
    # qemu-aarch64's "max" CPU (what the arm64 image test runs on): sve and i8mm too.
    assert parse_arm_hwcaps(0xECFFFFFB, 0x7F877FFF) == {"asimd", "dotprod", "sve", "i8mm"}
