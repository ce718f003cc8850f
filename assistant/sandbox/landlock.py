"""Landlock through raw syscalls: read-only code paths, one writable scratch dir, no TCP.

Rights the running kernel's ABI does not know are masked out (an ABI 1 kernel rejects
unknown bits). Landlock restricts the calling thread and its future children only:
apply it while the process is single-threaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from assistant.sandbox import _sys

CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1

# linux/landlock.h: filesystem rights, with the ABI version that introduced each one.
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
# Rights that make sense on a regular file (a rule on a file with others is EINVAL).
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV

READ_ONLY = READ_FILE | READ_DIR
READ_WRITE = (
    READ_ONLY | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | REFER | TRUNCATE
)


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the kernel header
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


@dataclass(frozen=True)
class Ruleset:
    """A built ruleset, ready to enforce; rules are fixed when built (paths opened then)."""

    fd: int
    abi: int
    rules: int
    missing: tuple[Path, ...]
    tcp_denied: bool
    scoped: bool

    def enforce(self) -> str:
        """Restrict the calling thread (and its future threads); return what was done."""
        try:
            _sys.syscall("landlock_restrict_self", self.fd, 0)
        finally:
            self.close()
        return self.describe()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # already closed by an earlier enforce or close
            os.close(self.fd)

    def describe(self) -> str:
        parts = [f"ABI {self.abi}", f"{self.rules} path rules"]
        if self.tcp_denied:
            parts.append("TCP bind/connect denied")
        if self.scoped:
            parts.append("abstract unix sockets and signals scoped")
        if self.missing:
            parts.append("not added (absent or unreadable): " + ", ".join(map(str, self.missing)))
        return "; ".join(parts)


def abi_version() -> int:
    """The kernel's Landlock ABI; OSError(ENOSYS/EOPNOTSUPP) when it has none."""
    return _sys.syscall("landlock_create_ruleset", 0, 0, CREATE_RULESET_VERSION)


def unavailable_reason(err: OSError) -> str:
    if err.errno == errno.ENOSYS:
        return "kernel built without Landlock"
    if err.errno == errno.EOPNOTSUPP:
        return "Landlock is not enabled at boot (lsm=)"
    return f"Landlock probe failed: {err}"


def build_ruleset(read_paths: Iterable[Path], write_paths: Iterable[Path]) -> Ruleset:
    """Allow only reads beneath `read_paths` and writes beneath `write_paths`; deny TCP.

    Build it while the paths can still be opened (before a uid change); enforcing it
    later needs NO_NEW_PRIVS. Raises OSError when Landlock is missing or a step fails;
    paths that cannot be opened are skipped and listed.
    """
    abi = abi_version()
    handled_fs = _FS_BY_ABI[max(k for k in _FS_BY_ABI if k <= abi)]
    attr = _RulesetAttr(
        handled_access_fs=handled_fs,
        handled_access_net=NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
        scoped=SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0,
    )
    fd = _sys.syscall("landlock_create_ruleset", ctypes.addressof(attr), ctypes.sizeof(attr), 0)
    rules = 0
    missing: list[Path] = []
    try:
        for paths, access in ((read_paths, READ_ONLY), (write_paths, READ_WRITE)):
            for path in paths:
                if _add_path_rule(fd, path, access & handled_fs):
                    rules += 1
                else:
                    missing.append(path)
    except OSError:
        os.close(fd)
        raise
    net, scoped = attr.handled_access_net != 0, attr.scoped != 0
    return Ruleset(fd, abi, rules, tuple(missing), net, scoped)


def _add_path_rule(ruleset: int, path: Path, access: int) -> bool:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return False
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= _FILE_RIGHTS
        rule = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
        _sys.syscall("landlock_add_rule", ruleset, RULE_PATH_BENEATH, ctypes.addressof(rule), 0)
    finally:
        os.close(fd)
    return True
