"""The one place that reads configuration: YAML or the add-on's JSON options in, frozen
dataclasses out. Nothing after this module touches a raw dict.

`auto` values stay the literal string "auto" here; `assistant.plan` resolves them from the
hardware probe.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from assistant.config_schema import AUTO, Auto, ConfigError, validate

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
    # For requests that set none (Home Assistant sends no temperature) and bring no system
    # prompt, chosen from the QA figures of benchmarks/defaults_sweep.py (RESULTS.md, issue
    # 15): greedy answered right and in English more often than any sampled setting (0.7
    # drifted into French), and the short-answer prompt kept replies from running on.
    temperature: float = 0.0
    system_prompt: str = "You are a helpful home assistant. Answer in one or two short sentences."


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
    # Announced to Home Assistant, whose agent picker offers the agent only for these;
    # empty: the languages of the running model (assistant/voice/languages.py).
    languages: tuple[str, ...] = ()


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
class ToolsConfig:
    """Requests with tools: `grounding` limits names, areas and domains in calls to HA's
    Static Context; `decide` chooses text or a call before generating (core/act.py)."""

    grounding: bool = True
    decide: bool = True


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
    tools: ToolsConfig = ToolsConfig()
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


def parse_config(
    raw: Any, *, source: str = "built-in defaults", env: Mapping[str, str] | None = None
) -> Config:
    """Validate a raw mapping (from YAML or JSON) and build the frozen config."""
    data = validate(raw)

    env = os.environ if env is None else env
    _apply_environment(data["mqtt"], env)
    return Config(
        mqtt=_mqtt(data.pop("mqtt"), env),
        model=_model(data.pop("model")),
        http=_http(data.pop("http"), env),
        source=source,
        **{key: _SECTIONS[key](**value) for key, value in data.items() if key in _SECTIONS},
        **{key: value for key, value in data.items() if key not in _SECTIONS},
    )


_SECTIONS: dict[str, Any] = {
    "discovery": DiscoveryConfig,
    "telemetry": TelemetryConfig,
    "engine": EngineConfig,
    "scheduler": SchedulerConfig,
    "sandbox": SandboxConfig,
    "hermes": HermesConfig,
    "sessions": SessionsConfig,
    "wyoming": WyomingConfig,
    "web": WebConfig,
    "tools": ToolsConfig,
}


def _mqtt(mq: dict[str, Any], env: Mapping[str, str]) -> MqttConfig:
    tls = mq.pop("tls")
    for key in ("ca_certs", "certfile", "keyfile"):
        if key in tls:
            tls[key] = _path(tls[key])
    if "allowed_reply_prefixes" in mq:
        mq["allowed_reply_prefixes"] = tuple(mq["allowed_reply_prefixes"])
    for key, name in (("username", ENV_USERNAME), ("password", ENV_PASSWORD)):
        if env.get(name):
            mq[key] = env[name]
    return MqttConfig(**mq, tls=TlsConfig(**tls))


def _model(model: dict[str, Any]) -> ModelConfig:
    if "dir" in model:
        model["dir"] = _path(model["dir"])
    return ModelConfig(**model)


def _http(http: dict[str, Any], env: Mapping[str, str]) -> HttpConfig:
    if env.get(ENV_HTTP_API_KEY):
        http["api_key"] = env[ENV_HTTP_API_KEY]
    return HttpConfig(**http)


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
