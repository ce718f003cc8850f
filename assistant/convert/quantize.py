"""Block-wise 8-bit weights: MatMulNBits for the projections, one shared tensor for the embedding.

Why block-wise weight-only: per-tensor activation scales (`quantize_dynamic`) wreck this model
family (outliers in the down projections); 8-bit weights with a scale per block of 32 inputs
keep the FP32 behaviour while reading a quarter of the bytes per token.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import numpy as np
import onnx
from onnx import helper, numpy_helper

from assistant.convert.graph import (
    EMBED_NODE,
    EMBED_WEIGHT,
    LM_HEAD_NODE,
    LM_HEAD_WEIGHT,
)
from assistant.convert.graph_io import MS_DOMAIN
from assistant.model.errors import ModelError

_LOGGER = logging.getLogger(__name__)

# The embedding is quantized in blocks of 32 whatever the projections use: GGUF ships it as
# Q8_0 (symmetric 8-bit, blocks of 32), so this block size re-expresses it almost exactly.
EMBED_BLOCK = 32
# MatMulNBits and GatherBlockQuantized both read 8-bit codes as unsigned with this offset.
ZERO_POINT_8BIT = 128
# MatMulNBits compute type. 4 = int8 activations (quantized per block on the fly), the only
# fast 8-bit kernel on CPU in ORT 1.32; levels 0-3 dequantize the whole weight matrix on every
# call (measured: 4 tok/s decode against 94 at level 4 for SmolLM2-135M). Level 4 costs some
# fidelity: top-1 agreement with FP32 0.959 against 0.980 (benchmarks/RESULTS.md).
ACCURACY_LEVEL = 4


def quantize_blocks_symmetric(weight: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """[rows, cols] -> (uint8 codes [rows, cols/block, block], scales [rows, cols/block])."""
    rows, cols = weight.shape
    blocks = weight.reshape(rows, cols // block, block).astype(np.float32)
    amax = np.abs(blocks).max(axis=-1)
    scales = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(blocks / scales[..., None]), -127, 127) + ZERO_POINT_8BIT
    return codes.astype(np.uint8), scales


def _initializer(graph: onnx.GraphProto, name: str) -> onnx.TensorProto:
    for init in graph.initializer:
        if init.name == name:
            return cast(onnx.TensorProto, init)
    raise ModelError(f"graph has no initializer {name!r}")


def _remove(graph: onnx.GraphProto, node_names: set[str], init_names: set[str]) -> None:
    keep_nodes = [n for n in graph.node if n.name not in node_names]
    keep_inits = [i for i in graph.initializer if i.name not in init_names]
    del graph.node[:]
    graph.node.extend(keep_nodes)
    del graph.initializer[:]
    graph.initializer.extend(keep_inits)


def quantize_tied_embedding(
    model: onnx.ModelProto,
    accuracy_level: int | None,
    exact: tuple[np.ndarray, np.ndarray] | None = None,
) -> bool:
    """Replace the embedding Gather (and the LM head when tied) with one shared 8-bit tensor.

    `exact`: the GGUF's own 8-bit codes [vocab, blocks, 32] and scales [vocab, blocks] (a
    Q8_0 embedding), used as they are instead of requantizing the float weights.
    Returns True when the LM head was rewritten too (the weights were tied).
    """
    graph = model.graph
    embed = numpy_helper.to_array(_initializer(graph, EMBED_WEIGHT))
    vocab, hidden = embed.shape
    if hidden % EMBED_BLOCK:
        _LOGGER.info(
            "hidden size %d is not a multiple of %d; embedding stays FP32", hidden, EMBED_BLOCK
        )
        return False
    # An exactly mapped untied head (MatMulNBits already) has no float initializer.
    heads = [i for i in graph.initializer if i.name == LM_HEAD_WEIGHT]
    tied = bool(heads) and bool(np.array_equal(numpy_helper.to_array(heads[0]).T, embed))
    codes, scales = quantize_blocks_symmetric(embed, EMBED_BLOCK) if exact is None else exact
    # From the codes: with `exact`, the float embedding may be a one-row stand-in
    # (prepare_gguf.py), never read.
    vocab = int(codes.shape[0])
    gather = next(n for n in graph.node if n.name == EMBED_NODE)
    ids_name, out_name = gather.input[1], gather.output[0]

    # GatherBlockQuantized wants scales of the data's rank; MatMulNBits wants [N, blocks].
    # The codes ([vocab, blocks, 32]) are stored once and read by both.
    graph.initializer.extend(
        [
            numpy_helper.from_array(codes, "embed_tokens.q8"),
            numpy_helper.from_array(scales[..., None], "embed_tokens.q8_scales_3d"),
            numpy_helper.from_array(np.array([0, 0, hidden], dtype=np.int64), "embed_tokens.shape"),
        ]
    )
    new_nodes = [
        helper.make_node(
            "GatherBlockQuantized",
            ["embed_tokens.q8", ids_name, "embed_tokens.q8_scales_3d"],
            [out_name + "_blocks"],
            name=EMBED_NODE + "BlockQuantized",
            domain=MS_DOMAIN,
            gather_axis=0,
            quantize_axis=2,
            block_size=EMBED_BLOCK,
            bits=8,
        ),
        helper.make_node(
            "Reshape",
            [out_name + "_blocks", "embed_tokens.shape"],
            [out_name],
            name=EMBED_NODE + "/Reshape",
        ),
    ]
    removed_nodes, removed_inits = {EMBED_NODE}, {EMBED_WEIGHT}
    if tied:
        head = next(n for n in graph.node if n.name == LM_HEAD_NODE)
        graph.initializer.append(numpy_helper.from_array(scales, "embed_tokens.q8_scales"))
        attrs: dict[str, Any] = {"K": hidden, "N": vocab, "bits": 8, "block_size": EMBED_BLOCK}
        if accuracy_level:
            attrs["accuracy_level"] = accuracy_level
        new_nodes.append(
            helper.make_node(
                "MatMulNBits",
                [head.input[0], "embed_tokens.q8", "embed_tokens.q8_scales"],
                list(head.output),
                name=LM_HEAD_NODE + "NBits",
                domain=MS_DOMAIN,
                **attrs,
            )
        )
        removed_nodes.add(LM_HEAD_NODE)
        removed_inits.add(LM_HEAD_WEIGHT)
    _remove(graph, removed_nodes, removed_inits)
    graph.node.extend(new_nodes)
    return tied


def quantize_int8(
    model: onnx.ModelProto,
    block_size: int = 32,
    accuracy_level: int | None = ACCURACY_LEVEL,
    symmetric: bool = True,
) -> onnx.ModelProto:
    """The INT8 model: every weight MatMul -> MatMulNBits(bits=8), embedding -> 8-bit blocks."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (  # noqa: PLC0415
        MatMulNBitsQuantizer,
    )

    # The quantizer logs every node at INFO (and calls logging.basicConfig on import).
    logging.getLogger(MatMulNBitsQuantizer.__module__).setLevel(logging.WARNING)
    tied = quantize_tied_embedding(model, accuracy_level)
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=8,
        block_size=block_size,
        is_symmetric=symmetric,
        accuracy_level=accuracy_level,
        op_types_to_quantize=("MatMul",),
        nodes_to_exclude=[LM_HEAD_NODE] if tied else [],
    )
    quantizer.process()
    result: onnx.ModelProto = quantizer.model.model
    # The quantizer leaves nodes in insertion order; ORT needs a topological order to save.
    topological_sort(result.graph)
    return result


def topological_sort(graph: onnx.GraphProto) -> None:
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ModelError("quantized graph has a cycle or a dangling input")
        done = {id(n) for n in ready}
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if id(n) not in done]
    del graph.node[:]
    graph.node.extend(ordered)
