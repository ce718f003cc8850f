"""Raw Linux calls the sandbox needs and Python does not wrap: syscall numbers, prctl, unshare.

Numbers come from the kernel's syscall_64.tbl (x86_64) and asm-generic/unistd.h
(aarch64). A name missing from an architecture (aarch64 has no `fork`) is simply absent.
"""

from __future__ import annotations

import ctypes
import os
import platform

# prctl options (linux/prctl.h)
PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39

# clone/unshare flags (linux/sched.h)
CLONE_NEWNS = 0x00020000
CLONE_THREAD = 0x00010000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NAMESPACES = (
    CLONE_NEWNS
    | CLONE_NEWCGROUP
    | CLONE_NEWUTS
    | CLONE_NEWIPC
    | CLONE_NEWUSER
    | CLONE_NEWPID
    | CLONE_NEWNET
)

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

_COMMON = {  # the same number on both architectures (added after the tables converged)
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "clone3": 435,
    "pidfd_getfd": 438,
    "mount_setattr": 442,
    "landlock_create_ruleset": 444,
    "landlock_add_rule": 445,
    "landlock_restrict_self": 446,
}

SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": _COMMON
    | {
        "socket": 41,
        "socketpair": 53,
        "clone": 56,
        "fork": 57,
        "vfork": 58,
        "execve": 59,
        "ptrace": 101,
        "syslog": 103,
        "capset": 126,
        "uselib": 134,
        "pivot_root": 155,
        "chroot": 161,
        "acct": 163,
        "mount": 165,
        "umount2": 166,
        "swapon": 167,
        "swapoff": 168,
        "reboot": 169,
        "init_module": 175,
        "delete_module": 176,
        "quotactl": 179,
        "lookup_dcookie": 212,
        "kexec_load": 246,
        "add_key": 248,
        "request_key": 249,
        "keyctl": 250,
        "unshare": 272,
        "perf_event_open": 298,
        "name_to_handle_at": 303,
        "open_by_handle_at": 304,
        "setns": 308,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "kcmp": 312,
        "finit_module": 313,
        "seccomp": 317,
        "kexec_file_load": 320,
        "bpf": 321,
        "execveat": 322,
        "userfaultfd": 323,
    },
    "aarch64": _COMMON
    | {
        "lookup_dcookie": 18,
        "umount2": 39,
        "mount": 40,
        "pivot_root": 41,
        "chroot": 51,
        "quotactl": 60,
        "acct": 89,
        "capset": 91,
        "unshare": 97,
        "kexec_load": 104,
        "init_module": 105,
        "delete_module": 106,
        "syslog": 116,
        "ptrace": 117,
        "reboot": 142,
        "socket": 198,
        "socketpair": 199,
        "add_key": 217,
        "request_key": 218,
        "keyctl": 219,
        "clone": 220,
        "execve": 221,
        "swapon": 224,
        "swapoff": 225,
        "perf_event_open": 241,
        "name_to_handle_at": 264,
        "open_by_handle_at": 265,
        "setns": 268,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "kcmp": 272,
        "finit_module": 273,
        "seccomp": 277,
        "bpf": 280,
        "execveat": 281,
        "userfaultfd": 282,
        "kexec_file_load": 294,
    },
}


def machine() -> str:
    """The architecture name used as a key of `SYSCALLS` ("arm64" is spelled "aarch64")."""
    name = platform.machine()
    return "aarch64" if name == "arm64" else name


def syscall_table() -> dict[str, int] | None:
    """This machine's syscall numbers, or None on an architecture without a table."""
    return SYSCALLS.get(machine())


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int
_libc.unshare.restype = ctypes.c_int
_libc.unshare.argtypes = [ctypes.c_int]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def syscall(name: str, *args: int) -> int:
    """Call a syscall by name on this architecture; raise OSError on failure.

    Pass pointers as `ctypes.addressof(obj)` (0 for NULL) and keep `obj` alive meanwhile.
    """
    table = syscall_table()
    if table is None or name not in table:
        raise OSError(38, f"{name}: no syscall number for {machine()}")  # ENOSYS
    return _check(int(_libc.syscall(ctypes.c_long(table[name]), *map(ctypes.c_long, args))), name)


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    """prctl(2) with unsigned long arguments; raise OSError on failure."""
    args = (ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0))
    return _check(int(_libc.prctl(ctypes.c_int(option), *args)), f"prctl({option})")


def unshare(flags: int) -> None:
    """unshare(2); EINVAL when the caller has threads, EPERM when not allowed here."""
    _check(int(_libc.unshare(flags)), "unshare")


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def clear_capabilities() -> None:
    """Empty this thread's effective, permitted and inheritable capability sets."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two data structs
    data = (_CapData * 2)()
    syscall("capset", ctypes.addressof(header), ctypes.addressof(data))
