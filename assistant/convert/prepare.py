"""GGUF -> ONNX model folder: fetch, dequantize, build, quantize, optimize, verify."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import onnx

from assistant import heap
from assistant.convert.calibration import LEVEL_SEARCH_TEXT
from assistant.convert.exact import exact_sources
from assistant.convert.fetch import DEFAULT_SOURCE, fetch_default_gguf
from assistant.convert.gguf_loader import GgufModel, load_gguf
from assistant.convert.graph import build_decoder
from assistant.convert.optimize import OPTIMIZATION_LEVEL, graph_stats, optimize_offline
from assistant.convert.prepare_gguf import search_levels, source_is_quantized
from assistant.convert.quality import BUILTIN_TEXT, Predictions, QualityReport, compare, predictions
from assistant.convert.quantize import ACCURACY_LEVEL, EMBED_BLOCK, quantize_int8
from assistant.convert.smooth import ALPHA as SMOOTH_ALPHA
from assistant.convert.smooth import CALIBRATION_TEXT, collect_stats, smooth
from assistant.convert.tokenizer import build_tokenizer
from assistant.model.errors import ModelError
from assistant.model.manifest import (
    MANIFEST_NAME,
    MODEL_FILE,
    TOKENIZER_FILE,
    Manifest,
    Precision,
    describe_files,
    sha256_file,
)
from assistant.model.session import open_session

_LOGGER = logging.getLogger(__name__)

# progress(step, index, total): called when a step starts; index counts from 1.
ProgressCallback = Callable[[str, int, int], None]
STEPS = ("fetch", "dequantize", "build", "quantize", "optimize", "verify")
INT8_BLOCK_SIZE = 32  # measured near-lossless on SmolLM2 (benchmarks/RESULTS.md)
# The built-in check at prepare time only catches a broken conversion; the benchmark
# (benchmarks/quality.py) holds the real targets (PPL +2 %, agreement 0.97).
GATE_PPL_RATIO = 1.10
GATE_AGREEMENT = 0.85


def model_id_for(gguf: Path, precision: str) -> str:
    """`SmolLM2-135M-Instruct.Q4_1.gguf` -> `smollm2-135m-instruct-int8`."""
    stem = gguf.name.removesuffix(".gguf")
    # Drop a trailing llama.cpp quantization tag (.Q4_1, -q8_0, .F16, .IQ4_XS ...).
    stem = re.sub(r"[.-](i?q\d\w*|f16|f32|bf16)$", "", stem, flags=re.IGNORECASE)
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "model"
    return f"{slug[:48]}-{precision}"


def _is_current(target: Path, gguf_sha: str) -> bool:
    if not (target / MANIFEST_NAME).is_file():
        return False
    try:
        manifest = Manifest.read(target)
    except ModelError:
        return False
    return manifest.source.get("gguf_sha256") == gguf_sha and manifest.files_match(target)


def _save(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        model,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
        size_threshold=1024,
    )


def _verify(
    reference: Path | Predictions, candidate: Path, gguf: GgufModel, text: str
) -> QualityReport:
    ids = build_tokenizer(gguf.vocab).encode(text).ids
    if isinstance(reference, Path):
        reference = predictions(open_session(reference, threads=None), ids)
    report = compare(reference, open_session(candidate, threads=None), ids)
    if not (report.ppl_ratio <= GATE_PPL_RATIO and report.top1_agreement >= GATE_AGREEMENT):
        raise ModelError(
            f"converted model fails the quality check: perplexity x{report.ppl_ratio:.3f}, "
            f"top-1 agreement {report.top1_agreement:.3f}"
        )
    return report


def _manifest(
    model_id: str,
    gguf: GgufModel,
    precision: str,
    source: dict[str, str],
    folder: Path,
    graph: dict[str, Any],
    quality: QualityReport,
) -> Manifest:
    vocab, config = gguf.vocab, gguf.config
    end_of_turn = next(
        (i for i, t in enumerate(vocab.tokens) if t in {"<|im_end|>", "<|eot_id|>"}), None
    )
    stops = sorted({i for i in (vocab.eos_id, end_of_turn) if i is not None})
    quantization = None
    if precision == "int8":
        quantization = {
            "method": "MatMulNBits",
            "bits": 8,
            "block_size": INT8_BLOCK_SIZE,
            "symmetric": True,
            "accuracy_level": ACCURACY_LEVEL,
            "smoothing": f"SmoothQuant alpha={SMOOTH_ALPHA}, calibrated on built-in texts",
            "embedding": f"GatherBlockQuantized bits=8 block={EMBED_BLOCK}"
            + (", shared with the LM head" if config.tied_embeddings else ""),
        }
    return Manifest(
        id=model_id,
        architecture=config.architecture,
        parameters=gguf.weights.parameter_count(),
        precision=precision,
        context_length=config.context_length,
        config=asdict(config),
        bos_token_id=vocab.bos_id,
        eos_token_id=vocab.eos_id,
        end_of_turn_token_id=end_of_turn,
        stop_token_ids=stops,
        chat_template=vocab.chat_template,
        source=source,
        files=describe_files(folder, [MODEL_FILE, MODEL_FILE + ".data", TOKENIZER_FILE]),
        graph=graph,
        quantization=quantization,
        quality=quality.as_dict(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _build(
    work: Path, gguf: GgufModel, precision: str, source: Path, step: Callable[[str], None]
) -> tuple[dict[str, Any], QualityReport, dict[str, Any] | None]:
    """Write model.onnx(+.data) and tokenizer.json into work/out; returns graph figures,
    quality, and the quantization record of a gguf-precision build."""
    out = work / "out"
    step("build")
    raw = work / "fp32" / MODEL_FILE
    # INT8 and FP32 are checked against the FP32 graph (FP32 against its unoptimized self);
    # GGUF against its blocks at level 0 (prepare_gguf.py), with no FP32 graph at all.
    reference: Path | Predictions = raw
    if precision != "gguf":
        _save(build_decoder(gguf.config, gguf.weights), raw)
    step("quantize")
    record = None
    if precision == "gguf":
        # ~1,400 tokens: the level search decides on differences of 0.01 in agreement.
        text = LEVEL_SEARCH_TEXT + "\n" + CALIBRATION_TEXT + "\n" + BUILTIN_TEXT
        tokenizer = build_tokenizer(gguf.vocab)
        ids = tokenizer.encode(text).ids[: gguf.config.context_length]
        verify_ids = tokenizer.encode(BUILTIN_TEXT).ids
        raw, record, reference = search_levels(gguf, source, work, ids, verify_ids)
    elif precision == "int8":
        raw = work / "int8" / MODEL_FILE
        # More calibration tokens give steadier per-channel maxima (agreement 0.967 with
        # CALIBRATION_TEXT alone, 0.979 with both; benchmarks/RESULTS.md). The verify text is
        # thus seen in calibration: the benchmark's text is the independent measure.
        text = CALIBRATION_TEXT + "\n" + BUILTIN_TEXT
        ids = build_tokenizer(gguf.vocab).encode(text).ids
        stats = collect_stats(work / "fp32" / MODEL_FILE, ids, gguf.config)
        smoothed = build_decoder(gguf.config, smooth(gguf.config, gguf.weights, stats))
        _save(quantize_int8(smoothed, INT8_BLOCK_SIZE), raw)
        del smoothed
    step("optimize")
    out.mkdir()
    optimize_offline(raw, out / MODEL_FILE)
    heap.trim()
    # Compact JSON: the pretty-printed form is twice the size (3.5 MB for a 49k vocab).
    build_tokenizer(gguf.vocab).save(str(out / TOKENIZER_FILE), pretty=False)
    before, after = graph_stats(raw), graph_stats(out / MODEL_FILE)
    graph = {
        "optimization_level": OPTIMIZATION_LEVEL,
        "before": asdict(before),
        "after": asdict(after),
    }
    step("verify")
    quality = _verify(reference, out / MODEL_FILE, gguf, BUILTIN_TEXT)
    return graph, quality, record


def _publish(folder: Path, target: Path) -> None:
    """Make files world-readable (onnx writes external data 0600), then swap in atomically."""
    for path in folder.iterdir():
        path.chmod(0o644)
    folder.chmod(0o755)
    if target.exists():
        old = target.with_name(f".old-{target.name}-{folder.name}")
        target.rename(old)
        folder.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        folder.rename(target)


def prepare_model(
    models_dir: Path,
    gguf: Path | None = None,
    precision: Precision | Literal["auto"] = "int8",
    progress: ProgressCallback | None = None,
) -> Path:
    """Build (or find up to date) the model folder for `gguf` (default: SmolLM2-135M-Instruct).
    `auto`: `gguf` (the file's own blocks, exactly) for a quantized source, else `int8`."""
    if precision not in ("int8", "fp32", "gguf", "auto"):
        raise ModelError(f"unknown precision {precision!r} (int8, fp32, gguf or auto)")
    index = iter(range(1, len(STEPS) + 1))

    def step(name: str) -> None:
        _LOGGER.debug("prepare: %s", name)
        if progress is not None:
            progress(name, next(index), len(STEPS))

    step("fetch")
    source_path = gguf if gguf is not None else fetch_default_gguf()
    gguf_sha = sha256_file(source_path) if source_path.is_file() else ""
    if precision == "auto":
        precision = "gguf" if source_is_quantized(source_path) else "int8"
    model_id = model_id_for(source_path, precision)
    target = models_dir / model_id
    if gguf_sha and _is_current(target, gguf_sha):
        _LOGGER.info("model %s is up to date at %s", model_id, target)
        return target
    step("dequantize")
    # Raises Corrupt/Unsupported before anything is written. Precision gguf never needs the
    # float32 copies of the matrices it maps from their blocks.
    skip = exact_sources(source_path) if precision == "gguf" else frozenset[str]()
    model = load_gguf(source_path, skip)
    heap.trim()
    source = {"gguf": source_path.name, "gguf_path": str(source_path), "gguf_sha256": gguf_sha}
    if gguf is None:
        source["wheel"] = DEFAULT_SOURCE
    models_dir.mkdir(parents=True, exist_ok=True)
    # The work dir sits inside models_dir so the final rename stays on one filesystem.
    work = Path(tempfile.mkdtemp(prefix=f".partial-{model_id}-", dir=models_dir))
    try:
        graph, quality, record = _build(work, model, precision, source_path, step)
        out = work / "out"
        manifest = _manifest(model_id, model, precision, source, out, graph, quality)
        if record is not None:
            manifest = replace(manifest, quantization=record)
        (out / MANIFEST_NAME).write_text(
            manifest.to_json(),
            encoding="utf-8",
        )
        _publish(out, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _LOGGER.info("prepared %s at %s", model_id, target)
    return target
