"""The decoder graph's typed inputs and outputs (names: assistant.model.io_names; layout
and cache semantics: the docstring of graph.py)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

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


class ExternalData:
    """Initializers written to `<model>.data` as the graph is built, so that the model never
    holds its weights in protobuf (a second copy of them, then the serializer's third).

    Arrays under `threshold` bytes, and those named in `keep` (which a later step reads
    back from the proto), stay inline; `save` moves whatever is inline and large by then.
    """

    def __init__(self, model_path: Path, keep: Collection[str] = (), threshold: int = 1024):
        model_path.parent.mkdir(parents=True, exist_ok=True)
        self.model_path = model_path
        self.location = model_path.name + ".data"
        self.keep = frozenset(keep)
        self.threshold = threshold
        self._file = (model_path.parent / self.location).open("wb")

    def __call__(self, array: npt.NDArray[Any], name: str) -> onnx.TensorProto:
        """The initializer `name` for `array`: a reference into the data file, or inline."""
        if array.nbytes < self.threshold or name in self.keep:
            return numpy_helper.from_array(array, name)
        tensor = onnx.TensorProto(name=name, dims=array.shape)
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        self._write(tensor, np.ascontiguousarray(array).data.cast("B"))
        return tensor

    def _write(self, tensor: onnx.TensorProto, data: Any) -> None:
        # Page-aligned offsets: ORT can map such tensors instead of copying them.
        offset = -(-self._file.tell() // 4096) * 4096
        self._file.seek(offset)
        self._file.write(data)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", offset), ("length", len(data))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)

    def save(self, model: onnx.ModelProto) -> None:
        """Move the remaining large inline initializers out, then write the model."""
        for tensor in model.graph.initializer:
            if tensor.HasField("raw_data") and len(tensor.raw_data) >= self.threshold:
                self._write(tensor, tensor.raw_data)
                tensor.ClearField("raw_data")
        self._file.close()
        onnx.save_model(model, self.model_path)
