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
from assistant.config import Config, load_config
from assistant.config_schema import ConfigError

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
    sandbox = None
    if config.sandbox.enabled:
        from assistant.sandbox import describe_sandbox_support  # noqa: PLC0415

        sandbox = describe_sandbox_support()
    if args.json:
        print(json.dumps(doctor.report(facts, plan, config.public_dict(), sandbox), indent=2))
    else:
        print(doctor.render_text(facts, plan, config.source, sandbox))
    return 0


def cmd_ask(args: argparse.Namespace, config: Config) -> int:
    from assistant.ask import AskOptions, run_ask  # noqa: PLC0415

    options = AskOptions(
        text=args.text, json=args.json, max_tokens=args.max_tokens, temperature=args.temperature
    )
    return run_ask(options, config, models_dir(config))


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from assistant.serve import run_serve  # noqa: PLC0415

    return run_serve(config, models_dir(config))


def cmd_model(args: argparse.Namespace, config: Config) -> int:
    from assistant.hardware import Probe  # noqa: PLC0415
    from assistant.model.cli import run_model_command  # noqa: PLC0415
    from assistant.models_present import candidate_models  # noqa: PLC0415
    from assistant.plan import PlanError, make_plan  # noqa: PLC0415

    directory = models_dir(config)
    picked = None
    if args.model_command == "list":
        try:
            facts = Probe().facts(directory)
            picked = make_plan(facts, config, candidate_models(directory)).model.id
        except PlanError:
            picked = None
    return run_model_command(args, directory, picked)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _temperature(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 2.0:
        raise argparse.ArgumentTypeError("must be between 0 and 2")
    return value


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

    serve = sub.add_parser(
        "serve", parents=[common], help="run the service: MQTT in, MQTT out, until SIGTERM"
    )
    serve.set_defaults(func=cmd_serve)

    doctor = sub.add_parser(
        "doctor", parents=[common], help="show the hardware, the requirement table and the plan"
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(func=cmd_doctor)

    ask = sub.add_parser("ask", parents=[common], help="answer one prompt, no MQTT")
    ask.add_argument("text", help="the prompt")
    ask.add_argument("--json", action="store_true", help="print the contract's reply object")
    ask.add_argument("--max-tokens", type=_positive_int, default=None, metavar="N")
    ask.add_argument(
        "--temperature", type=_temperature, default=None, metavar="T", help="0 = greedy"
    )
    ask.set_defaults(func=cmd_ask)

    from assistant.model.cli import add_model_commands  # noqa: PLC0415

    add_model_commands(sub, [common])
    sub.choices["model"].set_defaults(func=cmd_model)
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
