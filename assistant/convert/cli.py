"""`model prepare`'s work: progress lines on stderr around `prepare_model`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Literal, TextIO, cast

from assistant.convert.prepare import prepare_model
from assistant.model.manifest import Precision


class StepProgress:
    """Prints one line per prepare step on stderr, with the time the previous step took."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.step_started = self.started

    def __call__(self, step: str, index: int, total: int) -> None:
        now = time.monotonic()
        bar = "#" * index + "." * (total - index)
        print(
            f"[{bar}] {index}/{total} {step} (+{now - self.step_started:.1f}s)",
            file=self.stream,
            flush=True,
        )
        self.step_started = now

    def done(self, path: Path) -> None:
        """Final line with the total time."""
        print(
            f"model ready at {path} ({time.monotonic() - self.started:.1f}s)",
            file=self.stream,
            flush=True,
        )


def run_prepare(models_dir: Path, gguf: Path | None, precision: str) -> Path:
    """Prepare with progress lines; prints the folder on stdout. Raises ModelError."""
    progress = StepProgress()
    path = prepare_model(models_dir, gguf, cast("Precision | Literal['auto']", precision), progress)
    progress.done(path)
    print(path)
    return path
