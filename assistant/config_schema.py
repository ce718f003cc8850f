"""The configuration schema: what each key accepts, checked before anything is built.

Values only: the defaults are stated once, in `assistant.config`'s dataclasses, which a
key missing here leaves to them. Messages read "<rule>" so that errors become
"<path>: <rule>, got <value>".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

import voluptuous as vol

Auto = Literal["auto"]
AUTO: Auto = "auto"
MAX_TOKENS_LIMIT = 4096
TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A base topic or reply prefix: one or more safe levels, no wildcards, not $SYS.
TOPIC_PATH = re.compile(r"^[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64}){0,7}$")
# A language as Home Assistant names them: "en", "de-CH", "zh-Hans", "sr-Latn-RS".
LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}$")


class ConfigError(Exception):
    """An invalid configuration; the message names the key path, the rule and the value."""


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise vol.Invalid("must be an integer")
        if lo is not None and value < lo:
            raise vol.Invalid(f"must be at least {lo}")
        if hi is not None and value > hi:
            raise vol.Invalid(f"must be at most {hi}")
        return value

    return check


def _number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Any:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise vol.Invalid("must be a number")
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise vol.Invalid(f"must be {'greater than' if lo_open else 'at least'} {lo}")
        if hi is not None and value > hi:
            raise vol.Invalid(f"must be at most {hi}")
        return float(value)

    return check


def _bool(value: Any) -> bool:
    # Strict: "yes"/0/1 in a config file are more often mistakes than intent.
    if not isinstance(value, bool):
        raise vol.Invalid("must be true or false")
    return value


def _str(min_len: int = 0, max_len: int = 10_000) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise vol.Invalid("must be a string")
        if len(value) < min_len:
            raise vol.Invalid("must not be empty" if min_len == 1 else f"needs {min_len}+ chars")
        if len(value) > max_len:
            raise vol.Invalid(f"must be at most {max_len} characters")
        return value

    return check


def _pattern(regex: re.Pattern[str], rule: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not regex.match(value):
            raise vol.Invalid(rule)
        return value

    return check


def _one_of(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise vol.Invalid("must be one of " + ", ".join(repr(c) for c in choices))
        return str(value)

    return check


def _auto_or(inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value == AUTO:
            return AUTO
        try:
            return inner(value)
        except vol.Invalid as err:
            raise vol.Invalid(f"must be 'auto' or {err.msg.removeprefix('must be ')}") from err

    return check


def _optional(inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        return None if value is None or value == "" else inner(value)

    return check


def _frozen(value: list[Any]) -> tuple[Any, ...]:
    # The frozen config holds tuples, not lists.
    return tuple(value)


_TOPIC_RULE = "must be topic levels of [A-Za-z0-9_-], separated by '/', without wildcards"

_TLS = {
    vol.Optional("enabled"): _bool,
    vol.Optional("ca_certs"): _optional(_str(1)),
    vol.Optional("certfile"): _optional(_str(1)),
    vol.Optional("keyfile"): _optional(_str(1)),
    vol.Optional("insecure"): _bool,
}

SCHEMA = vol.Schema(
    {
        vol.Optional("log_level"): _one_of("debug", "info", "warning", "error", "critical"),
        vol.Optional("mqtt", default={}): {
            vol.Optional("host"): _str(1, 253),
            vol.Optional("port"): _int(1, 65535),
            vol.Optional("username"): _optional(_str(1, 256)),
            vol.Optional("password"): _optional(_str(1, 256)),
            vol.Optional("client_id"): _optional(
                _pattern(TOPIC_LEVEL, "must be 1-64 characters of [A-Za-z0-9_-]")
            ),
            vol.Optional("base_topic"): _pattern(TOPIC_PATH, _TOPIC_RULE),
            vol.Optional("allowed_reply_prefixes"): [_pattern(TOPIC_PATH, _TOPIC_RULE)],
            vol.Optional("shared_group"): _optional(
                _pattern(TOPIC_LEVEL, "must be 1-64 characters of [A-Za-z0-9_-]")
            ),
            vol.Optional("protocol"): _one_of("5", "3.1.1"),
            vol.Optional("keepalive_s"): _int(5, 3600),
            vol.Optional("tls", default={}): _TLS,
        },
        vol.Optional("discovery", default={}): {
            vol.Optional("enabled"): _bool,
            vol.Optional("prefix"): _pattern(TOPIC_PATH, _TOPIC_RULE),
        },
        vol.Optional("telemetry", default={}): {
            vol.Optional("interval_s"): _number(1, 86_400),
        },
        vol.Optional("model", default={}): {
            vol.Optional("name"): _auto_or(
                _pattern(TOPIC_LEVEL, "must be a model id of [A-Za-z0-9_-]")
            ),
            vol.Optional("dir"): _optional(_str(1)),
            vol.Optional("precision"): _one_of(AUTO, "int8", "fp32"),
        },
        vol.Optional("engine", default={}): {
            vol.Optional("threads"): _auto_or(_int(1, 256)),
            vol.Optional("max_batch"): _auto_or(_int(1, 64)),
            vol.Optional("context_tokens"): _auto_or(_int(256, 131_072)),
            vol.Optional("max_tokens"): _int(1, MAX_TOKENS_LIMIT),
            vol.Optional("temperature"): _number(0.0, 2.0),
            vol.Optional("system_prompt"): _str(0, 4000),
        },
        vol.Optional("scheduler", default={}): {
            vol.Optional("queue_size"): _int(1, 10_000),
            vol.Optional("request_timeout_s"): _number(0.0, 86_400, lo_open=True),
            vol.Optional("rate_limit_per_source"): _optional(_number(0.0, 100_000, lo_open=True)),
        },
        vol.Optional("sandbox", default={}): {
            vol.Optional("enabled"): _bool,
            vol.Optional("memory_mb"): _auto_or(_int(128, 1_048_576)),
        },
        vol.Optional("hermes", default={}): {
            vol.Optional("enabled"): _bool,
        },
        vol.Optional("sessions", default={}): {
            vol.Optional("idle_s"): _number(1, 7 * 86_400),
            vol.Optional("max_sessions"): _int(1, 100_000),
            vol.Optional("max_turns"): _int(1, 1000),
        },
        vol.Optional("wyoming", default={}): {
            vol.Optional("enabled"): _bool,
            vol.Optional("host"): _str(1, 253),
            vol.Optional("port"): _int(1, 65535),
            vol.Optional("languages"): vol.All(
                [_pattern(LANGUAGE, "must be language codes such as 'en' or 'de-CH'")],
                vol.Length(max=64, msg="must list at most 64 languages"),
                _frozen,
            ),
        },
        vol.Optional("web", default={}): {
            vol.Optional("enabled"): _bool,
            vol.Optional("host"): _str(1, 253),
            vol.Optional("port"): _int(1, 65535),
            vol.Optional("keep_prompts"): _bool,
        },
        vol.Optional("http", default={}): {
            vol.Optional("enabled"): _bool,
            vol.Optional("host"): _str(1, 253),
            vol.Optional("port"): _int(1, 65535),
            vol.Optional("api_key"): _optional(_str(1, 256)),
        },
        vol.Optional("tools", default={}): {
            vol.Optional("grounding"): _bool,
            vol.Optional("decide"): _bool,
        },
    }
)


def validate(raw: Any) -> dict[str, Any]:
    """The checked values of a raw mapping (from YAML or JSON), or ConfigError naming the
    first problem (one line: the user fixes it and reruns)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"(top level): must be a mapping of keys, got {_describe(raw)}")
    try:
        data: dict[str, Any] = SCHEMA(raw)
    except vol.MultipleInvalid as err:
        raise ConfigError(_format_error(err.errors[0], raw)) from None
    return data


def _format_error(err: vol.Invalid, raw: Any) -> str:
    path = ".".join(str(part) for part in err.path) or "(top level)"
    if err.msg == "extra keys not allowed":
        return f"{path}: unknown key (check the spelling against config.yaml.example)"
    if err.msg.startswith("expected a dictionary"):
        return f"{path}: must be a mapping of keys, got {_describe(_lookup(raw, err.path))}"
    if err.msg.startswith("expected a list"):
        return f"{path}: must be a list, got {_describe(_lookup(raw, err.path))}"
    return f"{path}: {err.msg}, got {_describe(_lookup(raw, err.path))}"


def _lookup(raw: Any, path: list[Any]) -> Any:
    for part in path:
        try:
            raw = raw[part]
        except (KeyError, IndexError, TypeError):
            return None
    return raw


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
