"""Tokenizer and chat template built from GGUF metadata (tiny model; ids derived by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from assistant.convert.gguf_loader import load_gguf
from assistant.convert.tokenizer import build_tokenizer
from assistant.model.chat import ChatTemplate
from assistant.model.errors import ModelError
from tests.test_model_tiny_gguf import CHAT_TEMPLATE, MERGES, write_tiny_gguf

N_SPECIAL = 3  # <|endoftext|>, <|im_start|>, <|im_end|>


def byte_id(char: str) -> int:
    """The tiny vocab lists the 256 byte tokens in byte order after the special tokens."""
    return N_SPECIAL + char.encode()[0]


def merge_id(left: str, right: str) -> int:
    return N_SPECIAL + 256 + MERGES.index((left, right))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    path = tmp_path_factory.mktemp("tok") / "tiny.gguf"
    write_tiny_gguf(path)
    return build_tokenizer(load_gguf(path).vocab)


def test_chatml_markers_are_single_tokens(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("<|im_start|>user\nthe<|im_end|>").ids
    # "user": no merge joins u-s or s-er, but e+r is merge 5; "the" is merge h+e only
    # ("Ġt he" needs the leading space).
    assert ids == [
        1,
        byte_id("u"),
        byte_id("s"),
        merge_id("e", "r"),
        byte_id("\n"),
        byte_id("t"),
        merge_id("h", "e"),
        2,
    ]


def test_merges_apply_in_rank_order(tokenizer: Tokenizer) -> None:
    assert tokenizer.encode(" the").ids == [merge_id("Ġt", "he")]
    assert tokenizer.encode(" string").ids == [
        merge_id("Ġs", "t"),
        byte_id("r"),
        merge_id("in", "g"),
    ]


def test_digits_split_one_by_one(tokenizer: Tokenizer) -> None:
    assert tokenizer.encode(" 2024").ids == [
        byte_id(" "),
        byte_id("2"),
        byte_id("0"),
        byte_id("2"),
        byte_id("4"),
    ]


def test_non_ascii_falls_back_to_bytes_and_round_trips(tokenizer: Tokenizer) -> None:
    text = "Grüße 你好 🙂"
    ids = tokenizer.encode(text).ids
    assert ids[:4] == [byte_id("G"), byte_id("r"), N_SPECIAL + 0xC3, N_SPECIAL + 0xBC]
    assert len(ids) == len(text.encode())  # no merges touch these bytes
    assert tokenizer.decode(ids) == text


def test_special_tokens_are_skipped_when_decoding(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("<|im_start|>assistant\nhi<|im_end|>").ids
    assert tokenizer.decode(ids) == "assistant\nhi"
    assert tokenizer.decode(ids, skip_special_tokens=False).startswith("<|im_start|>")


def test_chat_template_renders_conversation() -> None:
    chat = ChatTemplate(CHAT_TEMPLATE)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert chat.render_chat(messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert chat.render_chat(messages, add_generation_prompt=False).endswith("Hi<|im_end|>\n")


def test_chat_template_runs_sandboxed() -> None:
    with pytest.raises(ModelError):
        ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}").render_chat([])
    with pytest.raises(ModelError, match="no system"):
        ChatTemplate("{{ raise_exception('no system') }}").render_chat([])
    with pytest.raises(ModelError):
        ChatTemplate("{% for %}")


def test_tokenizer_json_round_trips(tokenizer: Tokenizer, tmp_path: Path) -> None:
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    text = "<|im_start|>user\nthe 2024 string<|im_end|>"
    assert loaded.encode(text).ids == tokenizer.encode(text).ids
