"""The worker sandbox, tested on real processes: tests/sandbox_probe.py sandboxes itself,
runs a tiny ONNX model, tries to escape, and pauses while this test inspects /proc/<pid>.

Each escape must fail with the error of the layer that stops it, wherever that layer is
active; the layers this machine could exercise are printed with the report. Tests run
as root here and in CI.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from assistant.ipc import recv_frame, send_frame
from assistant.sandbox import (
    LAYERS,
    LayerStatus,
    SandboxReport,
    describe_sandbox_support,
    worker_environment,
)
from assistant.sandbox._sys import SYSCALLS
from assistant.sandbox.seccomp import DENIED, build_filter

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "sandbox_probe.py"
NOBODY = 65534
IS_ROOT = os.geteuid() == 0
EXPECTED_PRODUCT = [[7.0, 10.0], [15.0, 22.0]]  # [[1, 2], [3, 4]] squared
SECRET_NAME = "SUPERVISOR_TOKEN"


@dataclass(frozen=True)
class Dirs:
    model: Path
    scratch: Path
    secret: Path
    outside: Path


@dataclass(frozen=True)
class ProbeRun:
    start: str
    result: dict[str, Any]
    report: SandboxReport
    task_status: dict[str, dict[str, str]]  # tid → /proc/<pid>/task/<tid>/status fields
    environ: bytes
    fd_targets: list[str]
    passed_socket: str
    secret_value: str
    returncode: int
    stderr: str

    def attempt(self, phase: str, name: str) -> dict[str, Any]:
        value: dict[str, Any] = self.result[phase][name]
        return value

    def active(self, layer: str) -> bool:
        return self.report.is_active(layer)


@pytest.fixture(scope="module")
def dirs() -> Iterator[Dirs]:
    # Under /tmp with open modes: pytest's tmp_path is 0700 root, closed to uid 65534.
    base = Path(tempfile.mkdtemp(prefix="edge-sandbox-", dir="/tmp"))
    base.chmod(0o755)
    model_dir = base / "model"
    model_dir.mkdir(mode=0o755)
    model = model_dir / "matmul.onnx"
    onnx.save(tiny_model(), model)
    model.chmod(0o644)
    scratch = base / "scratch"
    scratch.mkdir(mode=0o700)
    if IS_ROOT:
        os.chown(scratch, NOBODY, NOBODY)
    secret = base / "secret"
    secret.write_text("the secret")
    secret.chmod(0o600)
    # In world-writable /tmp: only Landlock stands between the worker and this path.
    outside = Path("/tmp") / f"{base.name}-outside"
    yield Dirs(model, scratch, secret, outside)
    shutil.rmtree(base)
    outside.unlink(missing_ok=True)


def tiny_model() -> onnx.ModelProto:
    matrix = helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 2])
    product = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "a"], ["y"])], "square", [matrix], [product]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def status_fields(path: Path) -> dict[str, str]:
    fields = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def run_probe(dirs: Dirs, start: str) -> ProbeRun:
    """Run the probe in full mode, read its results, inspect it from outside, release it."""
    secret_value = f"secret-{uuid.uuid4()}"
    os.environ[SECRET_NAME] = secret_value  # the parent has it; the worker must not
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stray = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # close_fds must not pass it
    listener = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    argv = [
        sys.executable,
        str(PROBE),
        "full",
        f"--fd={child_end.fileno()}",
        f"--scratch={dirs.scratch}",
        f"--secret={dirs.secret}",
        f"--model={dirs.model}",
        f"--outside={dirs.outside}",
        f"--port={listener.getsockname()[1]}",
        f"--udp-port={udp.getsockname()[1]}",
        f"--memory-bytes={1 << 30}",
    ]
    if start == "unprivileged":
        argv.append(f"--start-uid={NOBODY}")
    process = subprocess.Popen(
        argv,
        env=worker_environment(dirs.scratch),
        close_fds=True,
        pass_fds=[child_end.fileno()],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    passed_socket = f"socket:[{os.fstat(child_end.fileno()).st_ino}]"
    child_end.close()
    try:
        parent_end.settimeout(180)  # onnxruntime's import on 2 busy cores
        result = recv_frame(parent_end)
        proc = Path(f"/proc/{process.pid}")
        tasks = {t.name: status_fields(t / "status") for t in (proc / "task").iterdir()}
        environ = (proc / "environ").read_bytes()
        fd_targets = [str(fd.readlink()) for fd in (proc / "fd").iterdir()]
        send_frame(parent_end, {"cmd": "exit"})
        _, stderr = process.communicate(timeout=30)
        listener.setblocking(False)
        udp.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # no connection ever reached the listener
        with pytest.raises(BlockingIOError):
            udp.recv(64)  # no datagram either
    finally:
        del os.environ[SECRET_NAME]
        process.kill()
        for sock in (parent_end, stray, listener, udp):
            sock.close()
    return ProbeRun(
        start=start,
        result=result,
        report=SandboxReport.from_payload(result["report"]),
        task_status=tasks,
        environ=environ,
        fd_targets=fd_targets,
        passed_socket=passed_socket,
        secret_value=secret_value,
        returncode=process.returncode,
        stderr=stderr,
    )


STARTS = [
    pytest.param("root", id="started-as-root"),
    pytest.param("unprivileged", id="started-unprivileged"),
]


@pytest.fixture(scope="module", params=STARTS)
def probe(request: pytest.FixtureRequest, dirs: Dirs) -> ProbeRun:
    if request.param == "unprivileged" and not IS_ROOT:
        pytest.fail("these tests run as root (as in CI): the probe must switch uids")
    run = run_probe(dirs, str(request.param))
    print(f"\nsandbox layers exercised ({run.start}):")
    for name, status in run.report.layers:
        print(f"  {name:15} {status}  {status.detail if status.state == 'active' else ''}")
    return run


def test_probe_ran_to_the_end(probe: ProbeRun) -> None:
    assert probe.returncode == 0, probe.stderr
    assert probe.result["threads_at_sandbox"] == 1, "the sandbox must come before threads"
    # onnxruntime's intra-op pool: proves the seccomp filter reached other threads.
    assert probe.result["threads_now"] >= 2
    assert "Traceback" not in probe.stderr, probe.stderr


def test_supported_layers_are_active(probe: ProbeRun) -> None:
    support = describe_sandbox_support()
    expected = ["oom_score_adj", "landlock", "seccomp", "no_new_privs"]
    if probe.start == "root":  # root may use a plain network namespace, as the probe did
        expected.append("net_namespace")
    for name in expected:
        if support[name].startswith("supported"):
            assert probe.active(name), (name, support[name], str(probe.report.status(name)))
    for name in ("rlimit_as", "rlimit_nofile", "rlimit_fsize", "rlimit_core", "pdeathsig"):
        assert probe.active(name), (name, str(probe.report.status(name)))
    if probe.start == "root":
        assert probe.active("uid")
        assert probe.active("rlimit_nproc")
    else:
        assert probe.report.status("uid").state == "skipped"
        assert probe.report.status("rlimit_nproc").state == "skipped"
        if probe.active("net_namespace"):
            assert "user+network" in probe.report.status("net_namespace").detail


def test_inference_runs_in_the_sandbox_and_under_seccomp(probe: ProbeRun) -> None:
    for phase in ("sandboxed", "seccomp"):
        outcome = probe.attempt(phase, "inference")
        assert outcome == {"ok": True, "value": EXPECTED_PRODUCT}, (phase, outcome)
    # Steady-state needs still work under seccomp: threads and AF_UNIX sockets.
    assert probe.attempt("seccomp", "thread") == {"ok": True, "value": True}
    assert probe.attempt("seccomp", "unix_socketpair") == {"ok": True, "value": True}


def refused(outcome: dict[str, Any], errno_name: str) -> None:
    assert outcome["ok"] is False, outcome
    assert outcome["errno"] == errno_name, outcome


def test_network_is_refused(probe: ProbeRun) -> None:
    tcp = probe.attempt("sandboxed", "tcp_connect")
    udp = probe.attempt("sandboxed", "udp_sendto")
    landlock_tcp = probe.active("landlock") and "TCP" in probe.report.status("landlock").detail
    if landlock_tcp:
        refused(tcp, "EACCES")  # Landlock checks before routing
    elif probe.active("net_namespace"):
        refused(tcp, "ENETUNREACH")
    if probe.active("net_namespace"):
        refused(udp, "ENETUNREACH")  # Landlock does not cover UDP; the namespace does
    if probe.active("seccomp"):
        refused(probe.attempt("seccomp", "tcp_connect"), "EPERM")
        refused(probe.attempt("seccomp", "udp_sendto"), "EPERM")


def test_filesystem_is_confined(probe: ProbeRun, dirs: Dirs) -> None:
    for phase in ("sandboxed", "seccomp"):
        assert probe.attempt(phase, "write_scratch")["ok"], probe.attempt(phase, "write_scratch")
        if probe.active("landlock"):
            refused(probe.attempt(phase, "write_outside"), "EACCES")
            assert not dirs.outside.exists()
        # The 0600 root file: the uid drop (or starting unprivileged) and Landlock.
        if probe.active("uid") or probe.start == "unprivileged" or probe.active("landlock"):
            refused(probe.attempt(phase, "read_secret"), "EACCES")
    if probe.active("rlimit_fsize"):
        refused(probe.attempt("sandboxed", "write_big"), "EFBIG")
        assert (dirs.scratch / "big").stat().st_size == 1 << 20


def test_exec_fork_and_namespaces_are_refused_by_seccomp(probe: ProbeRun) -> None:
    assert probe.active("seccomp"), str(probe.report.status("seccomp"))
    refused(probe.attempt("seccomp", "exec"), "EPERM")
    refused(probe.attempt("seccomp", "unshare"), "EPERM")
    fork = probe.attempt("seccomp", "fork")
    assert fork == {"ok": False, "forked": 0, "errno": "EPERM"}


def test_allocation_past_rlimit_as_is_a_memory_error(probe: ProbeRun) -> None:
    assert probe.active("rlimit_as")
    outcome = probe.attempt("seccomp", "allocate_2gib")
    assert outcome["ok"] is False
    assert outcome["error"].startswith("MemoryError"), outcome


def test_seen_from_outside(probe: ProbeRun) -> None:
    for tid, fields in probe.task_status.items():
        assert fields["NoNewPrivs"] == "1", tid
        assert fields["Seccomp"] == "2", tid  # every thread, not only the one that asked
        assert fields["CapEff"] == "0" * 16, tid
        assert fields["CapPrm"] == "0" * 16, tid
        uids = fields["Uid"].split()
        if IS_ROOT:
            assert uids == [str(NOBODY)] * 4, (tid, uids)
    assert SECRET_NAME.encode() not in probe.environ
    assert probe.secret_value.encode() not in probe.environ
    sockets = [target for target in probe.fd_targets if target.startswith("socket:")]
    assert sockets == [probe.passed_socket]


def test_probe_dies_with_its_parent(dirs: Dirs) -> None:
    # An intermediate parent starts the probe; the probe's stdout is our pipe.
    launcher = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, sys.argv[1], 'pdeathsig'], env={})\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", launcher, str(PROBE)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert parent.stdout is not None
    try:
        ready, _, _ = select.select([parent.stdout], [], [], 120)
        assert ready, "the probe did not report ready"
        line = parent.stdout.readline()
        pid = int(json.loads(line)["ready"])
        assert status_fields(Path(f"/proc/{pid}/status"))["PPid"] == str(parent.pid)
        exited = os.pidfd_open(pid)  # readable once the probe exits
        try:
            parent.send_signal(signal.SIGKILL)
            parent.wait(10)
            # The probe only sleeps: PDEATHSIG is what ends it. The timeout keeps a failing
            # run from hanging; it is not a bound on how fast the signal comes.
            assert select.select([exited], [], [], 60)[0], "the probe outlived its parent"
        finally:
            os.close(exited)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_describe_sandbox_support_names_every_layer() -> None:
    support = describe_sandbox_support()
    assert set(support) == set(LAYERS)
    for name, text in support.items():
        assert text.split(":")[0] in ("supported", "unavailable", "skipped"), (name, text)


def test_report_round_trips_through_its_payload() -> None:
    report = SandboxReport.from_statuses(
        {
            "landlock": LayerStatus("active", "ABI 7"),
            "seccomp": LayerStatus("unavailable", "no table for riscv64"),
        }
    )
    payload = report.to_payload()
    assert payload["layers"]["landlock"] == "active"
    assert payload["layers"]["seccomp"] == "unavailable: no table for riscv64"
    assert payload["layers"]["uid"] == "skipped: not attempted"
    assert payload["details"] == {"landlock": "ABI 7"}
    assert SandboxReport.from_payload(payload) == report
    assert [name for name, _ in report.layers] == list(LAYERS)


@pytest.mark.parametrize("arch", sorted(SYSCALLS))
def test_seccomp_filter_assembles_for_each_architecture(arch: str) -> None:
    program = build_filter(arch)
    table = SYSCALLS[arch]
    denied = [table[name] for name in DENIED if name in table]
    compared = {k for code, _, _, k in program if code == 0x15}  # BPF_JEQ constants
    assert set(denied) <= compared
    assert ("fork" in table) == (arch == "x86_64")  # aarch64 has no fork syscall
    assert all(0 <= jt <= 255 and 0 <= jf <= 255 for _, jt, jf, _ in program)
    assert program[-1] == (0x06, 0, 0, 0x80000000)  # foreign arch: kill
