"""A seccomp deny-list written as a classic BPF program, installed on every thread.

Denied calls return EPERM, so Python sees an ordinary PermissionError. What the filter
decides, per syscall:
- socket/socketpair: only AF_UNIX (no INET, INET6, NETLINK, PACKET or anything else);
- clone: only threads (CLONE_THREAD) and never with namespace flags, so no fork;
- clone3: ENOSYS, because its flags sit in memory the filter cannot read; glibc then
  falls back to clone for new threads;
- the calls in `DENIED`: EPERM;
- a foreign syscall ABI (i386 or x32 on x86_64): the process is killed.
"""

from __future__ import annotations

import ctypes
import errno
import socket
from dataclasses import dataclass

from assistant.sandbox import _sys

DENIED = (
    "execve",
    "execveat",
    "fork",
    "vfork",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "syslog",
    "lookup_dcookie",
    "uselib",
    "name_to_handle_at",
    "open_by_handle_at",
)

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000
X32_SYSCALL_BIT = 0x40000000

# Classic BPF opcodes (linux/filter.h): BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_J*|BPF_K, BPF_RET|BPF_K.
_LD_ABS = 0x20
_JEQ = 0x15
_JGE = 0x35
_JSET = 0x45
_RET = 0x06
# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6] (little endian).
_NR = 0
_ARCH = 4
_ARG0_LOW = 16


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


Instruction = tuple[int, int, int, int]  # code, jt, jf, k


class _Assembler:
    """Builds a BPF program with forward jumps to named labels."""

    def __init__(self) -> None:
        self._code: list[tuple[int, str | None, str | None, int]] = []
        self._labels: dict[str, int] = {}

    def load(self, offset: int) -> None:
        self._code.append((_LD_ABS, None, None, offset))

    def jump(self, op: int, k: int, true: str | None, false: str | None = None) -> None:
        """Jump to `true` / `false` (None: the next instruction)."""
        self._code.append((op, true, false, k))

    def ret(self, value: int) -> None:
        self._code.append((_RET, None, None, value))

    def label(self, name: str) -> None:
        self._labels[name] = len(self._code)

    def assemble(self) -> list[Instruction]:
        program: list[Instruction] = []
        for index, (code, true, false, k) in enumerate(self._code):
            program.append((code, self._offset(index, true), self._offset(index, false), k))
        return program

    def _offset(self, index: int, label: str | None) -> int:
        if label is None:
            return 0
        offset = self._labels[label] - index - 1
        if not 0 <= offset <= 255:
            raise ValueError(f"BPF jump to {label!r} out of range ({offset})")
        return offset


def build_filter(arch: str) -> list[Instruction]:
    """The filter program for `arch` ("x86_64" or "aarch64"); KeyError for others."""
    table = _sys.SYSCALLS[arch]
    asm = _Assembler()
    asm.load(_ARCH)
    asm.jump(_JEQ, _sys.AUDIT_ARCH[arch], None, "kill")
    asm.load(_NR)
    if arch == "x86_64":
        asm.jump(_JGE, X32_SYSCALL_BIT, "deny")
    asm.jump(_JEQ, table["socket"], "socket")
    asm.jump(_JEQ, table["socketpair"], "socket")
    asm.jump(_JEQ, table["clone"], "clone")
    asm.jump(_JEQ, table["clone3"], "nosys")
    for name in DENIED:
        if name in table:  # aarch64 has no fork, vfork or uselib
            asm.jump(_JEQ, table[name], "deny")
    asm.ret(RET_ALLOW)
    asm.label("socket")
    asm.load(_ARG0_LOW)
    asm.jump(_JEQ, socket.AF_UNIX, "allow", "deny")
    asm.label("clone")
    asm.load(_ARG0_LOW)
    asm.jump(_JSET, _sys.CLONE_NAMESPACES, "deny")
    asm.jump(_JSET, _sys.CLONE_THREAD, "allow", "deny")
    asm.label("allow")
    asm.ret(RET_ALLOW)
    asm.label("deny")
    asm.ret(RET_ERRNO | errno.EPERM)
    asm.label("nosys")
    asm.ret(RET_ERRNO | errno.ENOSYS)
    asm.label("kill")
    asm.ret(RET_KILL_PROCESS)
    return asm.assemble()


@dataclass(frozen=True)
class SeccompResult:
    arch: str
    instructions: int
    denied: int

    def describe(self) -> str:
        return (
            f"{self.arch}: {self.denied} syscalls denied, sockets AF_UNIX only, no fork or "
            f"namespaces via clone; {self.instructions} BPF instructions on every thread"
        )


def install() -> SeccompResult:
    """Install the filter on all threads of the process (needs NO_NEW_PRIVS)."""
    arch = _sys.machine()
    table = _sys.syscall_table()
    if table is None or arch not in _sys.AUDIT_ARCH:
        raise OSError(errno.ENOSYS, f"no seccomp syscall table for {arch}")
    program = build_filter(arch)
    filters = (_SockFilter * len(program))(*(_SockFilter(*ins) for ins in program))
    fprog = _SockFprog(len(program), filters)
    # seccomp(2) with TSYNC, not prctl: onnxruntime's pool threads exist by now, and a
    # prctl filter would cover only the calling thread.
    result = _sys.syscall(
        "seccomp", SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, ctypes.addressof(fprog)
    )
    if result != 0:
        raise OSError(errno.EBUSY, f"seccomp: thread {result} could not be synchronised")
    return SeccompResult(arch, len(program), sum(name in table for name in DENIED))
