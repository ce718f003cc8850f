"""Grammar-constrained decoding in the engine: every grammar path on the tiny random model
(whose unconstrained text is noise, so anything well-formed is the grammar's doing) and,
marked slow, on the real default model."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from assistant.config import EngineConfig
from assistant.core.events import Delta, Event, Finished, GenerationResult, ToolCall
from assistant.core.grammar import Narrowing, json_grammar, short_text_grammar, tools_grammar
from assistant.core.prompt import generation_request
from assistant.core.request import Message, Request, Sampling
from assistant.engine.batch import Batch, generate
from assistant.engine.engine import Engine
from assistant.engine.request import GenerationRequest, SamplingParams
from assistant.errors import RequestError
from assistant.model.manager import ModelInstance
from tests.grammar_cases import ha_tools, system_prompt

CLASSIFY = {
    "type": "object",
    "properties": {
        "label": {"enum": ["spam", "bill", "personal"]},
        "urgent": {"type": "boolean"},
        "score": {"type": "integer", "minimum": 0, "maximum": 9},
    },
    "required": ["label", "urgent", "score"],
}


def _engine(folder: Path) -> Engine:
    return Engine.from_model(ModelInstance.load(folder, threads=1), 4096)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return _engine(tiny_model_dir)


def run(engine: Engine, request: GenerationRequest) -> tuple[list[Delta], GenerationResult]:
    events = list(generate(engine, request))
    final = events[-1]
    assert isinstance(final, Finished) and final.result is not None
    return [e for e in events if isinstance(e, Delta)], final.result


def ask(text: str, grammar: str | None, calls: bool = False, n: int = 120) -> GenerationRequest:
    return GenerationRequest("g", (("user", text),), n, grammar=grammar, calls=calls)


def test_json_schema_reply_parses_and_validates(engine: Engine) -> None:
    _, result = run(engine, ask("Classify: pay the invoice", json_grammar(CLASSIFY)))
    assert result.finish_reason == "stop"
    jsonschema.validate(json.loads(result.text), CLASSIFY)


def test_forced_call_has_a_tool_name_and_valid_arguments(engine: Engine) -> None:
    tools = ha_tools()
    grammar = tools_grammar(tools, Narrowing(text=False))
    deltas, result = run(engine, ask("turn on the light", grammar, calls=True, n=400))
    assert result.finish_reason == "tool_calls", result.text
    assert result.text == "" and deltas == []  # a call is not streamed as text
    by_name = {t.name: t for t in tools}
    for call in result.tool_calls:
        jsonschema.validate(call.arguments, by_name[call.name].parameters)


def test_grounded_call_names_only_things_in_the_home(engine: Engine) -> None:
    narrowing = Narrowing(
        text=False,
        tools=("HassTurnOn",),
        values={"name": ("Kitchen Light", "Garage Door"), "domain": ("light", "cover")},
        properties=frozenset({"name", "domain"}),
        required=("name",),
        max_calls=1,
    )
    _, result = run(engine, ask("x", tools_grammar(ha_tools(), narrowing), calls=True, n=300))
    (call,) = result.tool_calls
    assert call.name == "HassTurnOn"
    assert call.arguments["name"] in ("Kitchen Light", "Garage Door")
    assert set(call.arguments) <= {"name", "domain"}
    assert set(call.arguments.get("domain", [])) <= {"light", "cover"}


def test_text_only_grammar_never_calls(engine: Engine) -> None:
    grammar = tools_grammar(ha_tools(), Narrowing(calls=False))
    _, result = run(engine, ask("hello", grammar, calls=True, n=30))
    assert result.tool_calls == ()
    assert result.text and not result.text.startswith("<")


def test_after_a_tool_result_one_short_line(engine: Engine) -> None:
    _, result = run(engine, ask("done", short_text_grammar(), n=400))
    assert result.finish_reason == "stop"
    assert "\n" not in result.text and 0 < len(result.text) <= 241


def test_constrained_and_free_rows_share_a_batch(engine: Engine) -> None:
    """Masks are per row: a free row next to a constrained one gives its text alone."""
    free = GenerationRequest("free", (("user", "hello there"),), 20)
    _, alone = run(engine, free)
    batch = Batch(engine, max_batch=2)
    batch.add(ask("Classify: hi", json_grammar(CLASSIFY)))
    batch.add(free)
    finals: dict[str, GenerationResult] = {}
    while batch.busy:
        events: list[Event] = batch.step()
        finals |= {e.id: e.result for e in events if isinstance(e, Finished) and e.result}
    assert finals["free"].text == alone.text
    jsonschema.validate(json.loads(finals["g"].text), CLASSIFY)


def test_compiled_grammars_are_cached(engine: Engine) -> None:
    grammar = json_grammar({"type": "object", "properties": {"cached": {"type": "boolean"}}})
    run(engine, ask("a", grammar))
    compiles = engine.constraints().compiles
    run(engine, ask("b", grammar))
    assert engine.constraints().compiles == compiles


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "(unclosed"},
        # Two patterns whose intersection the compiler cannot settle within its fuel.
        {"allOf": [{"type": "string", "pattern": "(.*a){20}"}, {"pattern": "(.*b){20}"}]},
    ],
)
def test_a_grammar_the_compiler_refuses_is_invalid_request(
    engine: Engine, schema: dict[str, object]
) -> None:
    with pytest.raises(RequestError) as err:
        Batch(engine, 1).add(ask("x", json_grammar(schema)))
    assert err.value.code == "invalid_request"
    assert "grammar refused" in err.value.message


def test_a_grammar_failing_mid_reply_ends_the_row_with_an_error(engine: Engine) -> None:
    row = engine.constraints().start(json_grammar(CLASSIFY))
    row.advance(engine.tokenizer.token_to_id("a") or 0)  # not a JSON value's first byte
    assert row.error and row.done
    logits = np.zeros(engine.tokenizer.get_vocab_size(), dtype=np.float32)
    row.mask(logits)
    assert list(np.flatnonzero(logits > -np.inf)) == [2]  # only the end of the turn


def test_sampling_under_a_grammar_stays_valid(engine: Engine) -> None:
    sampling = SamplingParams(temperature=1.5, top_p=0.95, repetition_penalty=1.2, seed=3)
    request = GenerationRequest(
        "s", (("user", "x"),), 200, sampling, grammar=json_grammar(CLASSIFY)
    )
    _, result = run(engine, request)
    jsonschema.validate(json.loads(result.text), CLASSIFY)


@pytest.fixture(scope="module")
def real_engine(real_model_dir: Path) -> Engine:
    return _engine(real_model_dir)


def ha_chat(*turns: Message, greedy: bool = True) -> GenerationRequest:
    """A chat as Home Assistant sends it, through the core's own request path (tools in
    the prompt, the decision and the grammar)."""
    request = Request(
        "ha",
        "http",
        "test",
        messages=(Message("system", system_prompt()), *turns),
        tools=tuple(ha_tools()),
        sampling=Sampling(temperature=0.0 if greedy else None),
    )
    return generation_request(request, EngineConfig())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sentence", "tool", "arguments"),
    [
        ("turn on the kitchen light", "HassTurnOn", {"name": "Kitchen Light"}),
        ("please switch off the ceiling fan", "HassTurnOff", {"name": "Ceiling Fan"}),
        ("dim the bedroom lamp to 30 percent", "HassLightSet", {"brightness": 30}),
        ("is the garage door open?", "GetLiveContext", {}),
    ],
)
def test_real_model_calls_through_the_core_request_path(
    real_engine: Engine, sentence: str, tool: str, arguments: dict[str, object]
) -> None:
    _, result = run(real_engine, ha_chat(Message("user", sentence)))
    (call,) = result.tool_calls
    assert call.name == tool
    assert {k: call.arguments[k] for k in arguments} == arguments


@pytest.mark.slow
def test_real_model_answers_a_general_question_in_text(real_engine: Engine) -> None:
    _, result = run(real_engine, ha_chat(Message("user", "What is the capital of France?")))
    assert result.tool_calls == () and "Paris" in result.text


@pytest.mark.slow
def test_real_model_after_a_tool_result_says_one_line(real_engine: Engine) -> None:
    call = ToolCall("HassTurnOn", {"name": "Kitchen Light"})
    result_text = (
        '{"response_type": "action_done", "data": {"success": [{"name": "Kitchen Light"}]}}'
    )
    turns = (
        Message("user", "turn on the kitchen light"),
        Message("assistant", "", (call,)),
        Message("tool", result_text),
    )
    _, result = run(real_engine, ha_chat(*turns))
    assert result.tool_calls == () and result.text and "\n" not in result.text


@pytest.mark.slow
def test_real_model_json_schema(real_engine: Engine) -> None:
    prompt = "Classify this notification: 'Your electricity bill is due tomorrow'"
    _, result = run(real_engine, ask(prompt, json_grammar(CLASSIFY)))
    jsonschema.validate(json.loads(result.text), CLASSIFY)
