"""Read a Llama-family GGUF into a typed config, float32 weights and the tokenizer's raw data."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from assistant.model.errors import CorruptModelError, UnsupportedModelError

F32 = npt.NDArray[np.float32]

# general.architecture -> whether Q/K carry a bias. Both use the same tensor names in GGUF.
SUPPORTED_ARCHITECTURES = {"llama": False, "qwen2": True}


@dataclass(frozen=True)
class LlamaConfig:
    """Shape and numerics of a Llama-family decoder, as stored in GGUF metadata."""

    architecture: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    rope_theta: float
    rms_eps: float
    context_length: int
    tied_embeddings: bool
    qkv_bias: bool
    # llama.cpp's converter permutes Llama's Q/K rows so that rotary pairs are adjacent
    # (GPT-J "interleaved" layout); Qwen2 GGUFs keep the NeoX "half" layout unpermuted.
    rope_interleaved: bool
    name: str = ""


@dataclass
class LayerWeights:
    """One decoder block; matrices in GGUF/PyTorch orientation [out_features, in_features]."""

    attn_norm: F32
    wq: F32
    wk: F32
    wv: F32
    wo: F32
    ffn_norm: F32
    w_gate: F32
    w_up: F32
    w_down: F32
    bq: F32 | None = None
    bk: F32 | None = None
    bv: F32 | None = None


@dataclass
class LlamaWeights:
    """All weights of the decoder as float32 arrays."""

    token_embd: F32  # [vocab, hidden]
    output_norm: F32  # [hidden]
    layers: list[LayerWeights]
    output: F32 | None = None  # [vocab, hidden]; None when tied to token_embd

    def lm_head(self) -> F32:
        """The output projection [vocab, hidden] (the embedding when tied)."""
        return self.token_embd if self.output is None else self.output

    def parameter_count(self) -> int:
        """Number of distinct weights (the tied embedding counted once)."""
        total = self.token_embd.size + self.output_norm.size
        if self.output is not None:
            total += self.output.size
        for layer in self.layers:
            total += sum(a.size for a in vars(layer).values() if a is not None)
        return int(total)


@dataclass(frozen=True)
class GgufVocab:
    """The tokenizer data a GGUF carries (llama.cpp's `tokenizer.ggml.*` keys)."""

    model: str
    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    add_bos: bool
    chat_template: str | None


@dataclass
class GgufModel:
    """Everything read from one GGUF file."""

    config: LlamaConfig
    weights: LlamaWeights
    vocab: GgufVocab


def open_reader(path: Path) -> Any:
    """gguf.GGUFReader on the file; an unreadable file is a CorruptModelError."""
    import gguf  # noqa: PLC0415 - heavy import, only needed when preparing a model

    if not path.is_file():
        raise CorruptModelError(f"{path}: no such file")
    try:
        return gguf.GGUFReader(path)
    except (ValueError, IndexError, KeyError, OSError, TypeError) as err:
        raise CorruptModelError(f"{path}: not a readable GGUF file ({err})") from err


def _field(reader: Any, key: str, default: Any = None, required: bool = False) -> Any:
    item = reader.fields.get(key)
    if item is None:
        if required:
            raise CorruptModelError(f"GGUF metadata lacks {key!r}")
        return default
    try:
        return item.contents()
    except (ValueError, IndexError, UnicodeDecodeError) as err:
        raise CorruptModelError(f"GGUF metadata {key!r} is unreadable ({err})") from err


def read_config(reader: Any) -> LlamaConfig:
    """Build the typed config from metadata; rejects unsupported architectures."""
    arch = str(_field(reader, "general.architecture", required=True))
    if arch not in SUPPORTED_ARCHITECTURES:
        supported = ", ".join(sorted(SUPPORTED_ARCHITECTURES))
        raise UnsupportedModelError(
            f"GGUF architecture {arch!r} is not supported (supported: {supported})"
        )

    def meta(suffix: str, default: Any = None) -> Any:
        return _field(reader, f"{arch}.{suffix}", default, required=default is None)

    hidden = int(meta("embedding_length"))
    n_heads = int(meta("attention.head_count"))
    head_dim = int(meta("attention.key_length", hidden // n_heads))
    rope_dims = int(meta("rope.dimension_count", head_dim))
    if rope_dims != head_dim or head_dim * n_heads != hidden:
        raise UnsupportedModelError(
            f"{arch}: partial rotary or head_dim*heads != hidden is not supported"
        )
    names = {t.name for t in reader.tensors}
    tokens = _field(reader, "tokenizer.ggml.tokens", required=True)
    return LlamaConfig(
        architecture=arch,
        n_layers=int(meta("block_count")),
        hidden=hidden,
        n_heads=n_heads,
        n_kv_heads=int(meta("attention.head_count_kv", n_heads)),
        head_dim=head_dim,
        ffn=int(meta("feed_forward_length")),
        vocab=int(meta("vocab_size", len(tokens))),
        rope_theta=float(meta("rope.freq_base", 10000.0)),
        rms_eps=float(meta("attention.layer_norm_rms_epsilon")),
        context_length=int(meta("context_length")),
        tied_embeddings="output.weight" not in names,
        qkv_bias=SUPPORTED_ARCHITECTURES[arch],
        rope_interleaved=arch == "llama",
        name=str(_field(reader, "general.name", "")),
    )


def placeholder(shape: tuple[int, ...]) -> F32:
    """A matrix left undequantized: NaN everywhere, one stored value (a zero-stride view), so
    it costs no memory and any use of it shows in the outputs instead of passing unseen."""
    return np.broadcast_to(np.float32(np.nan), shape)


def _read_tensors(reader: Any, skip: Collection[str]) -> dict[str, F32]:
    from gguf.quants import dequantize  # noqa: PLC0415

    out: dict[str, F32] = {}
    for tensor in reader.tensors:
        # GGUF lists dimensions fastest-first; numpy wants them slowest-first.
        shape = tuple(int(d) for d in reversed(list(tensor.shape)))
        if tensor.name in skip:
            out[tensor.name] = placeholder(shape)
            continue
        try:
            array = dequantize(np.asarray(tensor.data), tensor.tensor_type)
        except NotImplementedError as err:
            raise UnsupportedModelError(
                f"tensor {tensor.name}: quantization {tensor.tensor_type.name} is not supported"
            ) from err
        except (ValueError, IndexError) as err:
            raise CorruptModelError(f"tensor {tensor.name} is unreadable ({err})") from err
        if array.size != int(np.prod(shape)):
            raise CorruptModelError(f"tensor {tensor.name}: {array.size} values for {shape}")
        out[tensor.name] = np.ascontiguousarray(array.reshape(shape), dtype=np.float32)
    return out


def _take(tensors: dict[str, F32], name: str, shape: tuple[int, ...]) -> F32:
    array = tensors.get(name)
    if array is None:
        raise CorruptModelError(f"GGUF lacks tensor {name!r}")
    if array.shape != shape:
        raise CorruptModelError(f"tensor {name}: shape {array.shape}, expected {shape}")
    return array


def read_weights(reader: Any, config: LlamaConfig, skip: Collection[str] = ()) -> LlamaWeights:
    """Dequantize every tensor to float32 (but those named in `skip`: `placeholder`s) and
    check it against the config."""
    tensors = _read_tensors(reader, skip)
    h, f, v = config.hidden, config.ffn, config.vocab
    kv = config.n_kv_heads * config.head_dim
    layers = []
    for i in range(config.n_layers):
        p = f"blk.{i}."
        layer = LayerWeights(
            attn_norm=_take(tensors, p + "attn_norm.weight", (h,)),
            wq=_take(tensors, p + "attn_q.weight", (h, h)),
            wk=_take(tensors, p + "attn_k.weight", (kv, h)),
            wv=_take(tensors, p + "attn_v.weight", (kv, h)),
            wo=_take(tensors, p + "attn_output.weight", (h, h)),
            ffn_norm=_take(tensors, p + "ffn_norm.weight", (h,)),
            w_gate=_take(tensors, p + "ffn_gate.weight", (f, h)),
            w_up=_take(tensors, p + "ffn_up.weight", (f, h)),
            w_down=_take(tensors, p + "ffn_down.weight", (h, f)),
        )
        if config.qkv_bias:
            layer.bq = _take(tensors, p + "attn_q.bias", (h,))
            layer.bk = _take(tensors, p + "attn_k.bias", (kv,))
            layer.bv = _take(tensors, p + "attn_v.bias", (kv,))
        layers.append(layer)
    return LlamaWeights(
        token_embd=_take(tensors, "token_embd.weight", (v, h)),
        output_norm=_take(tensors, "output_norm.weight", (h,)),
        layers=layers,
        output=None if config.tied_embeddings else _take(tensors, "output.weight", (v, h)),
    )


def read_vocab(reader: Any) -> GgufVocab:
    """The tokenizer data; only byte-level BPE (`gpt2`) vocabularies are supported."""
    model = str(_field(reader, "tokenizer.ggml.model", required=True))
    if model != "gpt2":
        raise UnsupportedModelError(f"tokenizer model {model!r} is not supported (only gpt2 BPE)")
    tokens = [str(t) for t in _field(reader, "tokenizer.ggml.tokens", required=True)]
    types = [int(t) for t in _field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))]
    merges = [str(m) for m in _field(reader, "tokenizer.ggml.merges", [])]
    if len(types) != len(tokens):
        raise CorruptModelError("tokenizer.ggml.token_type and tokens differ in length")

    def opt_id(key: str) -> int | None:
        value = _field(reader, f"tokenizer.ggml.{key}")
        return None if value is None else int(value)

    template = _field(reader, "tokenizer.chat_template")
    return GgufVocab(
        model=model,
        pre=str(_field(reader, "tokenizer.ggml.pre", "default")),
        tokens=tokens,
        token_types=types,
        merges=merges,
        bos_id=opt_id("bos_token_id"),
        eos_id=opt_id("eos_token_id"),
        pad_id=opt_id("padding_token_id"),
        add_bos=bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        chat_template=None if template is None else str(template),
    )


def load_gguf(path: Path, skip: Collection[str] = ()) -> GgufModel:
    """Read config, weights and vocabulary; raises CorruptModelError / UnsupportedModelError.

    Tensors named in `skip` are not dequantized (`placeholder`s of their shape): precision
    `gguf` maps them from their blocks, and at 1.5B parameters the float32 copies alone
    are 6 GB."""
    reader = open_reader(path)
    config = read_config(reader)
    vocab = read_vocab(reader)
    if len(vocab.tokens) != config.vocab:
        raise CorruptModelError(f"{len(vocab.tokens)} tokens for a vocab of {config.vocab}")
    return GgufModel(config=config, weights=read_weights(reader, config, skip), vocab=vocab)
