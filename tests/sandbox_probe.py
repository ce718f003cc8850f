"""A stand-in worker for tests/test_sandbox_layers.py: sandbox itself, infer, try to escape.

Modes:
- full: apply_sandbox, import numpy + onnxruntime, run the model, apply_seccomp, try
  every escape in both phases, send the results as one IPC frame on --fd, then wait for
  a frame (or EOF) before exiting, so the test can inspect /proc/<pid> meanwhile;
- pdeathsig: apply_sandbox, print {"ready": pid} on stdout, then sleep.
--start-uid makes the probe give up root before sandboxing, as a worker started
unprivileged would (which takes the user-namespace path).
"""

from __future__ import annotations

import argparse

# This machine's interpreter lives under /root (mode 0700), which the dropped uid cannot
# traverse: import the stdlib modules numpy/onnxruntime need while still root. (The
# add-on image's Python lives under /usr, readable by everyone.)
import contextlib
import contextvars  # noqa: F401
import ctypes
import datetime  # noqa: F401
import encodings.idna  # noqa: F401 -- socket encodes host names with it
import errno
import json
import numbers  # noqa: F401
import os
import pickle  # noqa: F401
import platform  # noqa: F401
import socket
import sys
import sysconfig
import threading
import time
import typing  # noqa: F401
from collections.abc import Callable
from pathlib import Path
from typing import Any

from assistant.ipc import ChannelClosed, recv_frame, send_frame
from assistant.sandbox import (
    SandboxPolicy,
    apply_sandbox,
    apply_seccomp,
    default_read_paths,
    thread_count,
)

sysconfig.get_config_vars()  # loads _sysconfigdata, which onnxruntime imports later

Result = dict[str, Any]


def attempt(action: Callable[[], object]) -> Result:
    """Run one escape attempt: {"ok": True, ...} or the error that stopped it."""
    try:
        value = action()
    except OSError as err:
        name = errno.errorcode.get(err.errno or 0, str(err.errno))
        return {"ok": False, "errno": name, "error": str(err)}
    except MemoryError as err:
        return {"ok": False, "errno": None, "error": f"MemoryError: {err}"}
    except Exception as err:  # anything else must reach the test, not kill the probe
        return {"ok": False, "errno": None, "error": f"{type(err).__name__}: {err}"}
    return {"ok": True, "value": value}


def tcp_connect(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def udp_sendto(port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return sock.sendto(b"escaped", ("127.0.0.1", port))


def write_file(path: Path, size: int = 16) -> int:
    with path.open("wb") as handle:
        return handle.write(b"x" * size)


def fork_many(count: int) -> Result:
    forked, refused = 0, []
    for _ in range(count):
        try:
            pid = os.fork()
        except OSError as err:
            refused.append(errno.errorcode.get(err.errno or 0, str(err.errno)))
            continue
        if pid == 0:
            os._exit(0)
        forked += 1
        os.waitpid(pid, 0)
    return {"ok": forked > 0, "forked": forked, "errno": refused[0] if refused else None}


def unshare_user() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def start_thread() -> bool:
    done = threading.Event()
    worker = threading.Thread(target=done.set)
    worker.start()
    worker.join(5)
    return done.is_set()


def unix_socketpair() -> bool:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"ok")
        return right.recv(2) == b"ok"


def full(args: argparse.Namespace) -> None:
    sock = socket.socket(fileno=args.fd)
    scratch = Path(args.scratch)
    policy = SandboxPolicy(
        read_paths=default_read_paths(Path(args.model).parent),
        scratch_dir=scratch,
        memory_bytes=args.memory_bytes,
    )
    threads_before = thread_count()
    report = apply_sandbox(policy)
    sandboxed = {
        "tcp_connect": attempt(lambda: tcp_connect(args.port)),
        "udp_sendto": attempt(lambda: udp_sendto(args.udp_port)),
        "write_outside": attempt(lambda: write_file(Path(args.outside))),
        "write_scratch": attempt(lambda: write_file(scratch / "small")),
        "write_big": attempt(lambda: write_file(scratch / "big", 2 << 20)),
        "read_secret": attempt(lambda: Path(args.secret).read_bytes().decode()),
    }

    # Only now: numpy and onnxruntime start threads, and unshare/Landlock needed one.
    import numpy as np  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2  # a pool thread that seccomp's TSYNC must cover
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    matrix = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)

    def infer() -> list[list[float]]:
        output = session.run(None, {"a": matrix})[0]
        return [[float(x) for x in row] for row in np.asarray(output)]

    sandboxed["inference"] = attempt(infer)
    report = apply_seccomp(report)
    seccomped = {
        "tcp_connect": attempt(lambda: tcp_connect(args.port)),
        "udp_sendto": attempt(lambda: udp_sendto(args.udp_port)),
        "write_outside": attempt(lambda: write_file(Path(args.outside))),
        "write_scratch": attempt(lambda: write_file(scratch / "small2")),
        "read_secret": attempt(lambda: Path(args.secret).read_bytes().decode()),
        "exec": attempt(lambda: os.execv("/bin/sh", ["/bin/sh", "-c", "exit 0"])),
        "fork": fork_many(40),
        "unshare": attempt(unshare_user),
        "allocate_2gib": attempt(lambda: int(np.ones(2 << 30, dtype=np.uint8).sum())),
        "inference": attempt(infer),
        "unix_socketpair": attempt(unix_socketpair),
        "thread": attempt(start_thread),
    }
    send_frame(
        sock,
        {
            "report": report.to_payload(),
            "threads_at_sandbox": threads_before,
            "threads_now": thread_count(),
            "sandboxed": sandboxed,
            "seccomp": seccomped,
        },
    )
    with contextlib.suppress(ChannelClosed):  # paused while the test reads /proc/<pid>
        recv_frame(sock)


def pdeathsig(_: argparse.Namespace) -> None:
    apply_sandbox(SandboxPolicy(read_paths=default_read_paths()))
    print(json.dumps({"ready": os.getpid()}), flush=True)
    time.sleep(60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["full", "pdeathsig"])
    parser.add_argument("--fd", type=int)
    parser.add_argument("--scratch")
    parser.add_argument("--secret")
    parser.add_argument("--model")
    parser.add_argument("--outside")
    parser.add_argument("--port", type=int)
    parser.add_argument("--udp-port", type=int)
    parser.add_argument("--memory-bytes", type=int)
    parser.add_argument("--start-uid", type=int)
    args = parser.parse_args()
    if args.start_uid is not None:
        os.setgroups([])
        os.setresgid(args.start_uid, args.start_uid, args.start_uid)
        os.setresuid(args.start_uid, args.start_uid, args.start_uid)
    (full if args.mode == "full" else pdeathsig)(args)
    sys.exit(0)


if __name__ == "__main__":
    main()
