"""Deciding to act: whether a turn is a call on the home or a text answer, and which calls.

A 135M model under a "text or call" grammar does not make that choice (it writes prose
for commands and invents states for questions), so the service decides first, from the
sentence and HA's Static Context, in well under a millisecond, and narrows the grammar:

- the turn after a tool result: one short line of text, no call (no call loops);
- a question about something in the home: a `GetLiveContext` call;
- a request to change something in the home: a call of the tool whose cue words the
  sentence carries (Home Assistant's intent tools, or words of a tool's own description),
  its target restricted to the entities or areas the sentence names;
- anything else: text, no call.

Where the cues leave more than one tool or target, the model chooses among them, under
the grammar, by its own likelihood. Nothing here is keyed to particular sentences: the
inputs are English cue words per HA intent and the home's own names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from assistant.core.grammar import Narrowing
from assistant.core.home import Home, best_matches, words
from assistant.core.request import Tool

LIVE_CONTEXT = "GetLiveContext"
_QUESTION = frozenset(
    {"is", "are", "was", "were", "what", "whats", "which", "who", "where", "when", "how"}
    | {"does", "do", "did", "has", "have", "why"}
)
_POLITE = frozenset({"can", "could", "would", "will", "please"})
# Cue words per Home Assistant intent tool (the English of its sentence templates).
_CUES: dict[str, frozenset[str]] = {
    name: frozenset(cues.split())
    for name, cues in {
        "HassTurnOn": "on open start activate enable lock raise run",
        "HassTurnOff": "off close stop deactivate disable unlock shut lower kill",
        "HassLightSet": "dim brightness bright brighten percent color colour red green blue "
        "white warm cool yellow orange purple pink full",
        "HassSetPosition": "position percent halfway",
        "HassClimateSetTemperature": "degree thermostat heat heating warmer cooler",
        "HassMediaPause": "pause",
        "HassMediaUnpause": "resume unpause continue",
        "HassMediaNext": "next skip",
        "HassMediaPrevious": "previous back",
        "HassSetVolume": "volume loud louder quiet quieter",
        "HassFanSetSpeed": "speed",
        "HassVacuumStart": "vacuum clean",
        "HassShoppingListAddItem": "shopping",
        "HassListAddItem": "list",
        "GetDateTime": "time date today",
    }.items()
}
# HA intents that act on one kind of device only: never chosen for a target of another
# kind ("warm" is a colour cue of HassLightSet, but "turn the heater off, it's warm" is not
# about a light).
_DOMAIN_TOOLS: dict[str, frozenset[str]] = {
    name: frozenset(domains.split())
    for name, domains in {
        "HassLightSet": "light",
        "HassSetPosition": "cover valve",
        "HassClimateSetTemperature": "climate",
        "HassMediaPause": "media_player",
        "HassMediaUnpause": "media_player",
        "HassMediaNext": "media_player",
        "HassMediaPrevious": "media_player",
        "HassSetVolume": "media_player",
        "HassFanSetSpeed": "fan",
        "HassVacuumStart": "vacuum",
    }.items()
}
_TARGETS = ("name", "area", "floor")
_FULL = frozenset({"full", "max", "maximum"})  # "full brightness": the top of the range


@dataclass(frozen=True)
class Decision:
    """What the reply may be: text only (`calls` false), or the narrowed calls."""

    calls: bool
    narrowing: Narrowing
    short: bool = False  # one short line (after a tool result)


TEXT = Decision(False, Narrowing(text=True, calls=False))


def _is_question(sentence: str, said: list[str]) -> bool:
    if sentence.rstrip().endswith("?") and not (said and said[0] in _POLITE):
        return True
    return bool(said) and said[0] in _QUESTION


def _tool_scores(said: set[str], tools: list[Tool]) -> dict[str, int]:
    scores = {}
    for tool in tools:
        cues = _CUES.get(tool.name)
        if cues is None:  # not an HA intent: the words of its own description
            cues = frozenset(w for w in words(tool.description) if len(w) > 3)
        scores[tool.name] = len(cues & said)
    return scores


def _plural_kind(sentence: str, domains: tuple[str, ...]) -> bool:
    """Whether the sentence names one of `domains` in the plural ("lights")."""
    kinds = {w for d in domains for w in words(d.replace("_", " "))}
    said = re.findall(r"[a-z]+", sentence.lower())
    return any(w.endswith("s") and w[:-1] in kinds for w in said)


def _fits(tool: str, kinds: set[str]) -> bool:
    """Whether a tool may act on targets of these domains (any, when none is known)."""
    only = _DOMAIN_TOOLS.get(tool)
    return only is None or not kinds or bool(only & kinds)


def _integers(sentence: str, said: set[str]) -> tuple[int, ...]:
    found = [int(n) for n in re.findall(r"\d{1,4}", sentence)]
    if said & _FULL:
        found.append(100)
    return tuple(dict.fromkeys(found))


def _value_properties(tools: list[Tool], heard: set[str], integers: tuple[int, ...]) -> set[str]:
    """The non-target arguments the sentence gives a value for: an integer one when it
    says a number (the one whose name or description it echoes, else the first described
    one), and any whose name it says ("color")."""
    props = {k: v for t in tools for k, v in t.parameters.get("properties", {}).items()}
    stems = {w[:5] for w in heard}
    named = {k for k in props if k in heard}
    numeric = [k for k, v in props.items() if isinstance(v, dict) and v.get("type") == "integer"]
    if integers and numeric:

        def echo(key: str) -> int:
            text = f"{key} {props[key].get('description', '')}"
            return len({w[:5] for w in words(text)} & stems) + bool(props[key].get("description"))

        named.add(max(numeric, key=echo))
    return named


def _action(sentence: str, said: list[str], home: Home, tools: list[Tool]) -> Decision:
    heard = set(said)
    names, name_hits = best_matches(said, home.names)
    areas, area_hits = best_matches(said, home.areas)
    domains = tuple(d for d in home.domains if set(words(d.replace("_", " "))) <= heard)
    # Words of the device's own name are not cues ("unlock the front door lock")...
    own = {w for n in (*names, *areas) for w in words(n)}
    named = set(names)
    kinds = set(domains) | {e.domain for e in home.entities if set(e.names) & named}
    actions = [t for t in tools if t.name != LIVE_CONTEXT and _fits(t.name, kinds)]
    scores = _tool_scores(heard - own, actions)
    if not any(scores.values()):  # "lock the front door lock": the name is the only cue
        scores = _tool_scores(heard, actions)
    top = max(scores.values(), default=0)
    if not top or not (names or areas):
        return TEXT
    chosen = tuple(n for n, s in scores.items() if s == top)
    # "the lights in the kitchen": a plural kind with an area is the area's devices of
    # that kind (as HA's own sentence templates read it), whatever one device is called.
    group = _plural_kind(sentence, domains) or area_hits >= name_hits
    by_area = bool(areas) and group and bool(domains)
    target = "area" if by_area else "name"
    values: dict[str, tuple[str, ...]] = {"name": names, "area": areas, "domain": domains}
    if not by_area:
        values["domain"] = tuple(
            dict.fromkeys(e.domain for e in home.entities if set(e.names) & named)
        )
    integers = _integers(sentence, heard)
    extra = _value_properties([t for t in tools if t.name in chosen], heard, integers)
    return Decision(
        True,
        Narrowing(
            text=False,
            tools=chosen,
            values=values,
            integers=integers,
            properties=frozenset({target, "domain", *extra}),
            required=(target, *sorted(extra)),
            max_calls=1,
        ),
    )


def _lookup(said: list[str], tools: list[Tool]) -> Decision:
    """A question about nothing in the home: a tool without arguments that answers it
    (the date and time), else text."""
    plain = [t for t in tools if t.name != LIVE_CONTEXT and not t.parameters.get("properties")]
    scores = _tool_scores(set(said), plain)
    top = max(scores.values(), default=0)
    if not top:
        return TEXT
    chosen = tuple(n for n, s in scores.items() if s == top)
    return Decision(True, Narrowing(text=False, tools=chosen, max_calls=1))


def decide(messages: list[tuple[str, str]], tools: list[Tool], home: Home | None) -> Decision:
    """The decision for a chat's next reply (`messages`: role, content; last one last)."""
    if not messages or not tools:
        return TEXT
    role, sentence = messages[-1]
    if role == "tool":
        return Decision(False, Narrowing(text=True, calls=False), short=True)
    if home is None:  # no Static Context: the grammar allows both, the model chooses
        return Decision(True, Narrowing())
    said = words(sentence)
    mentions = bool(best_matches(said, [*home.names, *home.areas, *home.domains])[0])
    if _is_question(sentence, said):
        asks_home = mentions and any(t.name == LIVE_CONTEXT for t in tools)
        if asks_home:
            return Decision(True, Narrowing(text=False, tools=(LIVE_CONTEXT,), max_calls=1))
        return _lookup(said, tools)
    return _action(sentence, said, home, tools)
