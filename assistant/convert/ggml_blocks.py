"""llama.cpp's block-quantized tensor types, decoded into the form MatMulNBits reads exactly.

Every supported type is, per block of `block` weights along a row (the input axis),

    w = scale * (code - zero) + offset,        zero = 2**(bits - 1) (MatMulNBits' default)

with `offset` present only for the types that carry a minimum (Q4_1, Q5_1, Q4_K, Q5_K). The
first term is MatMulNBits without a zero-point input (a float zero point would disable its
prepacked kernels); the offset term is `blocksum(x) @ offsets`, added beside it (nbits.py).

| GGUF type | bits | block | offset | how |
|---|---|---|---|---|
| Q4_0 | 4 | 32 | - | w = d (q - 8) |
| Q4_1 | 4 | 32 | m + 8d | w = d q + m |
| Q5_0 | 8 | 32 | - | 5-bit q: code = q + 112 |
| Q5_1 | 8 | 32 | m + 16d | |
| Q8_0 | 8 | 32 | - | code = q + 128 |
| Q4_K | 4 | 32 | 8 sc d - m dmin | super-blocks of 256, 6-bit scales and mins per 32 |
| Q5_K | 8 | 32 | 16 sc d - m dmin | |
| Q6_K | 8 | 16 | - | int8 scale per 16 |

Scales are fp32 products of an fp16 and a small integer, which fp32 holds exactly, so the
level-0 (fp32) kernel reproduces llama.cpp's dequantized weights to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from assistant.model.errors import CorruptModelError, UnsupportedModelError

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

# Bytes per block of each type (ggml's type sizes) and weights per block.
BLOCK_BYTES = {
    "Q4_0": (18, 32),
    "Q4_1": (20, 32),
    "Q5_0": (22, 32),
    "Q5_1": (24, 32),
    "Q8_0": (34, 32),
    "Q4_K": (144, 256),
    "Q5_K": (176, 256),
    "Q6_K": (210, 256),
}
FLOAT_TYPES = ("F32", "F16", "BF16")


@dataclass(frozen=True)
class BlockMatrix:
    """A [N, K] weight (GGUF orientation: a row per output) as codes, scales and offsets."""

    bits: int  # 4 or 8
    block: int  # weights per scale: 16 or 32
    codes: U8  # [N, K], 0 .. 2**bits - 1, unpacked
    scales: F32  # [N, K // block]
    offsets: F32 | None  # [N, K // block], or None when every offset is 0

    @property
    def shape(self) -> tuple[int, int]:
        """[N, K]."""
        rows, cols = self.codes.shape
        return int(rows), int(cols)

    def dequantize(self) -> F32:
        """The float32 weights this encoding stands for (as MatMulNBits level 0 computes)."""
        rows, cols = self.shape
        zero = 1 << (self.bits - 1)
        blocks = self.codes.reshape(rows, cols // self.block, self.block).astype(np.float32)
        w = (blocks - np.float32(zero)) * self.scales[..., None]
        if self.offsets is not None:
            w = w + self.offsets[..., None]
        return np.ascontiguousarray(w.reshape(rows, cols), dtype=np.float32)

    def widened(self, bits: int, block: int) -> BlockMatrix:
        """The same weights in a wider encoding (4 -> 8 bits, 32 -> 16 per block): exact."""
        if bits < self.bits or block > self.block or self.block % block:
            raise ValueError(f"cannot widen {self.bits}-bit/{self.block} to {bits}-bit/{block}")
        codes = self.codes
        if bits != self.bits:
            codes = (codes.astype(np.int16) + ((1 << (bits - 1)) - (1 << (self.bits - 1)))).astype(
                np.uint8
            )
        repeat = self.block // block
        offsets = None if self.offsets is None else np.repeat(self.offsets, repeat, axis=1)
        return BlockMatrix(bits, block, codes, np.repeat(self.scales, repeat, axis=1), offsets)

    def packed(self) -> U8:
        """MatMulNBits' B input [N, K // block, block * bits / 8]: 4-bit pairs low nibble first."""
        rows, cols = self.shape
        codes = self.codes
        if self.bits == 4:
            codes = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
        blob = self.block * self.bits // 8
        return np.ascontiguousarray(codes.reshape(rows, cols // self.block, blob))


def concat_rows(parts: list[BlockMatrix]) -> BlockMatrix:
    """Stack matrices along N (fusing q/k/v or gate/up) in the widest encoding among them."""
    bits, block = max(p.bits for p in parts), min(p.block for p in parts)
    same = [p.widened(bits, block) for p in parts]
    offsets = None
    if any(p.offsets is not None for p in same):
        offsets = np.concatenate(
            [p.offsets if p.offsets is not None else np.zeros_like(p.scales) for p in same]
        )
    return BlockMatrix(
        bits,
        block,
        np.concatenate([p.codes for p in same]),
        np.concatenate([p.scales for p in same]),
        offsets,
    )


def _f16(blocks: U8, start: int) -> F32:
    return blocks[:, start : start + 2].copy().view(np.float16).astype(np.float32)


def _nibbles(qs: U8) -> U8:
    """16 bytes -> 32 codes: byte j holds element j (low nibble) and j + 16 (high)."""
    return np.concatenate([qs & 15, qs >> 4], axis=1)


def _high_bits(qh: U8) -> U8:
    """4 bytes (little-endian uint32) -> the fifth bit of each of 32 elements."""
    bits = qh.copy().view("<u4")
    return ((bits >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)


def _q4_0(b: U8) -> BlockMatrix:
    return BlockMatrix(4, 32, _nibbles(b[:, 2:18]), _f16(b, 0), None)


def _q4_1(b: U8) -> BlockMatrix:
    d, m = _f16(b, 0), _f16(b, 2)
    return BlockMatrix(4, 32, _nibbles(b[:, 4:20]), d, m + 8 * d)


def _q5_0(b: U8) -> BlockMatrix:
    q = _nibbles(b[:, 6:22]) | (_high_bits(b[:, 2:6]) << 4)
    return BlockMatrix(8, 32, (q + 112).astype(np.uint8), _f16(b, 0), None)


def _q5_1(b: U8) -> BlockMatrix:
    d, m = _f16(b, 0), _f16(b, 2)
    q = _nibbles(b[:, 8:24]) | (_high_bits(b[:, 4:8]) << 4)
    return BlockMatrix(8, 32, (q + 112).astype(np.uint8), d, m + 16 * d)


def _q8_0(b: U8) -> BlockMatrix:
    q = b[:, 2:34].view(np.int8).astype(np.int16) + 128
    return BlockMatrix(8, 32, q.astype(np.uint8), _f16(b, 0), None)


def _k_scales(b: U8) -> tuple[F32, F32]:
    """Q4_K/Q5_K: the 8 sub-block scales and mins (6 bits each, packed in 12 bytes), times
    the super-block's d and dmin."""
    s = b[:, 4:16].astype(np.uint16)
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 15) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    mn = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    return _f16(b, 0) * sc.astype(np.float32), _f16(b, 2) * mn.astype(np.float32)


def _k_lows(qs: U8) -> U8:
    """128 bytes -> 256 4-bit values: each 32-byte chunk gives sub-blocks (low, high nibble)."""
    chunks = qs.reshape(len(qs), 4, 1, 32)
    return np.concatenate([chunks & 15, chunks >> 4], axis=2).reshape(len(qs), 256)


def _q4_k(b: U8) -> BlockMatrix:
    scales, mins = _k_scales(b)
    return BlockMatrix(4, 32, _k_lows(b[:, 16:144]), scales, 8 * scales - mins)


def _q5_k(b: U8) -> BlockMatrix:
    scales, mins = _k_scales(b)
    qh = b[:, 16:48]
    # Sub-block s takes its fifth bit from bit s of qh[l], l = position within the sub-block.
    high = (qh[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1
    q = _k_lows(b[:, 48:176]) | (high.reshape(len(b), 256) << 4)
    return BlockMatrix(8, 32, (q + 112).astype(np.uint8), scales, 16 * scales - mins)


def _q6_k(b: U8) -> BlockMatrix:
    n = len(b)
    ql = b[:, 0:128].reshape(n, 2, 2, 32)  # [half, first/second 32 bytes, l]
    qh = b[:, 128:192].reshape(n, 2, 1, 32)
    # Per half of 128: four runs of 32 — low nibbles of ql[0:32], of ql[32:64], then the
    # high nibbles — each with 2 bits of qh[l] (shift 0, 2, 4, 6).
    low = np.concatenate([ql & 15, ql >> 4], axis=2)  # [n, half, 4 runs, 32]
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, :, None]
    q = low | (((qh >> shifts) & 3) << 4)
    sc = b[:, 192:208].view(np.int8).astype(np.float32)
    return BlockMatrix(8, 16, q.reshape(n, 256) + np.uint8(96), _f16(b, 208) * sc, None)


_DECODERS = {
    "Q4_0": _q4_0,
    "Q4_1": _q4_1,
    "Q5_0": _q5_0,
    "Q5_1": _q5_1,
    "Q8_0": _q8_0,
    "Q4_K": _q4_k,
    "Q5_K": _q5_k,
    "Q6_K": _q6_k,
}


def decode_blocks(type_name: str, raw: Any, rows: int, cols: int) -> BlockMatrix:
    """The exact encoding of one GGUF tensor ([rows, cols], raw block bytes)."""
    if type_name not in _DECODERS:
        raise UnsupportedModelError(f"GGUF tensor type {type_name} has no exact ONNX encoding")
    size, per_block = BLOCK_BYTES[type_name]
    if cols % per_block:
        raise CorruptModelError(f"{type_name}: row length {cols} is not a multiple of {per_block}")
    data = np.ascontiguousarray(np.asarray(raw).view(np.uint8).reshape(-1))
    n_blocks = rows * cols // per_block
    if data.size != n_blocks * size:
        raise CorruptModelError(f"{type_name}: {data.size} bytes for a {rows}x{cols} tensor")
    matrix = _DECODERS[type_name](data.reshape(n_blocks, size))
    n_scales = cols // matrix.block
    return BlockMatrix(
        matrix.bits,
        matrix.block,
        np.ascontiguousarray(matrix.codes.reshape(rows, cols)),
        np.ascontiguousarray(matrix.scales.reshape(rows, n_scales), dtype=np.float32),
        None
        if matrix.offsets is None
        else np.ascontiguousarray(matrix.offsets.reshape(rows, n_scales), dtype=np.float32),
    )
