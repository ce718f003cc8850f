"""`model prepare` and `model list`: registered into the main CLI by assistant/cli.py.

`prepare` runs assistant.convert, imported only then: it needs the optional `prepare` extra."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant.model.errors import ModelError

if TYPE_CHECKING:  # the manager loads tokenizers and jinja2: only `model list` needs it
    from assistant.model.manager import ModelManager

# What `model prepare` needs beyond the runtime (the `prepare` extra in pyproject.toml).
PREPARE_EXTRA = "edge-assistant[prepare]"
PREPARE_MODULES = ("gguf", "onnx", "onnx_ir")


class PrepareExtraMissingError(ModelError):
    """`model prepare` on an install without the converter's packages."""


def _missing_prepare_modules() -> list[str]:
    missing = []
    for name in PREPARE_MODULES:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    return missing


def _prepare(models_dir: Path, gguf: Path | None, precision: str) -> None:
    missing = _missing_prepare_modules()
    if missing:
        raise PrepareExtraMissingError(
            f"model preparation needs {', '.join(missing)}, which this install lacks: "
            f"pip install '{PREPARE_EXTRA}'"
        )
    from assistant.convert.cli import run_prepare  # noqa: PLC0415 - the optional extra

    run_prepare(models_dir, gguf, precision)


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
    prepare.add_argument(
        "--precision",
        choices=["int8", "fp32", "gguf", "auto"],
        default="int8",
        help="gguf: the file's own quantized blocks, exactly; auto: gguf for a quantized "
        "file, else int8",
    )
    commands.add_parser("list", parents=list(parents), help="the prepared models")


def run_model_command(args: argparse.Namespace, models_dir: Path, picked: str | None = None) -> int:
    """Run the parsed `model ...` command; returns the process exit code."""
    try:
        if args.model_command == "prepare":
            _prepare(models_dir, args.gguf, args.precision)
            return 0
        if args.model_command == "list":
            from assistant.model.manager import ModelManager  # noqa: PLC0415 - see above

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
