"""The worker's sandbox, applied by the worker to itself, one layer after another.

`apply_sandbox` runs before onnxruntime is imported (unshare and Landlock need a
single-threaded process, and onnxruntime starts a thread at import); `apply_seccomp`
runs next, before the worker reads any byte of the model. A layer that cannot be
applied is reported and logged once, never fatal: the service must also run where the
kernel or container lacks a feature.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from assistant.sandbox import _sys, landlock, seccomp
from assistant.sandbox.report import (
    LayerStatus,
    SandboxPolicy,
    SandboxReport,
    active,
    skipped,
    unavailable,
)

_LOGGER = logging.getLogger(__name__)
FD_MARGIN = 16  # fds the worker may still open under RLIMIT_NOFILE beyond those it has


def apply_sandbox(
    policy: SandboxPolicy, before_uid_drop: Callable[[], None] | None = None
) -> SandboxReport:
    """Apply every layer but seccomp to the calling process, in order, and report each.

    `before_uid_drop`, when given, runs as the starting uid but already under NO_NEW_PRIVS
    and Landlock (both applied while the process is still single-threaded): the worker
    imports there the trusted code the unprivileged uid cannot read. Without it, NO_NEW_PRIVS
    and Landlock come after the uid drop and the network namespace (the order of LAYERS).
    """
    parent = os.getppid()
    threads = thread_count()
    if threads > 1:
        _LOGGER.warning("sandbox applied with %d threads: unshare and Landlock need one", threads)
    net = _isolate_network_as_root() if os.geteuid() == 0 else None
    statuses = _limit_resources(policy)
    # Landlock rules are built while the paths can still be opened, enforced after NNP.
    ruleset = _build_landlock(policy)
    if before_uid_drop is not None:
        statuses["no_new_privs"] = _guard(_set_no_new_privs, policy)
        statuses["landlock"] = _enforce_landlock(ruleset)
        before_uid_drop()
    statuses["uid"], statuses["rlimit_nproc"] = _drop_uid(policy)
    # Not root (any more): a user namespace makes the network namespace possible, and
    # the uid is mapped onto itself so file permissions keep meaning what they mean.
    statuses["net_namespace"] = net or _guard(_isolate_network_in_user_namespace, policy)
    statuses["pdeathsig"] = _guard(lambda _: _set_pdeathsig(parent), policy)
    if before_uid_drop is None:
        statuses["no_new_privs"] = _guard(_set_no_new_privs, policy)
        statuses["landlock"] = _enforce_landlock(ruleset)
    statuses["seccomp"] = skipped("not yet installed: apply_seccomp comes next")
    report = SandboxReport.from_statuses(statuses)
    for name, status in report.layers:
        if status.state == "unavailable":
            _LOGGER.warning("sandbox layer %s unavailable: %s", name, status.detail)
    _LOGGER.info("sandbox: %s", report.as_dict())
    return report


def _limit_resources(policy: SandboxPolicy) -> dict[str, LayerStatus]:
    return {
        "rlimit_as": _rlimit_as(policy),
        "rlimit_nofile": _guard(_rlimit_nofile, policy),
        "rlimit_fsize": _guard(_rlimit_fsize, policy),
        "rlimit_core": _guard(_rlimit_core, policy),
        "oom_score_adj": _guard(_oom_score_adj, policy),
    }


def apply_seccomp(report: SandboxReport) -> SandboxReport:
    """Install the seccomp filter on every thread; return `report` with its outcome."""
    try:
        _sys.prctl(_sys.PR_SET_NO_NEW_PRIVS, 1)  # idempotent; required for an unprivileged filter
        status = active(seccomp.install().describe())
    except OSError as err:
        status = unavailable(str(err))
        _LOGGER.warning("sandbox layer seccomp unavailable: %s", status.detail)
    return report.with_layer("seccomp", status)


def thread_count() -> int:
    """Threads of this process (unshare and Landlock want exactly one)."""
    return sum(1 for _ in Path("/proc/self/task").iterdir())


def _guard(layer: Callable[[SandboxPolicy], LayerStatus], policy: SandboxPolicy) -> LayerStatus:
    """Run one layer; an OSError means the layer is unavailable here."""
    try:
        return layer(policy)
    except OSError as err:
        return unavailable(str(err))


def _isolate_network_as_root() -> LayerStatus | None:
    """A network namespace needs CAP_SYS_ADMIN alone; None: try a user namespace later."""
    try:
        _sys.unshare(_sys.CLONE_NEWNET)
    except OSError as err:
        if err.errno == errno.EPERM:
            return None  # e.g. an add-on container without CAP_SYS_ADMIN
        return unavailable(f"unshare(CLONE_NEWNET): {err.strerror}")
    return active("new network namespace (only a down loopback)")


def _isolate_network_in_user_namespace(_: SandboxPolicy) -> LayerStatus:
    uid, gid = os.geteuid(), os.getegid()
    try:
        _sys.unshare(_sys.CLONE_NEWUSER | _sys.CLONE_NEWNET)
    except OSError as err:
        if err.errno == errno.EINVAL:
            return unavailable("unshare refused: the process already has threads")
        return unavailable(f"unshare(CLONE_NEWUSER|CLONE_NEWNET): {err.strerror}")
    with _dumpable():
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    # The new namespace gave this process every capability inside it: give them back.
    _sys.clear_capabilities()
    return active(f"new user+network namespaces, uid {uid} and gid {gid} mapped to themselves")


def _lower(limit: int, value: int) -> None:
    _, hard = resource.getrlimit(limit)
    new_hard = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(limit, (min(value, new_hard), new_hard))


def _rlimit_as(policy: SandboxPolicy) -> LayerStatus:
    if policy.memory_bytes is None:
        return skipped("no memory limit in the policy")
    try:
        _lower(resource.RLIMIT_AS, policy.memory_bytes)
    except (OSError, ValueError) as err:
        return unavailable(f"setrlimit(RLIMIT_AS): {err}")
    return active(f"{policy.memory_bytes} bytes of address space")


def _rlimit_nofile(policy: SandboxPolicy) -> LayerStatus:
    highest = max(int(fd.name) for fd in Path("/proc/self/fd").iterdir())
    limit = max(policy.max_open_files, highest + 1 + FD_MARGIN)
    _lower(resource.RLIMIT_NOFILE, limit)
    return active(f"{limit} file descriptors")


def _rlimit_fsize(policy: SandboxPolicy) -> LayerStatus:
    try:  # a write past the limit then fails with EFBIG instead of killing the worker
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    except ValueError:
        return unavailable("SIGXFSZ can only be ignored from the main thread")
    _lower(resource.RLIMIT_FSIZE, policy.max_file_bytes)
    return active(f"{policy.max_file_bytes} bytes per file")


def _rlimit_core(_: SandboxPolicy) -> LayerStatus:
    _lower(resource.RLIMIT_CORE, 0)
    return active("no core dumps")


def _oom_score_adj(_: SandboxPolicy) -> LayerStatus:
    with _dumpable():
        Path("/proc/self/oom_score_adj").write_text("1000")
    return active("1000: the kernel kills the worker first")


@contextlib.contextmanager
def _dumpable() -> Iterator[None]:
    """Make the process dumpable for a moment, so that its /proc/self files are its own.

    A uid change in this process (here or by whoever started it) makes it non-dumpable,
    which hands /proc/self/* to root: then it cannot write its own maps or oom_score_adj.
    """
    dumpable = _sys.prctl(_sys.PR_GET_DUMPABLE)
    if dumpable != 1:
        _sys.prctl(_sys.PR_SET_DUMPABLE, 1)
    try:
        yield
    finally:
        if dumpable != 1:
            _sys.prctl(_sys.PR_SET_DUMPABLE, dumpable)


def _drop_uid(policy: SandboxPolicy) -> tuple[LayerStatus, LayerStatus]:
    """Switch from root to policy.uid/gid; then RLIMIT_NPROC, which only binds that uid."""
    if os.geteuid() != 0:
        reason = f"not running as root (uid {os.geteuid()})"
        return skipped(reason), skipped(f"{reason}: the uid's other processes would count")
    unreachable = [p for p in policy.read_paths if not reachable(p, policy.uid, policy.gid)]
    try:
        os.setgroups([])
        os.setresgid(policy.gid, policy.gid, policy.gid)
        os.setresuid(policy.uid, policy.uid, policy.uid)
    except OSError as err:
        reason = f"switching to {policy.uid}:{policy.gid}: {err.strerror}"
        return unavailable(reason), skipped("no dedicated uid")
    if os.getresuid() != (policy.uid,) * 3 or os.getresgid() != (policy.gid,) * 3:
        return unavailable("the uid/gid did not change"), skipped("no dedicated uid")
    detail = f"uid {policy.uid}, gid {policy.gid}, no supplementary groups"
    if unreachable:
        # Still active, but imports from these paths will fail from now on.
        detail += "; not reachable by it: " + ", ".join(map(str, unreachable))
        _LOGGER.warning("sandbox uid %d cannot read %s", policy.uid, unreachable)
    try:
        _lower(resource.RLIMIT_NPROC, policy.max_tasks)
    except (OSError, ValueError) as err:
        return active(detail), unavailable(f"setrlimit(RLIMIT_NPROC): {err}")
    return active(detail), active(f"{policy.max_tasks} tasks for uid {policy.uid}")


def reachable(path: Path, uid: int, gid: int) -> bool:
    """Whether `uid` may traverse to `path` and read it, from the permission bits."""
    current = Path(path).absolute()
    for part in (*reversed(current.parents), current):
        try:
            info = part.stat()
        except OSError:
            return True  # missing paths are reported by Landlock, not here
        needed = 1 if stat.S_ISDIR(info.st_mode) else 4  # search a dir, read a file
        if info.st_uid == uid:
            bits = (info.st_mode >> 6) & 7
        elif info.st_gid == gid:
            bits = (info.st_mode >> 3) & 7
        else:
            bits = info.st_mode & 7
        if bits & needed == 0:
            return False
    return True


def _set_pdeathsig(parent: int) -> LayerStatus:
    # After the uid change, which clears it.
    _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)
    return active("SIGKILL when the parent dies")


def _set_no_new_privs(_: SandboxPolicy) -> LayerStatus:
    _sys.prctl(_sys.PR_SET_NO_NEW_PRIVS, 1)
    if _sys.prctl(_sys.PR_GET_NO_NEW_PRIVS) != 1:
        return unavailable("PR_SET_NO_NEW_PRIVS did not stick")
    return active()


def _build_landlock(policy: SandboxPolicy) -> landlock.Ruleset | LayerStatus:
    try:
        landlock.abi_version()
    except OSError as err:
        return unavailable(landlock.unavailable_reason(err))
    writable = [policy.scratch_dir] if policy.scratch_dir is not None else []
    try:
        return landlock.build_ruleset(policy.read_paths, writable)
    except OSError as err:
        return unavailable(f"building the Landlock ruleset: {err}")


def _enforce_landlock(ruleset: landlock.Ruleset | LayerStatus) -> LayerStatus:
    if isinstance(ruleset, LayerStatus):
        return ruleset
    try:
        return active(ruleset.enforce())
    except OSError as err:
        return unavailable(str(err))
