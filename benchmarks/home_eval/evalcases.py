"""The home evaluation's cases, the bodies Home Assistant would send for them, and the
judging; shared by run.py (our service, through /api/chat) and anchor_llamacpp.py
(llama.cpp on the same GGUF), so both are judged by the same code.

Bodies: Home Assistant 2026.2.3's real first-turn `/api/chat` body (tests/data/ha), with
its keys, options, keep_alive, stream and 6 tools unchanged; the system message is HA's
instructions followed by our home's Static Context (home.txt) and the user message is the
case's sentence. A second turn follows HA 2025.4.4's real second-turn body: the user
sentence, the assistant message with the call HA ran (no content key, as captured), and a
`tool` message with HA's result for it.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HA_DATA = HERE.parents[1] / "tests" / "data" / "ha"
FIRST_TURN = HA_DATA / "ollama_chat_first_turn_ha2026.2.3.json"
ALIAS = "edge-assistant:latest"  # the model name HA's config flow picks from /api/tags
KINDS = ("command", "state", "general", "second")
# HA's live context reports a state per entity; a fixed, plausible one per domain.
_STATES = {
    "light": "off",
    "switch": "off",
    "media_player": "off",
    "fan": "on",
    "cover": "closed",
    "lock": "locked",
    "climate": "heat",
    "sensor": "12.5",
}

Call = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Case:
    kind: str  # command, state, general, second
    sentence: str
    tool: str  # the expected tool (command, state, second: the call HA ran)
    target: str  # "name=Kitchen Light", "area=Kitchen" or ""
    expected: str  # general: a regular expression the answer must match ("": any text)


def load_cases() -> list[Case]:
    cases = []
    for line in (HERE / "cases.tsv").read_text().splitlines():
        kind, sentence, tool, target, *rest = [*line.split("\t"), ""]
        cases.append(Case(kind, sentence, tool, target, rest[0] if rest else ""))
    return cases


def first_turn_body() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIRST_TURN.read_text())
    return data


def system_prompt() -> str:
    """HA's own instructions, then our home where HA puts its Static Context."""
    captured = str(first_turn_body()["messages"][0]["content"])
    return captured.split("Static Context:", maxsplit=1)[0] + (HERE / "home.txt").read_text()


def home_entities() -> list[dict[str, str]]:
    """The Static Context's entities: first name, domain and area of each."""
    entities: list[dict[str, str]] = []
    for line in (HERE / "home.txt").read_text().splitlines():
        if line.startswith("- names: "):
            entities.append({"name": line[9:].split(",")[0].strip()})
        elif entities and ":" in line:
            key, value = line.strip().split(":", 1)
            entities[-1][key] = value.strip()
    return entities


def live_context() -> str:
    """What HA's GetLiveContext returns for the home (its YAML-like overview)."""
    lines = ["Live Context: An overview of the areas and the devices in this smart home:"]
    for entity in home_entities():
        lines += [f"- names: {entity['name']}", f"  domain: {entity['domain']}"]
        lines.append(f"  state: '{_STATES.get(entity['domain'], 'unknown')}'")
        if "areas" in entity:
            lines.append(f"  areas: {entity['areas']}")
    return "\n".join(lines)


def tool_result(case: Case, arguments: dict[str, Any]) -> str:
    """HA's result for the call of a second-turn case, as the `tool` message content."""
    if case.tool == "GetLiveContext":
        return json.dumps({"success": True, "result": live_context()})
    by_name = {e["name"]: e for e in home_entities()}
    targets = []
    if "name" in arguments and arguments["name"] in by_name:
        entity = by_name[arguments["name"]]
        slug = re.sub(r"\W+", "_", entity["name"].lower())
        targets.append(
            {"name": entity["name"], "type": "entity", "id": f"{entity['domain']}.{slug}"}
        )
    elif "area" in arguments:
        targets.append({"name": arguments["area"], "type": "area", "id": arguments["area"].lower()})
    data = {"targets": [], "success": targets, "failed": []}
    return json.dumps({"speech": {}, "response_type": "action_done", "data": data})


def target_arguments(case: Case) -> dict[str, Any]:
    if not case.target:
        return {}
    key, value = case.target.split("=", 1)
    return {key: value}


def messages(case: Case) -> list[dict[str, Any]]:
    """The body's messages for a case, in HA's shapes."""
    out: list[dict[str, Any]] = [
        {"role": "system", "content": system_prompt()},
        {"role": "user", "content": case.sentence},
    ]
    if case.kind == "second":
        arguments = target_arguments(case)
        call = {"function": {"name": case.tool, "arguments": arguments}}
        out += [
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "content": tool_result(case, arguments)},
        ]
    return out


def chat_body(case: Case) -> dict[str, Any]:
    """The `/api/chat` body HA sends for the case: the captured body, its model the one
    HA's config flow chose from our /api/tags, its messages the case's."""
    body = copy.deepcopy(first_turn_body())
    body["model"] = ALIAS
    body["messages"] = messages(case)
    return body


def tools() -> list[dict[str, Any]]:
    """The tools as HA sends them ({"type": "function", "function": {...}})."""
    found: list[dict[str, Any]] = first_turn_body()["tools"]
    return found


def judge(case: Case, text: str, calls: list[Call]) -> bool:
    """command: one call, right tool, right target; state: one GetLiveContext call;
    general: text (no call) matching the expected word; second: one line of text."""
    if case.kind in ("command", "state"):
        if len(calls) != 1 or calls[0][0] != case.tool:
            return False
        return all(calls[0][1].get(k) == v for k, v in target_arguments(case).items())
    if case.kind == "second":
        return not calls and bool(text.strip()) and "\n" not in text.strip()
    answered = not calls and bool(text.strip())
    return answered and (not case.expected or bool(re.search(case.expected, text, re.I)))


def well_formed(calls: list[Call]) -> bool:
    """Every call names an offered tool and its arguments validate against its schema."""
    import jsonschema  # noqa: PLC0415 (the anchor's venv imports this module too)

    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools()}
    for name, arguments in calls:
        if name not in schemas:
            return False
        try:
            jsonschema.validate(arguments, schemas[name])
        except jsonschema.ValidationError:
            return False
    return True
