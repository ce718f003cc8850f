"""Untrusted JSON bodies into typed values: each reader names the field and the rule it
broke, so a client gets a 400 that says what to fix."""

from __future__ import annotations

import json
import math
from typing import Any


class BodyError(Exception):
    """A body the API refuses; `status` is 400 unless said otherwise (404: no such model)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object."""
    try:
        data = json.loads(raw)
    except UnicodeDecodeError as err:
        raise BodyError("the body is not UTF-8") from err
    except (ValueError, RecursionError) as err:  # RecursionError: absurdly deep nesting
        raise BodyError(f"the body is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise BodyError("the body must be a JSON object")
    return data


def obj(data: dict[str, Any], key: str, *, required: bool = False) -> dict[str, Any] | None:
    value = data.get(key)
    if value is None:
        if required:
            raise BodyError(f"{key}: required")
        return None
    if not isinstance(value, dict):
        raise BodyError(f"{key}: must be an object")
    return value


def text(
    data: dict[str, Any], key: str, *, required: bool = False, max_len: int = 256
) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise BodyError(f"{key}: required")
        return None
    if not isinstance(value, str):
        raise BodyError(f"{key}: must be a string")
    if len(value) > max_len:
        raise BodyError(f"{key}: longer than {max_len:,} characters")
    return value


def flag(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BodyError(f"{key}: must be true or false")
    return value


def number(data: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BodyError(f"{key}: must be a number")
    if not lo <= value <= hi:
        raise BodyError(f"{key}: must be between {lo:g} and {hi:g}, got {value:g}")
    return float(value)


def integer(data: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    """An integer; Home Assistant's number fields send them as floats (`8192.0`)."""
    value = number(data, key, lo, hi)
    if value is None:
        return None
    if not value.is_integer():
        raise BodyError(f"{key}: must be a whole number, got {value:g}")
    return int(value)


def stops(data: dict[str, Any], key: str, max_count: int) -> tuple[str, ...]:
    """Stop strings: one string or a list of them."""
    value = data.get(key)
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise BodyError(f"{key}: must be a non-empty string or a list of them")
    if len(items) > max_count or any(len(s) > 64 for s in items):
        raise BodyError(f"{key}: at most {max_count} strings of at most 64 characters")
    return tuple(items)


def items(data: dict[str, Any], key: str, max_count: int) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BodyError(f"{key}: must be a list")
    if len(value) > max_count:
        raise BodyError(f"{key}: at most {max_count} entries")
    return value


def json_object(value: Any, where: str) -> dict[str, Any]:
    """Tool-call arguments: a JSON object, or (OpenAI) a string that holds one."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as err:
            raise BodyError(f"{where}: not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise BodyError(f"{where}: must be a JSON object")
    return value
