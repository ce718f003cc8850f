"""The one place that reads configuration: YAML or the add-on's JSON options in, frozen
dataclasses out. Nothing after this module touches a raw dict.

`auto` values stay the literal string "auto" here; `assistant.plan` resolves them from the
hardware probe.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import voluptuous as vol
import yaml

Auto = Literal["auto"]
AUTO: Auto = "auto"
Precision = Literal["int8", "fp32"]

# Where the service looks when no --config is given (contract.md: "./config.yaml").
DEFAULT_CONFIG_PATH = Path("config.yaml")
ENV_USERNAME = "EDGE_ASSISTANT_MQTT_USERNAME"
ENV_PASSWORD = "EDGE_ASSISTANT_MQTT_PASSWORD"
# The add-on's run script finds the broker through the Supervisor and passes it here.
ENV_HOST = "EDGE_ASSISTANT_MQTT_HOST"
ENV_PORT = "EDGE_ASSISTANT_MQTT_PORT"
ENV_TLS = "EDGE_ASSISTANT_MQTT_TLS"
# The HTTP API's bearer token: a secret, so it may come from the environment too.
ENV_HTTP_API_KEY = "EDGE_ASSISTANT_HTTP_API_KEY"

MAX_TOKENS_LIMIT = 4096
TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A base topic or reply prefix: one or more safe levels, no wildcards, not $SYS.
TOPIC_PATH = re.compile(r"^[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64}){0,7}$")


class ConfigError(Exception):
    """An invalid configuration; the message names the key path, the rule and the value."""


# --- validators whose messages read "<rule>" so errors become "<path>: <rule>, got <value>" ---


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


_TOPIC_RULE = "must be topic levels of [A-Za-z0-9_-], separated by '/', without wildcards"

_TLS = {
    vol.Optional("enabled", default=False): _bool,
    vol.Optional("ca_certs", default=None): _optional(_str(1)),
    vol.Optional("certfile", default=None): _optional(_str(1)),
    vol.Optional("keyfile", default=None): _optional(_str(1)),
    vol.Optional("insecure", default=False): _bool,
}

SCHEMA = vol.Schema(
    {
        vol.Optional("log_level", default="info"): _one_of(
            "debug", "info", "warning", "error", "critical"
        ),
        vol.Optional("mqtt", default={}): {
            vol.Optional("host", default="localhost"): _str(1, 253),
            vol.Optional("port", default=1883): _int(1, 65535),
            vol.Optional("username", default=None): _optional(_str(1, 256)),
            vol.Optional("password", default=None): _optional(_str(1, 256)),
            vol.Optional("client_id", default=None): _optional(
                _pattern(TOPIC_LEVEL, "must be 1-64 characters of [A-Za-z0-9_-]")
            ),
            vol.Optional("base_topic", default="edge_assistant"): _pattern(TOPIC_PATH, _TOPIC_RULE),
            vol.Optional("allowed_reply_prefixes", default=[]): [_pattern(TOPIC_PATH, _TOPIC_RULE)],
            vol.Optional("shared_group", default=None): _optional(
                _pattern(TOPIC_LEVEL, "must be 1-64 characters of [A-Za-z0-9_-]")
            ),
            vol.Optional("protocol", default="5"): _one_of("5", "3.1.1"),
            vol.Optional("keepalive_s", default=30): _int(5, 3600),
            vol.Optional("tls", default={}): _TLS,
        },
        vol.Optional("discovery", default={}): {
            vol.Optional("enabled", default=True): _bool,
            vol.Optional("prefix", default="homeassistant"): _pattern(TOPIC_PATH, _TOPIC_RULE),
        },
        vol.Optional("telemetry", default={}): {
            vol.Optional("interval_s", default=30): _number(1, 86_400),
        },
        vol.Optional("model", default={}): {
            vol.Optional("name", default=AUTO): _auto_or(
                _pattern(TOPIC_LEVEL, "must be a model id of [A-Za-z0-9_-]")
            ),
            vol.Optional("dir", default=None): _optional(_str(1)),
            vol.Optional("precision", default=AUTO): _one_of(AUTO, "int8", "fp32"),
        },
        vol.Optional("engine", default={}): {
            vol.Optional("threads", default=AUTO): _auto_or(_int(1, 256)),
            vol.Optional("max_batch", default=AUTO): _auto_or(_int(1, 64)),
            vol.Optional("context_tokens", default=AUTO): _auto_or(_int(256, 131_072)),
            vol.Optional("max_tokens", default=256): _int(1, MAX_TOKENS_LIMIT),
            vol.Optional("temperature", default=0.7): _number(0.0, 2.0),
            vol.Optional("system_prompt", default="You are a helpful home assistant."): _str(
                0, 4000
            ),
        },
        vol.Optional("scheduler", default={}): {
            vol.Optional("queue_size", default=64): _int(1, 10_000),
            vol.Optional("request_timeout_s", default=120): _number(0.0, 86_400, lo_open=True),
            vol.Optional("rate_limit_per_source", default=None): _optional(
                _number(0.0, 100_000, lo_open=True)
            ),
        },
        vol.Optional("sandbox", default={}): {
            vol.Optional("enabled", default=True): _bool,
            vol.Optional("memory_mb", default=AUTO): _auto_or(_int(128, 1_048_576)),
        },
        vol.Optional("hermes", default={}): {
            vol.Optional("enabled", default=False): _bool,
        },
        vol.Optional("sessions", default={}): {
            vol.Optional("idle_s", default=900): _number(1, 7 * 86_400),
            vol.Optional("max_sessions", default=100): _int(1, 100_000),
            vol.Optional("max_turns", default=10): _int(1, 1000),
        },
        vol.Optional("wyoming", default={}): {
            vol.Optional("enabled", default=False): _bool,
            vol.Optional("host", default="0.0.0.0"): _str(1, 253),
            vol.Optional("port", default=10600): _int(1, 65535),
        },
        vol.Optional("web", default={}): {
            vol.Optional("enabled", default=True): _bool,
            vol.Optional("host", default="127.0.0.1"): _str(1, 253),
            vol.Optional("port", default=8099): _int(1, 65535),
            vol.Optional("keep_prompts", default=False): _bool,
        },
        vol.Optional("http", default={}): {
            vol.Optional("enabled", default=False): _bool,
            vol.Optional("host", default="0.0.0.0"): _str(1, 253),
            vol.Optional("port", default=11434): _int(1, 65535),
            vol.Optional("api_key", default=None): _optional(_str(1, 256)),
        },
    }
)


@dataclass(frozen=True)
class TlsConfig:
    enabled: bool = False
    ca_certs: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    insecure: bool = False


@dataclass(frozen=True)
class MqttConfig:
    host: str = "localhost"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str | None = None
    base_topic: str = "edge_assistant"
    allowed_reply_prefixes: tuple[str, ...] = ()
    shared_group: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = 30
    tls: TlsConfig = TlsConfig()


@dataclass(frozen=True)
class DiscoveryConfig:
    enabled: bool = True
    prefix: str = "homeassistant"


@dataclass(frozen=True)
class TelemetryConfig:
    interval_s: float = 30.0


@dataclass(frozen=True)
class ModelConfig:
    name: str = AUTO
    dir: Path | None = None
    precision: Precision | Auto = AUTO


@dataclass(frozen=True)
class EngineConfig:
    threads: int | Auto = AUTO
    max_batch: int | Auto = AUTO
    context_tokens: int | Auto = AUTO
    max_tokens: int = 256
    temperature: float = 0.7
    system_prompt: str = "You are a helpful home assistant."


@dataclass(frozen=True)
class SchedulerConfig:
    queue_size: int = 64
    request_timeout_s: float = 120.0
    rate_limit_per_source: float | None = None  # requests per minute, per source


@dataclass(frozen=True)
class SandboxConfig:
    enabled: bool = True
    memory_mb: int | Auto = AUTO


@dataclass(frozen=True)
class HermesConfig:
    enabled: bool = False


@dataclass(frozen=True)
class SessionsConfig:
    idle_s: float = 900.0  # a conversation is forgotten after this long without a turn
    max_sessions: int = 100  # beyond this, the least recently used is forgotten
    max_turns: int = 10  # user/assistant pairs kept per conversation (before token trimming)


@dataclass(frozen=True)
class WyomingConfig:
    enabled: bool = False
    host: str = "0.0.0.0"  # Home Assistant connects over the LAN
    port: int = 10600


@dataclass(frozen=True)
class WebConfig:
    """The add-on's own page (HA ingress). In the add-on it always listens on the ingress
    port for the Supervisor's address only; outside HA `host`/`port` apply."""

    enabled: bool = True
    host: str = "127.0.0.1"  # localhost only unless the user opens it up
    port: int = 8099  # the add-on's ingress_port
    keep_prompts: bool = False  # privacy: recent requests show no prompt text unless set


@dataclass(frozen=True)
class HttpConfig:
    """The Ollama- and OpenAI-compatible HTTP API (port 11434 is Ollama's)."""

    enabled: bool = False
    host: str = "0.0.0.0"  # Home Assistant connects over its network
    port: int = 11434
    api_key: str | None = field(default=None, repr=False)  # Bearer token; None: open


@dataclass(frozen=True)
class Config:
    log_level: str = "info"
    mqtt: MqttConfig = MqttConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    model: ModelConfig = ModelConfig()
    engine: EngineConfig = EngineConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    sandbox: SandboxConfig = SandboxConfig()
    hermes: HermesConfig = HermesConfig()
    sessions: SessionsConfig = SessionsConfig()
    wyoming: WyomingConfig = WyomingConfig()
    web: WebConfig = WebConfig()
    http: HttpConfig = HttpConfig()
    source: str = "built-in defaults"  # where the values came from, for logs and doctor

    def public_dict(self) -> dict[str, Any]:
        """The resolved config without secrets, for `{base}/info` and `doctor --json`."""
        data: dict[str, Any] = _to_plain(self)
        data["mqtt"]["password"] = "***" if self.mqtt.password else None
        data["mqtt"]["username"] = "***" if self.mqtt.username else None
        data["http"]["api_key"] = "***" if self.http.api_key else None
        return data


def _to_plain(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {name: _to_plain(getattr(obj, name)) for name in obj.__dataclass_fields__}
    if isinstance(obj, tuple):
        return [_to_plain(item) for item in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


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


def parse_config(
    raw: Any, *, source: str = "built-in defaults", env: Mapping[str, str] | None = None
) -> Config:
    """Validate a raw mapping (from YAML or JSON) and build the frozen config."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"(top level): must be a mapping of keys, got {_describe(raw)}")
    try:
        data = SCHEMA(raw)
    except vol.MultipleInvalid as err:
        # One line, the first problem: the user fixes it and reruns.
        raise ConfigError(_format_error(err.errors[0], raw)) from None

    env = os.environ if env is None else env
    _apply_environment(data["mqtt"], env)
    mq, tls = data["mqtt"], data["mqtt"]["tls"]
    eng, sch = data["engine"], data["scheduler"]
    return Config(
        log_level=data["log_level"],
        mqtt=MqttConfig(
            host=mq["host"],
            port=mq["port"],
            username=env.get(ENV_USERNAME) or mq["username"],
            password=env.get(ENV_PASSWORD) or mq["password"],
            client_id=mq["client_id"],
            base_topic=mq["base_topic"],
            allowed_reply_prefixes=tuple(mq["allowed_reply_prefixes"]),
            shared_group=mq["shared_group"],
            protocol=mq["protocol"],
            keepalive_s=mq["keepalive_s"],
            tls=TlsConfig(
                enabled=tls["enabled"],
                ca_certs=_path(tls["ca_certs"]),
                certfile=_path(tls["certfile"]),
                keyfile=_path(tls["keyfile"]),
                insecure=tls["insecure"],
            ),
        ),
        discovery=DiscoveryConfig(**data["discovery"]),
        telemetry=TelemetryConfig(**data["telemetry"]),
        model=ModelConfig(
            name=data["model"]["name"],
            dir=_path(data["model"]["dir"]),
            precision=data["model"]["precision"],
        ),
        engine=EngineConfig(**eng),
        scheduler=SchedulerConfig(**sch),
        sandbox=SandboxConfig(**data["sandbox"]),
        hermes=HermesConfig(**data["hermes"]),
        sessions=SessionsConfig(**data["sessions"]),
        wyoming=WyomingConfig(**data["wyoming"]),
        web=WebConfig(**data["web"]),
        http=HttpConfig(
            **{**data["http"], "api_key": env.get(ENV_HTTP_API_KEY) or data["http"]["api_key"]}
        ),
        source=source,
    )


def _apply_environment(mqtt: dict[str, Any], env: Mapping[str, str]) -> None:
    """Broker settings from the environment win over the file (secrets never sit in it)."""
    if env.get(ENV_HOST):
        mqtt["host"] = env[ENV_HOST]
    if env.get(ENV_PORT):
        port = env[ENV_PORT]
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"{ENV_PORT}: must be a port number 1-65535, got {port!r}")
        mqtt["port"] = int(port)
    if env.get(ENV_TLS):
        flag = env[ENV_TLS].strip().lower()
        if flag not in ("true", "false"):
            raise ConfigError(f"{ENV_TLS}: must be true or false, got {env[ENV_TLS]!r}")
        mqtt["tls"] = {**mqtt["tls"], "enabled": flag == "true"}


def options_to_raw(options: Any) -> Any:
    """The add-on's options.json as raw config: the options mirror the config keys; an
    option left unset (an "auto" number) is absent or null, and takes the default."""
    if isinstance(options, dict):
        return {k: options_to_raw(v) for k, v in options.items() if v is not None}
    return options


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read `path` (YAML or JSON), or ./config.yaml when it exists, else the defaults."""
    if path is None:
        if not DEFAULT_CONFIG_PATH.is_file():
            return parse_config({}, env=env)
        path = DEFAULT_CONFIG_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config file: {err}") from err
    try:
        # JSON is a subset of YAML 1.2, so the add-on's options.json loads the same way.
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{path}:{line} not valid YAML/JSON: {err}") from err
    if path.suffix == ".json":
        raw = options_to_raw(raw)
    return parse_config(raw, source=str(path), env=env)
