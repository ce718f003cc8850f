"""Deciding to act and grounding: pure functions over HA's Static Context and tools."""

from __future__ import annotations

import pytest

from assistant.core.act import LIVE_CONTEXT, decide
from assistant.core.constrained import ToolPolicy, constraint_for
from assistant.core.grammar import CALL_OPEN
from assistant.core.home import best_matches, parse_static_context, words
from assistant.core.request import Tool
from tests.grammar_cases import ha_first_turn, ha_tools, system_prompt

HOME = parse_static_context(system_prompt())


def test_static_context_of_the_real_ha_request() -> None:
    home = parse_static_context(ha_first_turn()["messages"][0]["content"])
    assert home is not None
    assert home.names == ("Kitchen Light",) and home.domains == ("light",)


def test_static_context_names_aliases_and_areas() -> None:
    assert HOME is not None
    assert HOME.entities[0].names == ("Kitchen Light", "Cooking Light")
    assert HOME.areas == ("Kitchen", "Living Room", "Bedroom", "Garage")
    assert "lock" in HOME.domains


@pytest.mark.parametrize(
    "system",
    ["no context here", "Static Context:\n- [unclosed", "Static Context:\njust text", ""],
)
def test_no_or_unreadable_static_context(system: str) -> None:
    assert parse_static_context(system) is None


def test_partial_mentions_find_the_device() -> None:
    assert best_matches(words("turn off the TV"), HOME.names if HOME else ()) == (
        ("Living Room TV",),
        1,
    )


@pytest.mark.parametrize(
    ("sentence", "tool", "target", "value"),
    [
        ("turn on the kitchen light", "HassTurnOn", "name", ("Kitchen Light",)),
        ("I'm going to bed, switch off the bedroom lamp", "HassTurnOff", "name", ("Bedroom Lamp",)),
        ("Could you turn the TV off?", "HassTurnOff", "name", ("Living Room TV",)),
        ("dim the bedroom lamp to 10 percent", "HassLightSet", "name", ("Bedroom Lamp",)),
        ("turn off the lights in the bedroom", "HassTurnOff", "area", ("Bedroom",)),
        # "Kitchen Light" shares two words, the area one; the plural asks for the area's.
        ("turn on the lights in the kitchen", "HassTurnOn", "area", ("Kitchen",)),
    ],
)
def test_commands_become_one_narrowed_call(
    sentence: str, tool: str, target: str, value: tuple[str, ...]
) -> None:
    decision = decide([("user", sentence)], ha_tools(), HOME)
    assert decision.calls
    narrowing = decision.narrowing
    assert narrowing.tools == (tool,) and not narrowing.text
    assert narrowing.required[0] == target and narrowing.values[target] == value


def test_a_tool_for_one_kind_of_device_is_not_chosen_for_another() -> None:
    # "warm" is a colour cue of HassLightSet; the fan is no light, so only "off" counts.
    fan = decide([("user", "it's warm enough, turn the ceiling fan off")], ha_tools(), HOME)
    assert fan.narrowing.tools == ("HassTurnOff",)
    lamp = decide([("user", "make the bedroom lamp warm white")], ha_tools(), HOME)
    assert lamp.narrowing.tools == ("HassLightSet",)


def test_numbers_in_the_sentence_bound_integer_arguments() -> None:
    decision = decide([("user", "set the kitchen light to 40 percent")], ha_tools(), HOME)
    assert decision.narrowing.integers == (40,)
    assert decision.narrowing.required == ("name", "brightness")  # the percentage one


@pytest.mark.parametrize(
    "sentence",
    ["is the garage door open?", "Is the ceiling fan running", "what's on in the kitchen?"],
)
def test_state_questions_call_live_context(sentence: str) -> None:
    decision = decide([("user", sentence)], ha_tools(), HOME)
    assert decision.calls and decision.narrowing.tools == (LIVE_CONTEXT,)


@pytest.mark.parametrize(
    "sentence", ["What is the capital of France?", "tell me a joke", "how are you?"]
)
def test_other_sentences_are_answered_in_text(sentence: str) -> None:
    assert not decide([("user", sentence)], ha_tools(), HOME).calls


def test_a_tool_result_gets_one_short_line_and_no_call() -> None:
    messages = [("user", "turn on the kitchen light"), ("tool", '{"success": []}')]
    decision = decide(messages, ha_tools(), HOME)
    assert decision.short and not decision.calls


def test_without_static_context_the_model_chooses_text_or_call() -> None:
    decision = decide([("user", "do something")], [Tool("Notify", "", {})], None)
    assert decision.calls and decision.narrowing.text


def test_grounding_without_deciding_limits_names_to_the_home() -> None:
    messages = (("system", system_prompt()), ("user", "turn on the kitchen light"))
    grammar = constraint_for(messages, ha_tools(), None, ToolPolicy(decide=False)).grammar
    assert grammar is not None and '"enum":["Kitchen Light","Cooking Light"' in grammar
    assert CALL_OPEN in grammar and "TEXT" in grammar.split("\n")[0]
    free = constraint_for(messages, ha_tools(), None, ToolPolicy(grounding=False, decide=False))
    assert free.grammar is not None and "Kitchen Light" not in free.grammar
