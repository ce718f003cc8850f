"""The plan's decode-speed estimate: weight bytes one decode step streams, over the memory
bandwidth a CPU family sustains for that streaming.

Decode reads every projection's weights once per step (one token, or one batched step), so
its speed is bandwidth / bytes read. The bytes are the prepared model's own (the manifest's
`weight_bytes_per_token`: 4-bit codes plus scales and offsets for a Q4 GGUF, 8-bit plus
scales for INT8, the whole tied LM head); the file size stands in for folders prepared
before that figure existed (it also counts the embedding table, rotary tables and norms,
which a step barely touches).
"""

from __future__ import annotations

from assistant.hardware import HardwareFacts


def decode_bandwidth_gbs(facts: HardwareFacts, threads: int) -> float:
    """Effective weight-streaming bandwidth for decode (GiB/s), a calibrated guess per CPU
    family.

    Calibrated on a 2-core AVX-512 EPYC (~24 GB/s effective, 161 tok/s on 152 MB) and
    published Raspberry Pi 4/5 llama.cpp figures; a guess, reported as an estimate.
    """
    if facts.arch in ("aarch64", "arm64"):
        per_thread = 4.0 if "dotprod" in facts.cpu_features else 1.5
        return min(per_thread * threads, 16.0)
    per_thread = 12.0 if "avx2" in facts.cpu_features else 4.0
    return min(per_thread * threads, 60.0)


def decode_tok_s(facts: HardwareFacts, threads: int, bytes_per_token: float) -> float:
    """Estimated single-sequence decode tokens per second for a model that streams
    `bytes_per_token` bytes of weights per step."""
    return decode_bandwidth_gbs(facts, threads) * 2**30 / max(bytes_per_token, 1.0)
