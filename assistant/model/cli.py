"""`model prepare` and `model list`: registered into the main CLI by assistant/cli.py."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO, cast

from assistant.model.errors import ModelError
from assistant.model.manager import ModelManager
from assistant.model.prepare import Precision, prepare_model


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


def add_model_commands(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Register `model prepare` and `model list` on the main parser's subparsers.

    `parents` lets the caller add shared options (such as --config) to both commands.
    """
    model = subparsers.add_parser("model", help="prepare and list local models")
    commands = model.add_subparsers(dest="model_command", required=True)
    prepare = commands.add_parser(
        "prepare",
        parents=list(parents),
        help="build the ONNX model folder (default model without --gguf)",
    )
    prepare.add_argument("--gguf", type=Path, default=None, help="a Llama-family GGUF file")
    prepare.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    commands.add_parser("list", parents=list(parents), help="the prepared models")


def run_model_command(args: argparse.Namespace, models_dir: Path, picked: str | None = None) -> int:
    """Run the parsed `model ...` command; returns the process exit code."""
    try:
        if args.model_command == "prepare":
            progress = StepProgress()
            path = prepare_model(models_dir, args.gguf, cast(Precision, args.precision), progress)
            progress.done(path)
            print(path)
            return 0
        if args.model_command == "list":
            _print_catalog(ModelManager(models_dir), models_dir, picked)
            return 0
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"error: unknown model command {args.model_command!r}", file=sys.stderr)
    return 2


def _print_catalog(manager: ModelManager, models_dir: Path, picked: str | None) -> None:
    entries = manager.catalog(models_dir)
    if not entries:
        print(f"no models in {models_dir} (run `edge-assistant model prepare`)")
        return
    print(f"  {'id':40} {'precision':9} {'size MB':>8} {'params M':>8} {'context':>7}")
    for e in entries:
        mark = "*" if e.id == picked else " "
        print(
            f"{mark} {e.id:40} {e.precision:9} {e.size_bytes / 1e6:8.1f} "
            f"{e.parameters / 1e6:8.1f} {e.context_length:7d}"
        )
    if picked is not None:
        print(f"* the model the hardware plan picks on this machine ({picked})")
