"""The `edge-assistant` command line: parse arguments, load config, set logging, dispatch.

Each command's work lives in its own module; this file only wires them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from assistant import __version__
from assistant.config import Config, ConfigError, load_config

LOG = logging.getLogger("assistant")
EXIT_CONFIG = 2

Command = Callable[[argparse.Namespace, Config], int]


def models_dir(config: Config) -> Path:
    """`model.dir` from the config, else the per-user cache."""
    from assistant.model.paths import default_models_dir  # noqa: PLC0415

    return config.model.dir or default_models_dir()


def cmd_doctor(args: argparse.Namespace, config: Config) -> int:
    from assistant import doctor  # noqa: PLC0415
    from assistant.hardware import Probe  # noqa: PLC0415
    from assistant.models_present import candidate_models  # noqa: PLC0415
    from assistant.plan import PlanError, make_plan  # noqa: PLC0415

    directory = models_dir(config)
    facts = Probe().facts(directory)
    try:
        plan = make_plan(facts, config, candidate_models(directory))
    except PlanError as err:
        print(f"edge-assistant: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    if args.json:
        print(json.dumps(doctor.report(facts, plan, config.public_dict()), indent=2))
    else:
        print(doctor.render_text(facts, plan, config.source))
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="PATH",
        help="YAML or JSON config file (default: ./config.yaml when present, else defaults)",
    )
    parser = argparse.ArgumentParser(
        prog="edge-assistant",
        description="A local AI assistant for Home Assistant, served over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    doctor = sub.add_parser(
        "doctor", parents=[common], help="show the hardware, the requirement table and the plan"
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    # Before anything can import onnxruntime: it writes usage telemetry at import otherwise.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"edge-assistant: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.log_level)
    func: Command = args.func
    return func(args, config)
