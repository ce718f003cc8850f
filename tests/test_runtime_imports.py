"""The runtime never loads the converter: `serve` and the worker work without the `prepare`
extra (gguf, onnx, onnx-ir), and `model prepare` without it says what to install."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CONVERTER_MODULES = ("onnx", "gguf", "onnx_ir", "assistant.convert")

# What the service entry point imports, then what the worker does at start (load a prepared
# folder, one warm-up generation); prints the converter modules that got loaded.
RUNTIME_SCRIPT = f"""
import json, sys
import assistant.cli, assistant.serve, assistant.service, assistant.models_present
from assistant.cli import build_parser
from assistant.worker.startup import confine_then_load
from assistant.worker.protocol import StartSpec

build_parser().parse_args(["serve"])
spec = StartSpec(model_path=sys.argv[1], threads=1, context_tokens=64, max_batch=1,
                 kv_budget_bytes=1 << 20, sandbox=False)
engine, _ = confine_then_load(spec)  # the worker's start: imports, load, one warm-up
names = {CONVERTER_MODULES!r}
print(json.dumps({{"engine": type(engine).__name__, "loaded": sorted(
    n for n in sys.modules if n in names or n.startswith("assistant.convert"))}}))
"""


def test_service_and_worker_load_no_converter_module(tiny_model_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", RUNTIME_SCRIPT, str(tiny_model_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["engine"] == "Engine"  # the model really loaded and generated
    assert report["loaded"] == []


# What the service process itself does before it hands the model to the worker: parse
# `serve`, probe the machine, plan, resolve the model folder. The engine's libraries belong
# in the worker only; loading them here would cost the service ~25 MB it never uses.
SERVICE_SCRIPT = """
import json, sys
from pathlib import Path
import assistant.cli, assistant.serve, assistant.service
from assistant.cli import build_parser
from assistant.config import load_config
from assistant.model.errors import ModelError
from assistant.models_present import plan_for_this_machine
from assistant.plan import PlanError

build_parser().parse_args(["serve"])
try:
    plan_for_this_machine(load_config(None), Path(sys.argv[1]))
except (ModelError, PlanError) as err:  # no default model in this folder: fine here
    print(type(err).__name__, file=sys.stderr)
heavy = ("numpy", "onnxruntime", "tokenizers", "jinja2", "llguidance")
print(json.dumps(sorted(n for n in heavy if n in sys.modules)))
"""


def test_the_service_process_loads_no_engine_library(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SERVICE_SCRIPT, str(tiny_model_dir.parent)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_prepare_without_the_extra_names_what_to_install(tmp_path: Path) -> None:
    # `None` in sys.modules makes `import gguf` fail as if it were not installed.
    script = (
        "import sys; sys.modules['gguf'] = None\n"
        "from assistant.cli import main\n"
        f"sys.exit(main(['model', 'prepare', '--gguf', {str(tmp_path / 'm.gguf')!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
        env={"EDGE_ASSISTANT_MODELS": str(tmp_path / "models"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "gguf" in result.stderr
    assert "pip install 'edge-assistant[prepare]'" in result.stderr
    assert not (tmp_path / "models").exists()
