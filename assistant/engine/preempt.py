"""Preemption of a graph run: an urgent request need not wait for the step in progress.

The worker reads its socket on a second thread. When a request arrives whose priority is
higher than that of the run in progress (a chunk of an ordinary prompt's prefill, or a
decode step of ordinary rows; up to a few hundred ms on a small CPU), that thread sets
onnxruntime's `RunOptions.terminate`: the run stops at its next node and raises. Nothing
the run wrote counts (the KV cache's lengths move only after a run succeeds, and positions
past them are overwritten), so the step is simply redone after the urgent prefill.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class PreemptedError(Exception):
    """The graph run was stopped for a more urgent request; its work is to be redone."""


class Preemption:
    """The run options every graph run uses, and who may stop the run in progress."""

    def __init__(self) -> None:
        import onnxruntime as ort  # noqa: PLC0415

        self.options: Any = ort.RunOptions()
        self.options.log_severity_level = 4  # a stopped run is expected: no ORT error line
        # onnxruntime's Python `run_with_iobinding` looks this key up on every run (for
        # WebGPU graph capture); a missing key costs a C++ exception, ~40 us a run. -1 is
        # its "no capture" value, which the CPU provider ignores anyway.
        self.options.add_run_config_entry("gpu_graph_id", "-1")
        self._lock = threading.Lock()
        self._running: int | None = None  # priority of the run in progress
        self._stopped = False
        self._waiting: int | None = None  # highest priority arrived and not yet taken
        self.count = 0  # runs stopped so far

    @contextmanager
    def run(self, priority: int) -> Iterator[None]:
        """Around one graph run on behalf of requests of at most `priority`."""
        with self._lock:
            if self._waiting is not None and self._waiting > priority:
                # It arrived between two runs: take it before starting this one.
                raise PreemptedError
            self._running, self._stopped = priority, False
        try:
            yield
        except Exception as err:
            if self._stopped:  # onnxruntime's refusal to go on, not a failure
                raise PreemptedError from err
            raise
        finally:
            with self._lock:
                # Cleared before the next run starts: a late stop cannot hit that one.
                self._running = None
                self.options.terminate = False
        if self._stopped:  # it ended on its own just as it was stopped: nothing lost
            self._stopped = False

    def stop_below(self, priority: int) -> bool:
        """From another thread: stop the run in progress if it serves only requests of
        lower priority than `priority`. Whether one was stopped."""
        with self._lock:
            self._waiting = priority if self._waiting is None else max(self._waiting, priority)
            if self._running is None or self._running >= priority:
                return False
            self.options.terminate = True
            self._stopped = True
            self.count += 1
            return True

    def taken(self) -> None:
        """The loop has taken the requests that arrived: runs of any priority may start."""
        with self._lock:
            self._waiting = None
