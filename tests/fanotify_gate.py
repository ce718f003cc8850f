"""A fanotify permission gate for tests: every open of a file in one folder waits until
this gate has read the opener's /proc/<pid>/status, then is allowed.

The opener is blocked inside open() while its status is read, so what the test sees is
the opener's state at that exact moment: no polling, no race. Needs CAP_SYS_ADMIN.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

FAN_CLOEXEC = 0x1
FAN_CLASS_CONTENT = 0x4
FAN_MARK_ADD = 0x1
FAN_OPEN_PERM = 0x10000
FAN_EVENT_ON_CHILD = 0x08000000
FAN_ALLOW = 0x1
AT_FDCWD = -100
_EVENT = struct.Struct("=IBBHQii")  # struct fanotify_event_metadata
_RESPONSE = struct.Struct("=iI")  # struct fanotify_response


@dataclass(frozen=True)
class Open:
    """One open of a file in the folder: who, which file, and the opener's status then."""

    pid: int
    name: str
    status: dict[str, str]


def _status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


class FanotifyGate:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.opens: list[Open] = []
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fanotify_mark.argtypes = [
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint64,
            ctypes.c_int,
            ctypes.c_char_p,
        ]
        fd = libc.fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, os.O_RDONLY | os.O_LARGEFILE)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "fanotify_init")
        self._fd = fd
        mask = FAN_OPEN_PERM | FAN_EVENT_ON_CHILD
        if libc.fanotify_mark(fd, FAN_MARK_ADD, mask, AT_FDCWD, bytes(folder)) != 0:
            os.close(fd)
            raise OSError(ctypes.get_errno(), "fanotify_mark")
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="fanotify-gate", daemon=True)

    def __enter__(self) -> FanotifyGate:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join()
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)  # closing the group allows anything still pending

    def _serve(self) -> None:
        while True:
            ready = select.select([self._fd, self._stop_r], [], [])[0]
            if self._stop_r in ready:
                return
            self._answer(os.read(self._fd, 4096))

    def _answer(self, buffer: bytes) -> None:
        offset = 0
        while offset + _EVENT.size <= len(buffer):
            length, _, _, _, _, fd, pid = _EVENT.unpack_from(buffer, offset)
            offset += length
            if fd < 0:
                continue  # queue overflow: no file to answer for
            try:
                name = Path(f"/proc/self/fd/{fd}").readlink().name
                self.opens.append(Open(pid, name, _status(pid)))  # the opener waits meanwhile
            finally:
                os.write(self._fd, _RESPONSE.pack(fd, FAN_ALLOW))
                os.close(fd)
