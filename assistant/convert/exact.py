"""Which projections of a GGUF map exactly, fused as the graph uses them, with their levels.

q/k/v become one matrix and gate/up another, so that each pair shares one MatMulNBits and
one block sum of x; parts of different types are widened to a common exact encoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from assistant.convert.ggml_blocks import FLOAT_TYPES, BlockMatrix, concat_rows, decode_blocks
from assistant.convert.gguf_loader import LlamaConfig, open_reader
from assistant.model.errors import UnsupportedModelError

# Projection groups: the accuracy level is chosen (and recorded) per group.
GROUPS = ("qkv", "o", "gate_up", "down", "lm_head")
_PARTS = {
    "qkv": ("attn_q", "attn_k", "attn_v"),
    "o": ("attn_output",),
    "gate_up": ("ffn_gate", "ffn_up"),
    "down": ("ffn_down",),
}
_GRAPH_NAMES = {
    "qkv": "attn.qkv_proj",
    "o": "attn.o_proj",
    "gate_up": "mlp.gate_up_proj",
    "down": "mlp.down_proj",
}


def read_blocks(path: Path) -> tuple[dict[str, BlockMatrix], dict[str, str]]:
    """Every block-quantized tensor of the file decoded (name -> matrix), and every tensor's
    type name. A type that is neither float nor supported is an UnsupportedModelError."""
    reader = open_reader(path)
    blocks: dict[str, BlockMatrix] = {}
    types: dict[str, str] = {}
    for tensor in reader.tensors:
        type_name = tensor.tensor_type.name
        types[tensor.name] = type_name
        if type_name in FLOAT_TYPES or len(tensor.shape) != 2:
            continue
        cols, rows = (int(d) for d in tensor.shape)  # GGUF lists the fastest dimension first
        try:
            blocks[tensor.name] = decode_blocks(type_name, tensor.data, rows, cols)
        except UnsupportedModelError as err:
            raise UnsupportedModelError(f"tensor {tensor.name}: {err}") from err
    return blocks, types


def exact_sources(path: Path) -> frozenset[str]:
    """The GGUF tensors that `exact_projections` maps from their blocks (every part of their
    group block-quantized, and an untied output): their float32 copies are never needed."""
    reader = open_reader(path)
    quantized = {
        t.name
        for t in reader.tensors
        if t.tensor_type.name not in FLOAT_TYPES and len(t.shape) == 2
    }
    names = {t.name.split(".")[1] for t in reader.tensors if t.name.startswith("blk.")}
    found = {"output.weight"} & quantized
    for i in names:
        for parts in _PARTS.values():
            group = {f"blk.{i}.{part}.weight" for part in parts}
            if group <= quantized:
                found |= group
    return frozenset(found)


def exact_projections(
    config: LlamaConfig, blocks: Mapping[str, BlockMatrix], levels: Mapping[str, int]
) -> dict[str, tuple[BlockMatrix, int]]:
    """Graph projection name -> (fused exact matrix, accuracy level), for every projection
    whose parts are all block-quantized; the others stay float for the 8-bit path."""
    exact: dict[str, tuple[BlockMatrix, int]] = {}
    for i in range(config.n_layers):
        for group, parts in _PARTS.items():
            found = [blocks.get(f"blk.{i}.{part}.weight") for part in parts]
            matrices = [m for m in found if m is not None]
            if len(matrices) == len(parts):
                fused = matrices[0] if len(matrices) == 1 else concat_rows(matrices)
                exact[f"model.layers.{i}.{_GRAPH_NAMES[group]}"] = (fused, levels[group])
    if not config.tied_embeddings and "output.weight" in blocks:
        exact["lm_head"] = (blocks["output.weight"], levels["lm_head"])
    return exact


def group_of(graph_name: str) -> str:
    """The level group of a graph projection name (inverse of the names above)."""
    if graph_name == "lm_head":
        return "lm_head"
    return next(g for g, suffix in _GRAPH_NAMES.items() if graph_name.endswith(suffix))


def describe(exact: Mapping[str, tuple[BlockMatrix, int]], types: Mapping[str, str]) -> Any:
    """Manifest figures: source types, encodings per group, bytes of the exact weights."""
    encodings: dict[str, set[str]] = {}
    total = 0
    for name, (m, level) in exact.items():
        n, k = m.shape
        encodings.setdefault(group_of(name), set()).add(f"{m.bits}-bit/{m.block} level {level}")
        total += n * k * m.bits // 8 + m.scales.nbytes
        total += 0 if m.offsets is None else m.offsets.nbytes
    return {
        "source_types": sorted(set(types.values())),
        "groups": {g: sorted(e) for g, e in sorted(encodings.items())},
        "exact_weight_bytes": total,
    }
