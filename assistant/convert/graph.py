"""Build the FP32 decoder graph (onnxruntime-genai layout) from float32 weights with onnx.helper.

Graph IO (all names fixed; map outputs by name, not position):

- ``input_ids`` int64 [batch, seq]
- ``attention_mask`` int64 [batch, total] with total = past + seq; 1 for real tokens, rows
  RIGHT-padded (ones first, then zeros). Only each row's sum is read: GroupQueryAttention
  derives ``seqlens_k[b] = sum(mask[b]) - 1`` and ``total_sequence_length = total``.
- ``past_key_values.{i}.key`` / ``.value`` float32 [batch, n_kv_heads, past, head_dim]
- ``logits`` float32 [batch, seq, vocab]
- ``present.{i}.key`` / ``.value`` float32 [batch, n_kv_heads, max(total, past), head_dim]

How GroupQueryAttention (CPU, separate past/present buffers) uses them:

- Prefill (``seq == total``, past of length 0): every row starts at position 0; row b's
  valid tokens are ``0 .. seqlens_k[b]``. Padded positions produce garbage logits and K/V
  that later steps never attend to.
- Decode (``seq == 1``, past of length P, mask width P + 1): row b's new token gets rotary
  position ``seqlens_k[b]`` and is written to present index ``seqlens_k[b]``; present copies
  ``past[b, :, :seqlens_k[b]]`` before it. Rows of different lengths therefore share one
  past tensor: row b's valid cache is its first ``sum(mask[b]) - 1`` entries.
- Continuing a prompt (``1 < seq < total``) is allowed for batch 1 only (an ORT rule).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from assistant.convert.ggml_blocks import BlockMatrix
from assistant.convert.gguf_loader import F32, LlamaConfig, LlamaWeights
from assistant.convert.graph_io import (
    MS_DOMAIN,
    assemble,
    past_key,
    past_value,
    present_key,
    present_value,
)
from assistant.convert.nbits import Shifts, nbits_linear
from assistant.model.io_names import ATTENTION_MASK, INPUT_IDS, LOGITS, LOGITS_TO_KEEP

EMBED_WEIGHT = "model.embed_tokens.weight"
LM_HEAD_WEIGHT = "lm_head.weight_t"
EMBED_NODE = "/model/embed_tokens/Gather"
LM_HEAD_NODE = "/lm_head/MatMul"
LM_HEAD_EXACT = "lm_head"  # `exact` key of an untied output projection
_MS_OPS = {
    "GroupQueryAttention",
    "SkipSimplifiedLayerNormalization",
    "MatMulNBits",
    "GatherBlockQuantized",
}
# Graph name of a projection -> its exact block encoding and MatMulNBits accuracy level.
ExactWeights = Mapping[str, tuple[BlockMatrix, int]]


def rotary_cache(config: LlamaConfig, max_positions: int) -> tuple[F32, F32]:
    """cos/sin tables [max_positions, head_dim / 2], the layout GQA's do_rotary expects."""
    half = config.head_dim // 2
    inv_freq = 1.0 / (
        config.rope_theta ** (np.arange(half, dtype=np.float64) * 2 / config.head_dim)
    )
    angles = np.outer(np.arange(max_positions, dtype=np.float64), inv_freq)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


class _GraphBuilder:
    """Accumulates nodes and initializers; one method per block of the decoder."""

    def __init__(
        self,
        config: LlamaConfig,
        exact: ExactWeights | None = None,
        shifts: Mapping[str, Shifts] | None = None,
        sink: Callable[[np.ndarray, str], TensorProto] | None = None,
    ) -> None:
        self.config = config
        self.exact = exact or {}
        self.shifts = shifts or {}
        self.sink = sink or numpy_helper.from_array
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []

    def weight(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(self.sink(np.ascontiguousarray(array), name))
        return name

    def node(
        self,
        op: str,
        inputs: list[str],
        name: str,
        n_out: int = 1,
        outputs: list[str] | None = None,
        **attrs: Any,
    ) -> list[str]:
        outputs = outputs or [f"{name}/output_{k}" for k in range(n_out)]
        domain = MS_DOMAIN if op in _MS_OPS else ""
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))
        return outputs

    def linear(self, x: str, w: Callable[[], F32], name: str, bias: F32 | None = None) -> str:
        """x @ w.T (+ bias); w() is [out, in] as stored in GGUF, the graph holds [in, out].
        A projection with an exact block encoding becomes MatMulNBits (w() is not called)."""
        if name in self.exact:
            matrix, level = self.exact[name]
            y = nbits_linear(self, x, matrix, name, level, self.shifts.get(name))
        else:
            (y,) = self.node("MatMul", [x, self.weight(f"{name}.weight", w().T)], f"/{name}/MatMul")
        if bias is not None:
            (y,) = self.node("Add", [y, self.weight(f"{name}.bias", bias)], f"/{name}/Add")
        return y

    def mask_inputs(self) -> tuple[str, str]:
        """seqlens_k (int32 [B]) and total_sequence_length (int32 [1]) from the mask."""
        one = self.weight("/model/const_one", np.array(1, dtype=np.int64))
        axes = self.weight("/model/const_axes_1", np.array([1], dtype=np.int64))
        (total,) = self.node(
            "ReduceSum", [ATTENTION_MASK, axes], "/model/mask/ReduceSum", keepdims=0
        )
        (last,) = self.node("Sub", [total, one], "/model/mask/Sub")
        (seqlens,) = self.node("Cast", [last], "/model/mask/seqlens_k", to=TensorProto.INT32)
        (shape,) = self.node("Shape", [ATTENTION_MASK], "/model/mask/Shape", start=1, end=2)
        (total_len,) = self.node("Cast", [shape], "/model/mask/total_len", to=TensorProto.INT32)
        return seqlens, total_len

    def attention(
        self, i: int, x: str, weights: LlamaWeights, mask: tuple[str, str], rotary: tuple[str, str]
    ) -> str:
        cfg, layer = self.config, weights.layers[i]
        # One packed QKV projection: GQA splits it itself when key/value inputs are empty.
        bias = None
        if layer.bq is not None and layer.bk is not None and layer.bv is not None:
            bias = np.concatenate([layer.bq, layer.bk, layer.bv])
        qkv = self.linear(
            x,
            lambda: np.concatenate([layer.wq, layer.wk, layer.wv], axis=0),
            f"model.layers.{i}.attn.qkv_proj",
            bias,
        )
        name = f"/model/layers.{i}/attn/GroupQueryAttention"
        inputs = [qkv, "", "", past_key(i), past_value(i), *mask, *rotary]
        attn, _, _ = self.node(
            "GroupQueryAttention",
            inputs,
            name,
            outputs=[f"{name}/output_0", present_key(i), present_value(i)],
            num_heads=cfg.n_heads,
            kv_num_heads=cfg.n_kv_heads,
            do_rotary=1,
            rotary_interleaved=int(cfg.rope_interleaved),
            scale=float(1.0 / np.sqrt(cfg.head_dim)),
        )
        return self.linear(attn, lambda: layer.wo, f"model.layers.{i}.attn.o_proj")

    def mlp(self, i: int, x: str, weights: LlamaWeights) -> str:
        layer = weights.layers[i]
        fused = f"model.layers.{i}.mlp.gate_up_proj"
        if fused in self.exact:
            # One matmul (one block sum of x) for both, split after.
            both = self.linear(x, lambda: layer.w_gate, fused)
            sizes = self.weight(f"{fused}.split", np.array([self.config.ffn] * 2, np.int64))
            gate, up = self.node("Split", [both, sizes], f"/{fused}/Split", n_out=2, axis=-1)
        else:
            gate = self.linear(x, lambda: layer.w_gate, f"model.layers.{i}.mlp.gate_proj")
            up = self.linear(x, lambda: layer.w_up, f"model.layers.{i}.mlp.up_proj")
        # SiLU as x * sigmoid(x): two plain ops that ORT's optimizer fuses where it can.
        (sig,) = self.node("Sigmoid", [gate], f"/model/layers.{i}/mlp/act/Sigmoid")
        (act,) = self.node("Mul", [gate, sig], f"/model/layers.{i}/mlp/act/Mul")
        (prod,) = self.node("Mul", [act, up], f"/model/layers.{i}/mlp/Mul")
        return self.linear(prod, lambda: layer.w_down, f"model.layers.{i}.mlp.down_proj")

    def skip_norm(self, x: str, residual: str, gamma: F32, name: str) -> tuple[str, str]:
        """(normed, x + residual) in one fused op."""
        outs = self.node(
            "SkipSimplifiedLayerNormalization",
            [x, residual, self.weight(f"{name}.weight", gamma)],
            f"/{name}/SkipLayerNorm",
            n_out=4,
            epsilon=self.config.rms_eps,
        )
        return outs[0], outs[3]


def build_decoder(
    config: LlamaConfig,
    weights: LlamaWeights,
    max_positions: int | None = None,
    exact: ExactWeights | None = None,
    shifts: Mapping[str, Shifts] | None = None,
    sink: Callable[[np.ndarray, str], TensorProto] | None = None,
) -> onnx.ModelProto:
    """The FP32 decoder; rotary tables cover `max_positions` (default: the model's context).
    Projections named in `exact` are MatMulNBits on their GGUF blocks instead; `shifts`
    names the input channels of some of them that `weights` already divide (outliers.py).
    `sink(array, name)` makes each initializer (graph_io.ExternalData: straight to file)."""
    b = _GraphBuilder(config, exact, shifts, sink)
    positions = max_positions or config.context_length
    cos, sin = rotary_cache(config, positions)
    rotary = (b.weight("cos_cache", cos), b.weight("sin_cache", sin))
    mask = b.mask_inputs()

    embed = b.weight(EMBED_WEIGHT, weights.token_embd)
    (hidden,) = b.node("Gather", [embed, INPUT_IDS], EMBED_NODE)
    residual = hidden
    (x,) = b.node(
        "SimplifiedLayerNormalization",
        [hidden, b.weight("model.layers.0.input_layernorm.weight", weights.layers[0].attn_norm)],
        "/model/layers.0/input_layernorm/LayerNorm",
        axis=-1,
        epsilon=config.rms_eps,
        stash_type=1,
    )
    for i in range(config.n_layers):
        attn = b.attention(i, x, weights, mask, rotary)
        x, residual = b.skip_norm(
            attn, residual, weights.layers[i].ffn_norm, f"model.layers.{i}.post_attention_layernorm"
        )
        mlp = b.mlp(i, x, weights)
        if i + 1 < config.n_layers:
            x, residual = b.skip_norm(
                mlp,
                residual,
                weights.layers[i + 1].attn_norm,
                f"model.layers.{i + 1}.input_layernorm",
            )
        else:
            x, residual = b.skip_norm(mlp, residual, weights.output_norm, "model.norm")

    # The LM head keeps its own [hidden, vocab] copy even when tied: MatMul needs it
    # transposed; the INT8 step folds both back into one shared quantized tensor.
    kept = _keep_last(b, x)
    if LM_HEAD_EXACT in b.exact:
        matrix, level = b.exact[LM_HEAD_EXACT]
        logits = nbits_linear(b, kept, matrix, LM_HEAD_EXACT, level)
        b.node("Identity", [logits], "/lm_head/Identity", outputs=[LOGITS])
    else:
        lm_name = b.weight(LM_HEAD_WEIGHT, weights.lm_head().T)
        b.node("MatMul", [kept, lm_name], LM_HEAD_NODE, outputs=[LOGITS])
    return assemble(config, b.nodes, b.initializers)


def _keep_last(b: _GraphBuilder, x: str) -> str:
    """`x[:, -logits_to_keep:]` (all positions when it is 0).

    A prompt of S tokens otherwise pays the LM head (a fifth of this model's compute) and an
    [S, vocab] logits tensor for S - 1 positions nobody reads. A required input, not one
    with a default: onnxruntime's IO binding cannot override an initializer.
    """
    (neg,) = b.node("Neg", [LOGITS_TO_KEEP], "/lm_head/keep/Neg")
    axes = b.weight("/lm_head/keep/axes", np.array([1], dtype=np.int64))
    (starts,) = b.node(
        "Unsqueeze",
        [neg, b.weight("/lm_head/keep/zero", np.array([0], dtype=np.int64))],
        "/lm_head/keep/Unsqueeze",
    )
    ends = b.weight("/lm_head/keep/ends", np.array([np.iinfo(np.int64).max], dtype=np.int64))
    (kept,) = b.node("Slice", [x, starts, ends, axes], "/lm_head/keep/Slice")
    return kept
