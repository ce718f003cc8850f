"""Build a Hugging Face `tokenizers` byte-level BPE tokenizer from a GGUF vocabulary."""

from __future__ import annotations

import logging

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from assistant.convert.gguf_loader import GgufVocab
from assistant.model.errors import CorruptModelError

_LOGGER = logging.getLogger(__name__)

# llama.cpp token types (gguf.TokenType): only these two are matched before BPE runs.
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

# llama.cpp's `tokenizer.ggml.pre` names grouped by the pre-tokenizer they select.
# GPT-2 regex after splitting digits one by one (llama.cpp: STARCODER/SMOLLM/REFACT...).
_DIGITS_THEN_GPT2 = {"smollm", "starcoder", "refact", "codeshell", "command-r", "exaone", "minerva"}
# The Llama 3 / Qwen 2 regex: numbers in groups of up to three, case-insensitive contractions.
_LLAMA3 = {"llama3", "llama-v3", "llama-bpe", "qwen2", "falcon3", "smaug-bpe"}
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _DIGITS_THEN_GPT2:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in _LLAMA3:
        split = pre_tokenizers.Split(Regex(_LLAMA3_PATTERN), behavior="isolated", invert=False)
        return pre_tokenizers.Sequence(
            [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    if pre not in {"gpt2", "default"}:
        _LOGGER.warning("unknown tokenizer.ggml.pre %r; using the GPT-2 pre-tokenizer", pre)
    return byte_level


def build_tokenizer(vocab: GgufVocab) -> Tokenizer:
    """Byte-level BPE with the vocabulary's control tokens as single special tokens."""
    ids = {token: i for i, token in enumerate(vocab.tokens)}
    if len(ids) != len(vocab.tokens):
        raise CorruptModelError("the GGUF vocabulary has duplicate tokens")
    merges: list[tuple[str, str]] = []
    for merge in vocab.merges:
        left, sep, right = merge.partition(" ")
        if not sep:
            raise CorruptModelError(f"malformed BPE merge {merge!r}")
        merges.append((left, right))
    tokenizer = Tokenizer(models.BPE(vocab=ids, merges=merges, fuse_unk=False))
    tokenizer.pre_tokenizer = _pre_tokenizer(vocab.pre)
    tokenizer.decoder = decoders.ByteLevel()
    special = [
        AddedToken(tok, special=True, normalized=False)
        for tok, kind in zip(vocab.tokens, vocab.token_types, strict=True)
        if kind == TOKEN_TYPE_CONTROL
    ]
    user = [
        AddedToken(tok, special=False, normalized=False)
        for tok, kind in zip(vocab.tokens, vocab.token_types, strict=True)
        if kind == TOKEN_TYPE_USER_DEFINED
    ]
    tokenizer.add_special_tokens(special)
    if user:
        tokenizer.add_tokens(user)
    return tokenizer
