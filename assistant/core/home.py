"""Home Assistant's Static Context: the exposed entities HA lists in its system prompt.

HA's Assist API writes, after the line `Static Context: An overview of the areas and the
devices in this smart home:`, a YAML list with one item per entity: `names` (the name and
its aliases, comma-separated), `domain` and, when set, `areas`. No states: those come only
from the `GetLiveContext` tool. This module reads that list (bounded, untrusted) and finds
which entities and areas a sentence mentions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import yaml

MARKER = "Static Context:"
MAX_CONTEXT_CHARS = 200_000
MAX_ENTITIES = 2_000
_WORD = re.compile(r"[a-z0-9]+")
# Words that carry no identity in a device name ("the", "my" …).
_FILLER = frozenset({"the", "a", "an", "my", "our", "of", "in", "on", "at", "to", "all"})


def words(text: str) -> list[str]:
    """Lower-case words, plural "s" dropped ("lights" and "light" match)."""
    out = []
    for word in _WORD.findall(text.lower().replace("%", " percent")):
        plural = len(word) > 3 and word.endswith("s") and not word.endswith("ss")
        out.append(word[:-1] if plural else word)
    return out


def _split(value: object) -> tuple[str, ...]:
    if isinstance(value, list):
        parts = [str(v) for v in value]
    elif isinstance(value, str):
        parts = value.split(",")
    else:
        return ()
    return tuple(p.strip() for p in parts if p.strip())


@dataclass(frozen=True)
class Entity:
    names: tuple[str, ...]  # the name first, then its aliases
    domain: str
    areas: tuple[str, ...]


@dataclass(frozen=True)
class Home:
    entities: tuple[Entity, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for e in self.entities for n in e.names))

    @property
    def areas(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a for e in self.entities for a in e.areas))

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.domain for e in self.entities if e.domain))


def parse_static_context(system: str) -> Home | None:
    """The home a system prompt describes; None when it has no (readable) Static Context."""
    start = system.find(MARKER)
    if start < 0 or len(system) > MAX_CONTEXT_CHARS:
        return None
    body = system[start:].partition("\n")[2]
    try:
        items = yaml.safe_load(body)
    except yaml.YAMLError:
        return None
    if not isinstance(items, list):
        return None
    entities = []
    for item in items[:MAX_ENTITIES]:
        if isinstance(item, dict) and _split(item.get("names")):
            domain = item.get("domain")
            entities.append(
                Entity(
                    names=_split(item.get("names")),
                    domain=domain if isinstance(domain, str) else "",
                    areas=_split(item.get("areas")),
                )
            )
    return Home(tuple(entities)) if entities else None


def best_matches(sentence: Iterable[str], names: Iterable[str]) -> tuple[tuple[str, ...], int]:
    """The names sharing the most identifying words with the sentence, and how many.

    A partial mention counts ("the TV" finds "Living Room TV"); the names that share the
    most words win, and among those, the ones with the fewest words left unmentioned."""
    said = set(sentence)
    best: list[tuple[int, int, str]] = []
    for name in names:
        own = [w for w in words(name) if w not in _FILLER]
        hits = sum(1 for w in set(own) if w in said)
        if hits:
            best.append((hits, -(len(set(own)) - hits), name))
    if not best:
        return (), 0
    top = max((h, m) for h, m, _ in best)
    return tuple(n for h, m, n in best if (h, m) == top), top[0]
