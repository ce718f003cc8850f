"""Random-weight GGUFs at the shapes of Qwen2.5-0.5B/1.5B and Llama 3.2 1B, quantized by
llama.cpp's own quantizer: the files for the "scale beyond 135M" benchmark (scale_bench.py).

Decode and prefill speed depend on shapes and encodings, not on weight values, so no weights
are downloaded: every matrix is random (seeded), written as F16 with the `gguf` writer, then
`llama_model_quantize` (llama-cpp-python) makes Q4_K_M, Q4_0 and Q8_0 from it, exactly as a
user's `llama-quantize` would, including its per-tensor choices (Q6_K for some ffn_down and
the tied head, Q5_0/Q8_0 fallbacks where a row is not a multiple of 256).

The vocabulary is SmolLM2's real BPE (tokens, merges, chat template, read from the default
GGUF already in the download cache), padded with unreachable filler tokens to the model's
vocabulary size, so that prompts tokenize like real text and the embedding and LM head have
the real shapes. Weight scales keep the residual stream dominated by the token embedding and
the logits moderate (finite perplexity), so the int8-activation kernels agree with FP32: the
level search of `prepare` stops at its first step (all groups at level 4, the fastest
decode); on random weights that search means nothing.

    .venv-bench/bin/python benchmarks/scale_models.py --out /work/cache/scale \
        --models qwen2.5-0.5b --types Q4_K_M,Q4_0,Q8_0
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assistant.convert.fetch import fetch_default_gguf  # noqa: E402
from assistant.convert.gguf_loader import GgufVocab, open_reader, read_vocab  # noqa: E402

# llama.cpp's llama_ftype values for the file types made here.
FTYPES = {"Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15}
# Embedding rows (std 1) dominate the residual stream over the small projections, so a
# position's logits peak at its own token; the final norm's gain sets that peak to
# ~LOGIT_PEAK over the rest (std ~LOGIT_PEAK / sqrt(hidden)): finite perplexity, a
# top-1 that int8 activations keep.
EMBED_STD = 1.0
PROJ_STD = 0.005
LOGIT_PEAK = 24.0


@dataclass(frozen=True)
class Shape:
    """The shapes of one published model (from its config.json)."""

    arch: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    context: int
    rope_theta: float
    eps: float

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


SHAPES = {
    "qwen2.5-0.5b": Shape("qwen2", 896, 24, 14, 2, 4864, 151936, 32768, 1e6, 1e-6),
    "qwen2.5-1.5b": Shape("qwen2", 1536, 28, 12, 2, 8960, 151936, 32768, 1e6, 1e-6),
    "llama-3.2-1b": Shape("llama", 2048, 16, 32, 8, 8192, 128256, 131072, 500000.0, 1e-5),
}


def _vocab(size: int) -> GgufVocab:
    """SmolLM2's vocabulary, padded to `size` tokens with normal tokens that no merge
    produces (so the tokenizer never emits them)."""
    vocab = read_vocab(open_reader(fetch_default_gguf()))
    pad = size - len(vocab.tokens)
    return replace(
        vocab,
        tokens=[*vocab.tokens, *(f"<filler_{i}>" for i in range(pad))],
        token_types=[*vocab.token_types, *([1] * pad)],
    )


def _write_metadata(writer: gguf.GGUFWriter, name: str, shape: Shape) -> None:
    writer.add_name(f"random {name}")
    writer.add_block_count(shape.layers)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_layer_norm_rms_eps(shape.eps)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    vocab = _vocab(shape.vocab)
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    if vocab.bos_id is not None:
        writer.add_bos_token_id(vocab.bos_id)
    if vocab.eos_id is not None:
        writer.add_eos_token_id(vocab.eos_id)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def write_f16(path: Path, name: str, shape: Shape, seed: int = 0) -> None:
    """Write the random model as F16 (norms and biases F32, as convert_hf_to_gguf does)."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, shape.arch)
    _write_metadata(writer, name, shape)
    kv = shape.kv_heads * shape.head_dim

    def matrix(tensor: str, rows: int, cols: int, std: float) -> None:
        array = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(std)
        writer.add_tensor(tensor, array.astype(np.float16))

    def vector(tensor: str, size: int, base: float, std: float) -> None:
        array = base + rng.standard_normal(size, dtype=np.float32) * np.float32(std)
        writer.add_tensor(tensor, array.astype(np.float32))

    matrix("token_embd.weight", shape.vocab, shape.hidden, EMBED_STD)
    for i in range(shape.layers):
        p = f"blk.{i}."
        vector(p + "attn_norm.weight", shape.hidden, 1.0, 0.05)
        matrix(p + "attn_q.weight", shape.hidden, shape.hidden, PROJ_STD)
        matrix(p + "attn_k.weight", kv, shape.hidden, PROJ_STD)
        matrix(p + "attn_v.weight", kv, shape.hidden, PROJ_STD)
        if shape.arch == "qwen2":
            vector(p + "attn_q.bias", shape.hidden, 0.0, 0.05)
            vector(p + "attn_k.bias", kv, 0.0, 0.05)
            vector(p + "attn_v.bias", kv, 0.0, 0.05)
        matrix(p + "attn_output.weight", shape.hidden, shape.hidden, PROJ_STD)
        vector(p + "ffn_norm.weight", shape.hidden, 1.0, 0.05)
        matrix(p + "ffn_gate.weight", shape.ffn, shape.hidden, PROJ_STD)
        matrix(p + "ffn_up.weight", shape.ffn, shape.hidden, PROJ_STD)
        matrix(p + "ffn_down.weight", shape.hidden, shape.ffn, PROJ_STD)
    vector("output_norm.weight", shape.hidden, LOGIT_PEAK / shape.hidden, 0.0)
    # No output.weight: all three published models tie the head to the embedding.
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantize(source: Path, target: Path, type_name: str, threads: int) -> None:
    """llama.cpp's quantizer, as `llama-quantize source target TYPE` runs it."""
    import llama_cpp  # noqa: PLC0415

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[type_name]
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(target).encode(), ctypes.byref(params)
    )
    if status != 0:
        raise RuntimeError(f"llama_model_quantize {type_name} failed ({status})")


def gguf_path(out: Path, name: str, type_name: str) -> Path:
    """Where the file of one model and type lives: <out>/<name>/<name>.<type>.gguf."""
    return out / name / f"{name}.{type_name}.gguf"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache/edge-assistant/scale")
    parser.add_argument("--models", default=",".join(SHAPES))
    parser.add_argument("--types", default=",".join(FTYPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep-f16", action="store_true", help="keep the F16 source files")
    args = parser.parse_args()
    for name in args.models.split(","):
        shape = SHAPES[name]
        f16 = gguf_path(args.out, name, "F16")
        f16.parent.mkdir(parents=True, exist_ok=True)
        todo = [t for t in args.types.split(",") if not gguf_path(args.out, name, t).is_file()]
        if not todo:
            continue
        # Each file is written under a temporary name: an interrupted run leaves no file
        # that a later one would take as complete.
        if not f16.is_file():
            start = time.perf_counter()
            write_f16(f16.with_suffix(".part"), name, shape)
            f16.with_suffix(".part").rename(f16)
            took = time.perf_counter() - start
            print(f"{f16}: {f16.stat().st_size / 2**20:.0f} MB in {took:.0f}s")
        for type_name in todo:
            target = gguf_path(args.out, name, type_name)
            start = time.perf_counter()
            quantize(f16, target.with_suffix(".part"), type_name, args.threads)
            target.with_suffix(".part").rename(target)
            size = target.stat().st_size / 2**20
            print(f"{target}: {size:.0f} MB in {time.perf_counter() - start:.0f}s")
        if not args.keep_f16:
            f16.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
