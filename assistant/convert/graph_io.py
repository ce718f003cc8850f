"""The decoder graph's typed inputs and outputs (names: assistant.model.io_names; layout
and cache semantics: the docstring of graph.py)."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from assistant.convert.gguf_loader import LlamaConfig
from assistant.model.io_names import ATTENTION_MASK, INPUT_IDS, LOGITS, LOGITS_TO_KEEP

OPSET = 21
MS_DOMAIN = "com.microsoft"


def past_key(i: int) -> str:
    """Input name of layer i's cached keys."""
    return f"past_key_values.{i}.key"


def past_value(i: int) -> str:
    """Input name of layer i's cached values."""
    return f"past_key_values.{i}.value"


def present_key(i: int) -> str:
    """Output name of layer i's keys after this step."""
    return f"present.{i}.key"


def present_value(i: int) -> str:
    """Output name of layer i's values after this step."""
    return f"present.{i}.value"


def assemble(
    config: LlamaConfig, nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto]
) -> onnx.ModelProto:
    """The model around the decoder's nodes: typed inputs and outputs, opsets."""
    kv_shape: list[str | int] = [
        "batch_size",
        config.n_kv_heads,
        "past_sequence_length",
        config.head_dim,
    ]
    present_shape: list[str | int] = [
        "batch_size",
        config.n_kv_heads,
        "total_sequence_length",
        config.head_dim,
    ]
    inputs = [
        helper.make_tensor_value_info(
            INPUT_IDS, TensorProto.INT64, ["batch_size", "sequence_length"]
        ),
        helper.make_tensor_value_info(
            ATTENTION_MASK, TensorProto.INT64, ["batch_size", "total_sequence_length"]
        ),
    ]
    # 0 = every position (what the plain genai layout returns).
    inputs.append(helper.make_tensor_value_info(LOGITS_TO_KEEP, TensorProto.INT64, []))
    outputs = [
        helper.make_tensor_value_info(
            LOGITS, TensorProto.FLOAT, ["batch_size", "logits_length", config.vocab]
        )
    ]
    for i in range(config.n_layers):
        inputs += [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, kv_shape)
            for n in (past_key(i), past_value(i))
        ]
        outputs += [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, present_shape)
            for n in (present_key(i), present_value(i))
        ]
    graph = helper.make_graph(nodes, "decoder", inputs, outputs, initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
        producer_name="edge-assistant",
    )
    model.ir_version = 10
    return model
