"""What this machine's sandbox could do, found without sandboxing the caller (for doctor)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from assistant.sandbox import _sys, landlock
from assistant.sandbox.report import LAYERS, NOBODY

# Run in a fresh interpreter: unshare refuses a threaded caller, and forking a service
# that has threads is unsafe. Each attempt runs in a forked child of that interpreter.
_UNSHARE_PROBE = """
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
results = {}
for name, flags in json.loads(sys.argv[1]).items():
    pid = os.fork()
    if pid == 0:
        os._exit(0 if libc.unshare(flags) == 0 else ctypes.get_errno())
    results[name] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(results))
"""


def describe_sandbox_support(uid: int = NOBODY) -> dict[str, str]:
    """Layer name → "supported[: how]" / "unavailable: <reason>" / "skipped: <reason>"."""
    support = dict.fromkeys(LAYERS, "supported")
    support["net_namespace"] = _net_namespace_support()
    if os.geteuid() == 0:
        support["uid"] = f"supported: root switches to uid {uid}"
    else:
        support["uid"] = f"skipped: not running as root (uid {os.geteuid()})"
        support["rlimit_nproc"] = "skipped: no dedicated uid"
    if not Path("/proc/self/oom_score_adj").exists():
        support["oom_score_adj"] = "unavailable: no /proc/self/oom_score_adj"
    try:
        support["landlock"] = f"supported: ABI {landlock.abi_version()}"
    except OSError as err:
        support["landlock"] = f"unavailable: {landlock.unavailable_reason(err)}"
    support["seccomp"] = _seccomp_support()
    return support


def _net_namespace_support() -> str:
    attempts = {"net": _sys.CLONE_NEWNET, "user+net": _sys.CLONE_NEWUSER | _sys.CLONE_NEWNET}
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", _UNSHARE_PROBE, json.dumps(attempts)],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
            env={},
        )
        results: dict[str, int] = json.loads(done.stdout)
    except (OSError, ValueError, subprocess.SubprocessError) as err:
        return f"unavailable: the unshare probe failed: {err}"
    if os.geteuid() == 0 and results.get("net") == 0:
        return "supported: network namespace as root"
    if results.get("user+net") == 0:
        return "supported: user + network namespaces"
    code = results.get("user+net", -1)
    reason = os.strerror(code) if code > 0 else f"probe exit {code}"
    return f"unavailable: unshare(CLONE_NEWUSER|CLONE_NEWNET): {reason}"


def _seccomp_support() -> str:
    if _sys.syscall_table() is None or _sys.machine() not in _sys.AUDIT_ARCH:
        return f"unavailable: no syscall table for {_sys.machine()}"
    status = Path("/proc/self/status").read_text()
    if "Seccomp:" not in status:
        return "unavailable: kernel built without seccomp"
    try:
        actions = Path("/proc/sys/kernel/seccomp/actions_avail").read_text().split()
    except OSError:
        actions = ["errno"]  # kernels before 4.14 have no list but do have ERRNO
    if "errno" not in actions:
        return "unavailable: seccomp has no ERRNO action"
    return f"supported: {_sys.machine()}"


def worker_environment(scratch_dir: Path | None = None) -> dict[str, str]:
    """A minimal environment for the worker: nothing inherited (no SUPERVISOR_TOKEN)."""
    home = str(scratch_dir) if scratch_dir is not None else "/nonexistent"
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": home,
        "TMPDIR": home,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONUNBUFFERED": "1",
        "ORT_DISABLE_TELEMETRY": "1",  # read at import; otherwise it writes under ~/.cache
        "MALLOC_ARENA_MAX": "2",  # each glibc arena reserves 64 MiB against RLIMIT_AS
    }
