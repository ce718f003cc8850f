"""Outlier input channels of the exact GGUF projections, divided by powers of two.

At accuracy level 4, MatMulNBits rounds its input to int8 per block of 32 channels with the
block's own max: one channel with 50x the activations of its neighbours leaves them a few
int8 steps. Dividing that channel by 2**p upstream (exact in fp32) and adding the same
amount back in the side term (nbits.Shifts) keeps the function and the GGUF's own blocks
untouched, and gives the neighbours their resolution back. SmoothQuant does the same with
any scale, which would change the weights; a power of two needs no requantization.

Where the division is folded (no op is added):
- q/k/v and gate/up inputs: the preceding RMSNorm gamma;
- down input (silu(gate) * up): the up rows of the fused gate/up blocks (scales, offsets).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from assistant.convert.ggml_blocks import BlockMatrix
from assistant.convert.gguf_loader import F32, LlamaConfig, LlamaWeights
from assistant.convert.nbits import Shifts
from assistant.convert.smooth import LayerStats

# A channel is an outlier when its calibration max exceeds RATIO x the median channel max
# of the same input; it is divided down to at most that level. At most MAX_CHANNELS per
# input (the largest first): each costs one side row and one row of the side matrix.
RATIO = 4.0
MAX_CHANNELS = 16


def choose(maxima: F32, ratio: float = RATIO, limit: int = MAX_CHANNELS) -> Shifts | None:
    """The shifts for one input from its per-channel max |x| over calibration text."""
    level = float(np.median(maxima)) * ratio
    if level <= 0:
        return None
    over = np.flatnonzero(maxima > level)
    if not len(over):
        return None
    over = over[np.argsort(-maxima[over])][:limit]
    over.sort()
    powers = np.ceil(np.log2(maxima[over] / level)).astype(np.int64)
    return Shifts(over.astype(np.int64), np.maximum(powers, 1))


def _scale_rows(m: BlockMatrix, rows: np.ndarray, divisors: F32) -> BlockMatrix:
    scales = m.scales.copy()
    scales[rows] /= divisors[:, None]
    offsets = None
    if m.offsets is not None:
        offsets = m.offsets.copy()
        offsets[rows] /= divisors[:, None]
    return replace(m, scales=scales, offsets=offsets)


def shift_outliers(
    config: LlamaConfig,
    weights: LlamaWeights,
    exact: Mapping[str, tuple[BlockMatrix, int]],
    stats: list[LayerStats],
) -> tuple[LlamaWeights, dict[str, tuple[BlockMatrix, int]], dict[str, Shifts]]:
    """Weights with the divisions folded in, the exact projections likewise, and the shifts
    per graph projection name; only projections that are exact get shifted."""
    layers = list(weights.layers)
    exact_out = dict(exact)
    shifts: dict[str, Shifts] = {}
    for i, layer_stats in enumerate(stats):
        prefix = f"model.layers.{i}"
        qkv, gate_up = f"{prefix}.attn.qkv_proj", f"{prefix}.mlp.gate_up_proj"
        down = f"{prefix}.mlp.down_proj"
        if qkv in exact and (s := choose(layer_stats.attn_in)) is not None:
            gamma = layers[i].attn_norm.copy()
            gamma[s.channels] /= s.divisors()
            layers[i] = replace(layers[i], attn_norm=gamma)
            shifts[qkv] = s
        if gate_up in exact and (s := choose(layer_stats.ffn_in)) is not None:
            gamma = layers[i].ffn_norm.copy()
            gamma[s.channels] /= s.divisors()
            layers[i] = replace(layers[i], ffn_norm=gamma)
            shifts[gate_up] = s
        if down in exact and gate_up in exact and (s := choose(layer_stats.down_in)) is not None:
            matrix, level = exact_out[gate_up]
            exact_out[gate_up] = (_scale_rows(matrix, config.ffn + s.channels, s.divisors()), level)
            shifts[down] = s
    return replace(weights, layers=layers), exact_out, shifts
