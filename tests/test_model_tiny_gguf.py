"""A tiny random Llama-family GGUF, a NumPy reference forward pass for it, and loader tests.

Other test_model_* modules import the helpers from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt
import pytest

from assistant.convert.gguf_loader import load_gguf
from assistant.model.errors import CorruptModelError, UnsupportedModelError

F64 = npt.NDArray[np.float64]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Merges in the GPT-2 byte alphabet ("Ġ" is the space byte); applied in this order.
MERGES = [
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("Ġ", "a"),
    ("e", "r"),
    ("o", "n"),
    ("Ġ", "s"),
    ("r", "e"),
    ("a", "t"),
    ("Ġ", "w"),
    ("o", "r"),
    ("e", "n"),
    ("Ġ", "h"),
    ("in", "g"),
    ("Ġ", "o"),
    ("l", "l"),
    ("Ġ", "b"),
    ("e", "s"),
    ("Ġ", "c"),
    ("Ġh", "e"),
    ("Ġ", "m"),
    ("o", "u"),
    ("Ġw", "h"),
    ("Ġ", "f"),
    ("e", "d"),
    ("Ġ", "l"),
    ("Ġ", "d"),
    ("Ġ", "i"),
    ("Ġ", "p"),
    ("a", "n"),
    ("Ġ", "r"),
    ("l", "e"),
    ("Ġo", "n"),
    ("s", "t"),
    ("Ġ", "n"),
    ("Ġ", "e"),
    ("a", "r"),
    ("i", "s"),
    ("Ġs", "t"),
]


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each of the 256 bytes, in byte order."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def tiny_vocab() -> list[str]:
    """Special tokens, then the 256 byte tokens, then one token per merge."""
    return [*SPECIAL_TOKENS, *byte_alphabet(), *(a + b for a, b in MERGES)]


@dataclass
class TinySpec:
    """Shapes of the tiny model; small enough to test exactly, big enough for GQA's rules."""

    arch: str = "llama"
    n_layers: int = 2
    hidden: int = 64
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn: int = 128
    context: int = 2048
    rope_theta: float = 10000.0
    eps: float = 1e-5
    tied: bool = True
    seed: int = 0
    # GGUF type of the projection matrices (the embedding is always Q8_0).
    matrix_type: str = "Q8_0"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    @property
    def vocab(self) -> int:
        return len(tiny_vocab())


@dataclass
class TinyWeights:
    """The weights as the reference sees them (after GGUF's own quantization round trip)."""

    spec: TinySpec
    tensors: dict[str, F64] = field(default_factory=dict)


def _roundtrip(array: npt.NDArray[np.float32], type_name: str) -> tuple[npt.NDArray[np.uint8], F64]:
    qtype = gguf.GGMLQuantizationType[type_name]
    packed = gguf.quants.quantize(array, qtype)
    return packed, gguf.quants.dequantize(packed, qtype).reshape(array.shape).astype(np.float64)


def _write_metadata(writer: gguf.GGUFWriter, spec: TinySpec) -> None:
    writer.add_name("tiny")
    writer.add_block_count(spec.n_layers)
    writer.add_context_length(spec.context)
    writer.add_embedding_length(spec.hidden)
    writer.add_feed_forward_length(spec.ffn)
    writer.add_head_count(spec.n_heads)
    writer.add_head_count_kv(spec.n_kv_heads)
    writer.add_rope_dimension_count(spec.head_dim)
    writer.add_rope_freq_base(spec.rope_theta)
    writer.add_layer_norm_rms_eps(spec.eps)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    vocab = tiny_vocab()
    writer.add_token_list(vocab)
    types = [3] * len(SPECIAL_TOKENS) + [1] * (len(vocab) - len(SPECIAL_TOKENS))
    writer.add_token_types(types)
    writer.add_token_merges([f"{a} {b}" for a, b in MERGES])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(CHAT_TEMPLATE)


def write_tiny_gguf(path: Path, spec: TinySpec | None = None) -> TinyWeights:
    """Write a random tiny model; matrices go in quantized (spec.matrix_type)."""
    spec = spec or TinySpec()
    rng = np.random.default_rng(spec.seed)
    writer = gguf.GGUFWriter(path, spec.arch)
    _write_metadata(writer, spec)
    weights = TinyWeights(spec)
    kv = spec.n_kv_heads * spec.head_dim

    def matrix(name: str, rows: int, cols: int, scale: float) -> None:
        array = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        type_name = "Q8_0" if name == "token_embd.weight" else spec.matrix_type
        packed, exact = _roundtrip(array, type_name)
        writer.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType[type_name])
        weights.tensors[name] = exact

    def vector(name: str, size: int, base: float, scale: float) -> None:
        array = (base + rng.standard_normal(size) * scale).astype(np.float32)
        writer.add_tensor(name, array)
        weights.tensors[name] = array.astype(np.float64)

    matrix("token_embd.weight", spec.vocab, spec.hidden, 0.5)
    for i in range(spec.n_layers):
        p = f"blk.{i}."
        vector(p + "attn_norm.weight", spec.hidden, 1.0, 0.1)
        matrix(p + "attn_q.weight", spec.hidden, spec.hidden, 0.15)
        matrix(p + "attn_k.weight", kv, spec.hidden, 0.15)
        matrix(p + "attn_v.weight", kv, spec.hidden, 0.15)
        matrix(p + "attn_output.weight", spec.hidden, spec.hidden, 0.1)
        if spec.arch == "qwen2":
            vector(p + "attn_q.bias", spec.hidden, 0.0, 0.1)
            vector(p + "attn_k.bias", kv, 0.0, 0.1)
            vector(p + "attn_v.bias", kv, 0.0, 0.1)
        vector(p + "ffn_norm.weight", spec.hidden, 1.0, 0.1)
        matrix(p + "ffn_gate.weight", spec.ffn, spec.hidden, 0.15)
        matrix(p + "ffn_up.weight", spec.ffn, spec.hidden, 0.15)
        matrix(p + "ffn_down.weight", spec.hidden, spec.ffn, 0.1)
    vector("output_norm.weight", spec.hidden, 1.0, 0.1)
    if not spec.tied:
        matrix("output.weight", spec.vocab, spec.hidden, 0.5)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights


# ---- NumPy reference forward pass (float64), written from the model's definition ----


def _rms_norm(x: F64, gamma: F64, eps: float) -> F64:
    out: F64 = x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * gamma
    return out


def _rotate(x: F64, positions: npt.NDArray[np.int64], theta: float, interleaved: bool) -> F64:
    """Rotary embedding on [seq, heads, head_dim]; llama.cpp rotates adjacent pairs for
    Llama GGUFs (their Q/K rows were permuted on conversion) and half-split pairs for Qwen2."""
    dim = x.shape[-1]
    freqs = theta ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
    angles = positions[:, None].astype(np.float64) * freqs[None, :]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out
    a, b = x[..., : dim // 2], x[..., dim // 2 :]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


def reference_logits(weights: TinyWeights, token_ids: list[int]) -> F64:
    """Logits [len(token_ids), vocab] of one sequence, causal, positions from 0."""
    s, t = weights.spec, weights.tensors
    seq = len(token_ids)
    positions = np.arange(seq, dtype=np.int64)
    x = t["token_embd.weight"][token_ids]
    group = s.n_heads // s.n_kv_heads
    causal = np.triu(np.full((seq, seq), -np.inf), k=1)
    for i in range(s.n_layers):
        p = f"blk.{i}."
        h = _rms_norm(x, t[p + "attn_norm.weight"], s.eps)
        q = h @ t[p + "attn_q.weight"].T + t.get(p + "attn_q.bias", 0.0)
        k = h @ t[p + "attn_k.weight"].T + t.get(p + "attn_k.bias", 0.0)
        v = h @ t[p + "attn_v.weight"].T + t.get(p + "attn_v.bias", 0.0)
        q = _rotate(
            q.reshape(seq, s.n_heads, s.head_dim), positions, s.rope_theta, s.arch == "llama"
        )
        k = _rotate(
            k.reshape(seq, s.n_kv_heads, s.head_dim), positions, s.rope_theta, s.arch == "llama"
        )
        v = v.reshape(seq, s.n_kv_heads, s.head_dim)
        heads = []
        for j in range(s.n_heads):
            scores = q[:, j] @ k[:, j // group].T / np.sqrt(s.head_dim) + causal
            probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probs /= probs.sum(axis=-1, keepdims=True)
            heads.append(probs @ v[:, j // group])
        x = x + np.concatenate(heads, axis=-1) @ t[p + "attn_output.weight"].T
        h = _rms_norm(x, t[p + "ffn_norm.weight"], s.eps)
        gate = h @ t[p + "ffn_gate.weight"].T
        silu = gate / (1.0 + np.exp(-gate))
        x = x + (silu * (h @ t[p + "ffn_up.weight"].T)) @ t[p + "ffn_down.weight"].T
    x = _rms_norm(x, t["output_norm.weight"], s.eps)
    head = t.get("output.weight", t["token_embd.weight"])
    return np.asarray(x @ head.T)


# ---- loader tests ----


def test_loader_reads_config_and_weights(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    weights = write_tiny_gguf(path)
    model = load_gguf(path)
    cfg = model.config
    assert (cfg.architecture, cfg.n_layers, cfg.hidden, cfg.n_heads, cfg.n_kv_heads) == (
        "llama",
        2,
        64,
        4,
        2,
    )
    assert (cfg.head_dim, cfg.ffn, cfg.vocab, cfg.context_length) == (16, 128, 299, 2048)
    assert cfg.tied_embeddings and cfg.rope_interleaved and not cfg.qkv_bias
    assert cfg.rms_eps == pytest.approx(1e-5)
    np.testing.assert_allclose(
        model.weights.layers[1].wk, weights.tensors["blk.1.attn_k.weight"], rtol=0, atol=1e-7
    )
    assert model.vocab.tokens[:3] == SPECIAL_TOKENS
    assert model.vocab.chat_template == CHAT_TEMPLATE


def test_loader_reads_qwen2_biases(tmp_path: Path) -> None:
    path = tmp_path / "qwen.gguf"
    write_tiny_gguf(path, TinySpec(arch="qwen2", tied=False))
    model = load_gguf(path)
    assert model.config.qkv_bias and not model.config.rope_interleaved
    assert not model.config.tied_embeddings and model.weights.output is not None
    assert model.weights.layers[0].bk is not None


def test_unsupported_architecture_is_named(tmp_path: Path) -> None:
    path = tmp_path / "mamba.gguf"
    write_tiny_gguf(path, TinySpec(arch="mamba"))
    with pytest.raises(UnsupportedModelError, match="mamba"):
        load_gguf(path)


def test_bad_magic_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"NOPE" + bytes(200))
    with pytest.raises(CorruptModelError):
        load_gguf(path)


def test_truncated_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptModelError):
        load_gguf(path)
