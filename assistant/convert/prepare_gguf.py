"""Precision `gguf`: the source's own quantized blocks, mapped exactly (ggml_blocks, nbits).

Each projection group runs MatMulNBits at accuracy level 4 (int8 activations: fastest per
token) unless measurement says otherwise: the model is built with every group at level 4,
compared with the reference, and groups move to level 0 (fp32 activations: exact) one at a
time, in `SEARCH_ORDER`, until top-1 agreement reaches `TARGET_AGREEMENT`. Every step's
figures go into the manifest.

The reference is the same blocks at level 0 everywhere, the LM head included: the
dequantized weights to fp32 rounding (ggml_blocks.py), without ever holding them in fp32.
A float32 reference graph was 4 copies of the fp32 weights at peak (arrays, protobuf,
serializer, session): a 1.5B model did not prepare in 23 GB. The reference runs once, its
predictions are kept, and it is unloaded before any candidate is built.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from assistant import heap
from assistant.convert.exact import GROUPS, describe, exact_projections, read_blocks
from assistant.convert.ggml_blocks import FLOAT_TYPES, BlockMatrix
from assistant.convert.gguf_loader import GgufModel, open_reader
from assistant.convert.graph import EMBED_WEIGHT, LM_HEAD_EXACT, LM_HEAD_WEIGHT, build_decoder
from assistant.convert.graph_io import ExternalData
from assistant.convert.nbits import EXACT_LEVEL, INT8_ACTIVATIONS_LEVEL, Shifts
from assistant.convert.optimize import optimize_offline
from assistant.convert.outliers import MAX_CHANNELS, RATIO, shift_outliers
from assistant.convert.quality import Predictions, QualityReport, compare, predictions
from assistant.convert.quantize import (
    EMBED_BLOCK,
    quantize_blocks_symmetric,
    quantize_tied_embedding,
    topological_sort,
)
from assistant.convert.smooth import LayerStats, collect_stats
from assistant.model.session import open_session

# Agreement the level search aims for on the calibration text (benchmarks/quality.py checks
# 0.97 on an independent text). The LM head stays at level 4: an 8-bit head has no fast
# fp32-activation kernel in ORT 1.32 (measured 12 tok/s decode at level 0).
TARGET_AGREEMENT = 0.975
SEARCH_ORDER = ("qkv", "gate_up", "o", "down")
# The embedding's 8-bit codes and scales (quantize.py's layout).
Embedding = tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]


@dataclass(frozen=True)
class LevelStep:
    """One measured configuration of the level search."""

    levels: dict[str, int]
    quality: QualityReport


def source_is_quantized(path: Path) -> bool:
    """Whether the file's layer weights are block-quantized (what `--precision auto` asks;
    a quantized embedding alone does not count)."""
    return any(
        t.name.startswith("blk.") and t.tensor_type.name not in FLOAT_TYPES
        for t in open_reader(path).tensors
    )


def build_gguf_graph(
    gguf: GgufModel,
    blocks: dict[str, BlockMatrix],
    levels: dict[str, int],
    stats: list[LayerStats] | None = None,
    embedding: Embedding | None = None,
    sink: ExternalData | None = None,
) -> onnx.ModelProto:
    """The decoder with every fully block-quantized projection exact at its group's level;
    float projections stay MatMul (FP32, exact), and a Q8_0 embedding is used code for code
    (others are requantized to 8 bits, blocks of 32; `embedding`, from embedding_codes,
    does that once for several builds). With calibration `stats`, outlier input channels
    are shifted by powers of two (outliers.py)."""
    exact = exact_projections(gguf.config, blocks, levels)
    weights, shifts = gguf.weights, dict[str, Shifts]()
    if stats is not None:
        weights, exact, shifts = shift_outliers(gguf.config, weights, exact, stats)
    embedding = embedding or embedding_codes(gguf, blocks)
    if embedding is not None:
        # The 8-bit codes replace the float embedding (and a tied head) below: a one-row
        # stand-in spares two float copies of it (1.9 GB at 1.5B) that would be dropped.
        weights = replace(weights, token_embd=weights.token_embd[:1])
    model = build_decoder(gguf.config, weights, exact=exact, shifts=shifts, sink=sink)
    quantize_tied_embedding(model, levels["lm_head"], exact=embedding)
    topological_sort(model.graph)
    return model


def embedding_codes(gguf: GgufModel, blocks: dict[str, BlockMatrix]) -> Embedding | None:
    """The embedding's 8-bit codes [vocab, blocks, 32] and scales: a Q8_0 embedding's own,
    else the float weights requantized; None when its rows are not whole blocks of 32 (it
    stays float)."""
    embed = _q8_embedding(blocks)
    if embed is not None:
        return embed.packed(), embed.scales
    if gguf.config.hidden % EMBED_BLOCK:
        return None
    return quantize_blocks_symmetric(gguf.weights.token_embd, EMBED_BLOCK)


def _q8_embedding(blocks: dict[str, BlockMatrix]) -> BlockMatrix | None:
    embed = blocks.get("token_embd.weight")
    return embed if embed is not None and (embed.bits, embed.block) == (8, EMBED_BLOCK) else None


def build_reference(
    gguf: GgufModel, blocks: dict[str, BlockMatrix], sink: ExternalData | None = None
) -> onnx.ModelProto:
    """The dequantized model: every exact projection at level 0 (fp32 activations), the tied
    LM head too when the embedding is block-quantized; the embedding Gather stays fp32."""
    exact = exact_projections(gguf.config, blocks, dict.fromkeys(GROUPS, EXACT_LEVEL))
    if gguf.config.tied_embeddings and "token_embd.weight" in blocks:
        exact[LM_HEAD_EXACT] = (blocks["token_embd.weight"], EXACT_LEVEL)
    return build_decoder(gguf.config, gguf.weights, exact=exact, sink=sink)


def _reference_predictions(
    model: Path, token_ids: list[int], verify_ids: list[int]
) -> tuple[Predictions, Predictions]:
    session = open_session(model, threads=None)
    return predictions(session, token_ids), predictions(session, verify_ids)


def _compare(reference: Predictions, model: Path, token_ids: list[int]) -> QualityReport:
    return compare(reference, open_session(model, threads=None), token_ids)


def search_levels(
    gguf: GgufModel,
    source: Path,
    work: Path,
    token_ids: list[int],
    verify_ids: list[int],
) -> tuple[Path, dict[str, Any], Predictions]:
    """Build, measure, and move groups to level 0 until agreement is reached; returns the
    (unoptimized) model of the chosen step, the manifest's `quantization` record, and the
    reference's predictions on `verify_ids` (for prepare's final check)."""
    blocks, types = read_blocks(source)
    heap.trim()
    levels = dict.fromkeys(GROUPS, INT8_ACTIVATIONS_LEVEL)
    reference = work / "reference" / "model.onnx"
    # Each graph's weights go to its data file as they are made (graph_io.ExternalData).
    sink = ExternalData(reference)
    sink.save(build_reference(gguf, blocks, sink))
    heap.trim()
    # Outlier channels from the same text: their activation maxima on the reference.
    stats = collect_stats(reference, token_ids, gguf.config)
    ref, verify = _reference_predictions(reference, token_ids, verify_ids)
    heap.trim()
    steps: list[LevelStep] = []
    pending = list(SEARCH_ORDER)
    embedding = embedding_codes(gguf, blocks)
    while True:
        raw = work / f"gguf-{len(steps)}" / "model.onnx"
        # The float embedding (a stand-in) and head stay inline: the 8-bit step reads them.
        sink = ExternalData(raw, keep=(EMBED_WEIGHT, LM_HEAD_WEIGHT))
        sink.save(build_gguf_graph(gguf, blocks, levels, stats, embedding, sink))
        heap.trim()
        optimized = raw.parent / "opt" / "model.onnx"
        optimized.parent.mkdir()
        optimize_offline(raw, optimized)
        report = _compare(ref, optimized, token_ids)
        heap.trim()
        steps.append(LevelStep(dict(levels), report))
        if report.top1_agreement >= TARGET_AGREEMENT or not pending:
            break
        levels[pending.pop(0)] = EXACT_LEVEL
    exact = exact_projections(gguf.config, blocks, levels)
    shifts = shift_outliers(gguf.config, gguf.weights, exact, stats)[2]
    record = {
        "method": "GGUF blocks mapped exactly: MatMulNBits without zero points; block sums "
        "of x (extra output rows) times the blocks' offsets for types with a minimum; "
        "outlier input channels divided by powers of two and added back exactly",
        "accuracy_levels": levels,
        "level_search": [
            {
                "levels": s.levels,
                "top1_agreement": round(s.quality.top1_agreement, 4),
                "ppl_ratio": round(s.quality.ppl_ratio, 5),
            }
            for s in steps
        ],
        "target_agreement": TARGET_AGREEMENT,
        "calibration_tokens": len(token_ids),
        "shifted_channels": {
            "ratio_to_median": RATIO,
            "max_per_input": MAX_CHANNELS,
            "count": sum(len(s.channels) for s in shifts.values()),
            "inputs": len(shifts),
        },
        **describe(exact, types),
        "embedding": "GGUF Q8_0 codes as they are"
        if _q8_embedding(blocks) is not None
        else "requantized to 8 bits, blocks of 32",
        "reference": "the GGUF's blocks at accuracy level 0 (its dequantized weights)",
    }
    return raw, record, verify
