"""`edge-assistant doctor` as a user runs it: a real process on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from assistant.doctor import requirement_table
from tests.test_plan import CONTAINER, PI5


def run_doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "assistant", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_doctor_json_reports_this_machine() -> None:
    run = run_doctor("--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    hw = report["hardware"]
    assert hw["cores"] == len(os.sched_getaffinity(0))
    total_kb = int(Path("/proc/meminfo").read_text().split()[1])
    assert abs(hw["memory_total_mb"] - total_kb // 1024) <= 1
    assert [r["requirement"] for r in report["requirements"]] == [
        "CPU cores ≥ 4",
        "memory ≥ 8 GB",
        "storage NVMe SSD",
        "power ≤ 65 W",
    ]
    assert report["plan"]["tier"] in ("minimal", "basic", "standard", "large")
    assert set(report["plan"]["reasons"]) >= {"model", "threads", "tier"}
    assert report["config"]["mqtt"]["password"] is None
    sandbox = report["sandbox"]
    assert set(sandbox) >= {
        "net_namespace",
        "rlimit_as",
        "uid",
        "no_new_privs",
        "landlock",
        "seccomp",
    }
    assert all(v.split(":")[0] in ("supported", "unavailable", "skipped") for v in sandbox.values())


def test_doctor_text_is_readable() -> None:
    run = run_doctor()
    assert run.returncode == 0, run.stderr
    for heading in ("Hardware", "Requirements", "Plan", "Worker sandbox"):
        assert f"\n{heading}" in run.stdout
    assert all(len(line) <= 100 for line in run.stdout.splitlines())


def test_requirement_verdicts() -> None:
    rows = {r.requirement: r for r in requirement_table(PI5)}
    assert rows["CPU cores ≥ 4"].verdict == "ok"
    assert rows["memory ≥ 8 GB"].verdict == "ok"
    assert rows["storage NVMe SSD"].verdict == "ok"
    assert rows["power ≤ 65 W"].verdict == "unknown"
    container = {r.requirement: r for r in requirement_table(CONTAINER)}
    assert container["CPU cores ≥ 4"].verdict == "below"
    assert "quota 1.5" in container["CPU cores ≥ 4"].detected
    assert "cgroup limit" in container["memory ≥ 8 GB"].detected
