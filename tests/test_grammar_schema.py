"""Untrusted schemas: the service's bounds (hostile schemas refused quickly and clearly),
and the property that every reply under a schema's grammar parses and validates."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant.core.constrained import constraint_for
from assistant.core.events import Finished
from assistant.core.grammar import bounded, json_grammar
from assistant.core.request import Tool
from assistant.core.schema_limits import MAX_DEPTH, MAX_ENUM_VALUES, SchemaChecker
from assistant.engine.batch import generate
from assistant.engine.engine import Engine
from assistant.engine.request import GenerationRequest, SamplingParams
from assistant.errors import RequestError
from assistant.model.manager import ModelInstance
from assistant.mqtt.requests import BadRequest, parse_request


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


HOSTILE: dict[str, Any] = {
    "deep nesting": _nested(MAX_DEPTH),
    "thousands of enum values": {"enum": [f"v{i}" for i in range(MAX_ENUM_VALUES + 1)]},
    "recursive $ref": {
        "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
        "$ref": "#/$defs/node",
    },
    "mutual recursion": {
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"items": {"$ref": "#/$defs/a"}}},
        "$ref": "#/$defs/a",
    },
    "remote $ref": {"$ref": "https://example.com/schema.json"},
    "huge literal": {"const": "x" * 10_000},
    "huge schema": {"properties": {f"p{i}": {"type": "string"} for i in range(5000)}},
    "not an object": ["type", "string"],
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_schema_is_refused_quickly(name: str) -> None:
    started = time.perf_counter()
    with pytest.raises(RequestError) as err:
        SchemaChecker().check(HOSTILE[name], "format")
    assert time.perf_counter() - started < 0.5
    assert err.value.code == "invalid_request"
    assert err.value.message.startswith("format: schema refused: ")


def test_hostile_tool_schema_refused_before_any_grammar() -> None:
    tools = [Tool("Bad", "", HOSTILE["recursive $ref"])]
    with pytest.raises(RequestError, match="tool 'Bad': schema refused: recursive reference"):
        constraint_for((("user", "hi"),), tools, None)


def test_a_shared_acyclic_definition_is_fine() -> None:
    schema = {
        "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}}}},
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/point"}, "b": {"$ref": "#/$defs/point"}},
    }
    assert SchemaChecker().check(schema, "format") is schema


def test_mqtt_request_with_a_hostile_schema_is_invalid() -> None:
    body = {"id": "h1", "text": "classify", "schema": HOSTILE["recursive $ref"]}
    with pytest.raises(BadRequest) as err:
        parse_request(json.dumps(body).encode())
    assert err.value.request_id == "h1" and "recursive reference" in err.value.message


def test_mqtt_request_carries_tools_and_schema() -> None:
    tool = {"type": "function", "function": {"name": "Notify", "parameters": _nested(1)}}
    request = parse_request(json.dumps({"text": "hi", "tools": [tool]}).encode())
    assert request.request.tools == (Tool("Notify", "", _nested(1)),)
    request = parse_request(json.dumps({"text": "hi", "schema": _nested(2)}).encode())
    assert request.request.output_schema == _nested(2)
    for bad in ({"tools": "x"}, {"tools": [{"name": "a b"}]}, {"tools": [tool, tool]}):
        with pytest.raises(BadRequest):
            parse_request(json.dumps({"text": "hi", **bad}).encode())


# A bounded generator of the JSON schemas requests really carry: objects of scalars,
# enums and arrays, nested a few levels.
_SCALARS = st.one_of(
    st.just({"type": "string"}),
    st.just({"type": "boolean"}),
    st.builds(
        lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
        st.integers(-50, 50),
        st.integers(0, 100),
    ),
    st.just({"type": "integer"}),
    st.builds(
        lambda values: {"enum": values},
        st.lists(st.text("abcxyz ", min_size=1, max_size=6), min_size=1, max_size=5, unique=True),
    ),
)


def _objects(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    def build(props: dict[str, dict[str, Any]], required: list[bool]) -> dict[str, Any]:
        names = [n for n, r in zip(props, required, strict=False) if r]
        return {"type": "object", "properties": props, "required": names}

    props = st.dictionaries(st.sampled_from("abcdef"), children, min_size=1, max_size=4)
    return st.builds(build, props, st.lists(st.booleans(), min_size=4, max_size=4)) | st.builds(
        lambda item: {"type": "array", "items": item, "maxItems": 3}, children
    )


SCHEMAS = st.recursive(_SCALARS, _objects, max_leaves=8).map(
    lambda s: s if s.get("type") == "object" else {"type": "object", "properties": {"v": s}}
)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return Engine.from_model(ModelInstance.load(tiny_model_dir, threads=1), 4096)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(schema=SCHEMAS, seed=st.integers(0, 2**16))
def test_replies_parse_and_validate_against_random_schemas(
    engine: Engine, schema: dict[str, Any], seed: int
) -> None:
    SchemaChecker().check(schema, "format")
    sampling = SamplingParams(temperature=1.0, seed=seed)
    request = GenerationRequest("p", (("user", "x"),), 600, sampling, grammar=json_grammar(schema))
    final = list(generate(engine, request))[-1]
    assert isinstance(final, Finished)
    assert final.result is not None and final.result.finish_reason == "stop", final
    reply = json.loads(final.result.text)
    jsonschema.validate(reply, schema)
    jsonschema.validate(reply, bounded(schema))  # and within the bounds the grammar adds
