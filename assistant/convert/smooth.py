"""SmoothQuant-style channel scaling before INT8: move activation outliers into the weights.

MatMulNBits' fast CPU kernel (accuracy_level 4) quantizes its *input* to int8 in blocks of
32 channels; a few channels with huge activations (after RMSNorm gammas, and into the down
projections) then swamp the rest of their block. Dividing such a channel by s and
multiplying the matching weight column by s leaves the FP32 function unchanged, and with
s = max|x|^a / max|W|^(1-a) spreads the difficulty between activations and weights.

The 1/s is folded into whatever produces the activation, so no op is added:
- qkv and gate/up inputs: the preceding RMSNorm gamma;
- down_proj input (silu(gate) * up): the rows of up_proj;
- o_proj input (attention output): the rows of v_proj; one scale per KV-head channel,
  shared by the query heads that read that KV head.
The LM head is left alone: its weight is the (tied) embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from assistant.convert.gguf_loader import F32, LayerWeights, LlamaConfig, LlamaWeights

ALPHA = 0.5  # 0.3 / 0.5 / 0.7 measured; 0.5 keeps the most top-1 agreement on SmolLM2
# Tokens per calibration call (the KV cache carries the text across calls).
CHUNK = 256
# Calibration input: distinct from the texts that quality is measured on. A chat turn and
# prose, so that the ChatML markers' activations are seen too.
CALIBRATION_TEXT = (
    "<|im_start|>system\nYou are a helpful home assistant.<|im_end|>\n<|im_start|>user\n"
    "The living room feels cold in the evening. What should I check first?<|im_end|>\n"
    "<|im_start|>assistant\nStart with the windows and the front door. Feel along the frames "
    "for draughts, and fit foam strips where cold air comes in. Close the curtains as soon as "
    "it gets dark, and keep furniture away from the radiators so that warm air can move "
    "around the room. If a radiator is cold at the top, it needs bleeding.<|im_end|>\n"
    "Spring is a good time to wash windows, clear out the shed and check the garden hose for "
    "cracks. In summer, shade south-facing rooms during the day and open windows on both "
    "sides of the house at night to let cool air through. A dishwasher run only when full, "
    "at 50 degrees, uses less water than washing the same dishes by hand; 3 or 4 loads a "
    "week are enough for most families of four."
)
# The projections whose inputs are measured, per layer: graph.py's node names. The FP32
# graph has MatMul with gate and up apart; an exact GGUF graph (prepare_gguf.py's level-0
# reference) has MatMulNBits with gate/up fused. Either kind works.
_PROJECTIONS = {
    "attn_in": ("attn.qkv_proj",),
    "attn_out": ("attn.o_proj",),
    "ffn_in": ("mlp.gate_proj", "mlp.gate_up_proj"),
    "down_in": ("mlp.down_proj",),
}
_OPS = ("MatMul", "MatMulNBits")


@dataclass(frozen=True)
class LayerStats:
    """Per-channel max |activation| at the inputs of one layer's projections."""

    attn_in: F32
    attn_out: F32
    ffn_in: F32
    down_in: F32


def collect_stats(fp32_model: Path, token_ids: list[int], config: LlamaConfig) -> list[LayerStats]:
    """Run the FP32 graph on calibration tokens with the projection inputs exposed."""
    from assistant.model.session import open_session  # noqa: PLC0415

    model = onnx.load(fp32_model, load_external_data=False)
    inputs = {node.name: node.input[0] for node in model.graph.node}
    wanted = [
        next(
            inputs[key]
            for proj in projections
            for op in _OPS
            if (key := f"/model.layers.{i}.{proj}/{op}") in inputs
        )
        for i in range(config.n_layers)
        for projections in _PROJECTIONS.values()
    ]
    # Reduced in the graph to a max |x| per channel: the activations themselves, all exposed
    # at once, are 2 GB at 1.5B parameters over 1,400 tokens (and ORT's copy as much again).
    axes = "calibration/axes"
    model.graph.initializer.append(numpy_helper.from_array(np.array([0, 1], np.int64), axes))
    outputs = []
    for k, name in enumerate(wanted):
        out = f"calibration/max_{k}"
        model.graph.node.extend(
            [
                helper.make_node("Abs", [name], [out + "/abs"], name=out + "/Abs"),
                helper.make_node(
                    "ReduceMax", [out + "/abs", axes], [out], name=out + "/ReduceMax", keepdims=0
                ),
            ]
        )
        outputs.append(out)
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in outputs)
    # Saved beside the original so its external-data reference still resolves.
    probe = fp32_model.with_name("calibration.onnx")
    onnx.save_model(model, probe)
    try:
        maxima = _chunked_maxima(open_session(probe, threads=None), outputs, token_ids)
    finally:
        probe.unlink(missing_ok=True)
    k = len(_PROJECTIONS)
    return [LayerStats(*maxima[i * k : (i + 1) * k]) for i in range(config.n_layers)]


def _chunked_maxima(session: Any, outputs: list[str], token_ids: list[int]) -> list[F32]:
    """The probe's per-channel maxima over the text, run `CHUNK` tokens a call with the KV
    cache carried: a 1.5B level-0 prefill of 1,400 tokens at once peaked 2 GB above the
    same in chunks. Only the projection inputs are read: the LM head runs on one row."""
    from assistant.model.feeds import run_in_chunks  # noqa: PLC0415

    maxima: list[F32] = []
    for _, values in run_in_chunks(session, token_ids, outputs, CHUNK, every_logit=False):
        # Copies: an output array of ORT can hold its session (weights, arena) alive.
        got = [np.array(v, dtype=np.float32, copy=True) for v in values]
        maxima = got if not maxima else [np.maximum(a, b) for a, b in zip(maxima, got, strict=True)]
    return maxima


def _scales(act_max: F32, weight_max: F32, alpha: float) -> F32:
    act = np.maximum(act_max, 1e-5)
    weight = np.maximum(weight_max, 1e-5)
    scales = act**alpha / weight ** (1.0 - alpha)
    return np.clip(scales, 1e-2, 1e2).astype(np.float32)


def _col_max(*matrices: F32) -> F32:
    """Max |w| per input channel of [out, in] matrices."""
    out: F32 = np.max([np.abs(m).max(axis=0) for m in matrices], axis=0).astype(np.float32)
    return out


def _smooth_layer(
    cfg: LlamaConfig, layer: LayerWeights, stats: LayerStats, alpha: float
) -> LayerWeights:
    s_qkv = _scales(stats.attn_in, _col_max(layer.wq, layer.wk, layer.wv), alpha)
    s_ffn = _scales(stats.ffn_in, _col_max(layer.w_gate, layer.w_up), alpha)
    s_down = _scales(stats.down_in, _col_max(layer.w_down), alpha)

    group = cfg.n_heads // cfg.n_kv_heads
    per_head = (cfg.n_kv_heads, group, cfg.head_dim)
    act_o = stats.attn_out.reshape(per_head).max(axis=1)
    weight_o = _col_max(layer.wo).reshape(per_head).max(axis=1)
    s_kv = _scales(act_o.reshape(-1), weight_o.reshape(-1), alpha)  # [n_kv * head_dim]
    s_o = np.repeat(s_kv.reshape(cfg.n_kv_heads, 1, cfg.head_dim), group, axis=1).reshape(-1)

    return replace(
        layer,
        attn_norm=layer.attn_norm / s_qkv,
        wq=layer.wq * s_qkv,
        wk=layer.wk * s_qkv,
        wv=(layer.wv * s_qkv) / s_kv[:, None],
        bv=None if layer.bv is None else layer.bv / s_kv,
        wo=layer.wo * s_o,
        ffn_norm=layer.ffn_norm / s_ffn,
        w_gate=layer.w_gate * s_ffn,
        w_up=(layer.w_up * s_ffn) / s_down[:, None],
        w_down=layer.w_down * s_down,
    )


def smooth(
    config: LlamaConfig, weights: LlamaWeights, stats: list[LayerStats], alpha: float = ALPHA
) -> LlamaWeights:
    """New weights computing the same function with flatter activations (inputs untouched)."""
    layers = [
        _smooth_layer(config, layer, layer_stats, alpha)
        for layer, layer_stats in zip(weights.layers, stats, strict=True)
    ]
    return replace(weights, layers=layers)
