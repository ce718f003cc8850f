"""The plan's decode-speed estimate: the time one decode step takes to stream its weights,
plus a fixed cost per layer.

Decode reads every projection's weights once per step (one token, or one batched step). The
bytes are the prepared model's own (the manifest's `weight_bytes_per_token`: 4-bit codes
plus scales and offsets for a Q4 GGUF, 8-bit plus scales for INT8, the whole tied LM head);
the file size stands in for folders prepared before that figure existed.

    seconds per token = layers * LAYER_OVERHEAD_S
                      + cached bytes / (CACHE_SPEEDUP * bandwidth)
                      + the other bytes / bandwidth

- `bandwidth` is what DRAM delivers to the decode threads: a calibrated guess per CPU
  family, and the largest error. Measured on two 2-core x86 VMs (benchmarks/RESULTS.md,
  "Scale beyond 135M"): ~12.5 GiB/s on a Xeon, ~43 GiB/s on an EPYC, for the same models
  of 0.5B-1.5B. The guess sits between them (a factor ~1.8 each way).
- cached bytes: as much of the weights as the last-level cache holds (HardwareFacts.cache_mb)
  are re-read from it every step instead of from DRAM. On the Xeon the 135M model (151 MB)
  decoded at 3x the bandwidth of the 0.5B-1B ones; on the EPYC (32 MB L3) it did not.
- the per-layer cost is the graph's own work between the weight streams (norms, attention,
  ~24 ops a layer, thread hand-offs): ~0.12 ms a layer on 2 EPYC threads, fitted on the
  135M (30 layers, 111 MiB: 3.6 ms of its 6.1 ms a token) and 1.5B models. It is what makes
  a small model's tokens cost more than its bytes.
"""

from __future__ import annotations

from assistant.hardware import HardwareFacts

LAYER_OVERHEAD_S = 0.12e-3
# Last-level cache vs DRAM bandwidth per core: a rough guess (typically 3-5x), used only
# for the part of a model that fits in the cache.
CACHE_SPEEDUP = 4.0


def decode_bandwidth_gbs(facts: HardwareFacts, threads: int) -> float:
    """DRAM bandwidth available to decode (GiB/s), a calibrated guess per CPU family.

    x86 AVX2: 12 GiB/s a thread (24 for 2: between the 2-core Xeon's 12.5 and the 2-core
    EPYC's ~43 measured on 0.5B-1.5B models); Raspberry Pi 4/5 from published llama.cpp
    figures.
    """
    if facts.arch in ("aarch64", "arm64"):
        per_thread = 4.0 if "dotprod" in facts.cpu_features else 1.5
        return min(per_thread * threads, 16.0)
    per_thread = 12.0 if "avx2" in facts.cpu_features else 4.0
    return min(per_thread * threads, 60.0)


def decode_tok_s(
    facts: HardwareFacts, threads: int, bytes_per_token: float, layers: int = 0
) -> float:
    """Estimated single-sequence decode tokens per second for a model of `layers` layers
    that streams `bytes_per_token` bytes of weights per step."""
    bandwidth = decode_bandwidth_gbs(facts, threads) * 2**30
    streamed = max(bytes_per_token, 1.0)
    cached = min(streamed, (facts.cache_mb or 0.0) * 2**20)
    seconds = (
        layers * LAYER_OVERHEAD_S
        + cached / (CACHE_SPEEDUP * bandwidth)
        + (streamed - cached) / bandwidth
    )
    return 1.0 / seconds
