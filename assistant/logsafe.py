"""Text from outside (topics, ids, error messages), made safe to write to a log."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, limit: int = 120) -> str:
    """Control characters and bidi overrides removed, shortened to `limit`."""
    clean = _CONTROL.sub("", text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"
