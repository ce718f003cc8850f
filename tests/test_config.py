"""Config: the schema, the error messages, the example file and the environment overrides."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from assistant.config import load_config, parse_config
from assistant.config_schema import AUTO, ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config.yaml.example"


def test_defaults_match_the_contract() -> None:
    config = parse_config({}, env={})
    assert config.mqtt.host == "localhost"
    assert config.mqtt.port == 1883
    assert config.mqtt.base_topic == "edge_assistant"
    assert config.discovery.prefix == "homeassistant"
    assert config.telemetry.interval_s == 30
    assert config.engine.threads == AUTO
    assert config.engine.max_tokens == 256
    assert config.scheduler.queue_size == 64
    assert config.sandbox.enabled is True
    assert config.hermes.enabled is False


def test_example_file_validates_and_documents_every_key() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.source == str(EXAMPLE)
    raw = yaml.safe_load(EXAMPLE.read_text())
    defaults = parse_config({}, env={}).public_dict()

    def keys(tree: dict[str, object], prefix: str = "") -> set[str]:
        out: set[str] = set()
        for key, value in tree.items():
            out.add(prefix + key)
            if isinstance(value, dict):
                out |= keys(value, prefix + key + ".")
        return out

    # Every key the schema knows is spelled out in the example...
    assert keys(defaults) - {"source"} <= keys(raw)
    # ...and every line that sets a value explains it.
    for line in EXAMPLE.read_text().splitlines():
        if re.match(r"^\s*\w+:\s*[^\s#]", line):
            assert "#" in line, f"no comment on: {line.strip()}"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"engine": {"max_tokens": 99999}}, "engine.max_tokens: must be at most 4096, got 99999"),
        ({"engine": {"threads": 0}}, "engine.threads: must be 'auto' or at least 1, got 0"),
        ({"engine": {"threads": "many"}}, "engine.threads: must be 'auto' or an integer"),
        ({"mqtt": {"port": 70000}}, "mqtt.port: must be at most 65535, got 70000"),
        ({"mqtt": {"port": "1883"}}, "mqtt.port: must be an integer, got '1883'"),
        ({"mqtt": {"base_topic": "a/#"}}, "mqtt.base_topic: must be topic levels"),
        ({"mqtt": {"allowed_reply_prefixes": ["ok", "$SYS"]}}, "mqtt.allowed_reply_prefixes.1:"),
        ({"mqtt": {"tls": {"enabled": "yes"}}}, "mqtt.tls.enabled: must be true or false"),
        ({"wyoming": {"languages": ["en", "English"]}}, "wyoming.languages.1: must be language"),
        ({"wyoming": {"languages": ["en"] * 65}}, "wyoming.languages: must list at most 64"),
        ({"wyoming": {"languages": "en"}}, "wyoming.languages: must be a list"),
        ({"log_level": "loud"}, "log_level: must be one of 'debug'"),
        ({"engin": {}}, "engin: unknown key"),
        ({"scheduler": {"request_timeout_s": 0}}, "scheduler.request_timeout_s: must be greater"),
        ({"model": "big"}, "model: must be a mapping of keys, got 'big'"),
        (["a"], "(top level): must be a mapping of keys"),
    ],
)
def test_invalid_values_name_key_rule_and_value(raw: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, env={})
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_environment_overrides_credentials() -> None:
    env = {"EDGE_ASSISTANT_MQTT_USERNAME": "u", "EDGE_ASSISTANT_MQTT_PASSWORD": "s3cret"}
    config = parse_config({"mqtt": {"username": "file", "password": "file"}}, env=env)
    assert (config.mqtt.username, config.mqtt.password) == ("u", "s3cret")
    assert "s3cret" not in repr(config)
    assert config.public_dict()["mqtt"]["password"] == "***"


def test_json_options_load(tmp_path: Path) -> None:
    options = tmp_path / "options.json"
    options.write_text('{"log_level": "debug", "mqtt": {"host": "core-mosquitto"}}')
    config = load_config(options, env={})
    assert (config.log_level, config.mqtt.host) == ("debug", "core-mosquitto")


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt:\n  host: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+"):
        load_config(bad, env={})


def test_invalid_config_stops_the_cli_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine:\n  max_tokens: 99999\n")
    run = subprocess.run(
        [sys.executable, "-m", "assistant", "doctor", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "edge-assistant: config error: engine.max_tokens: must be at most 4096, got 99999"
    )


def test_broker_from_the_environment_wins() -> None:
    env = {
        "EDGE_ASSISTANT_MQTT_HOST": "core-mosquitto",
        "EDGE_ASSISTANT_MQTT_PORT": "8883",
        "EDGE_ASSISTANT_MQTT_TLS": "true",
    }
    config = parse_config({"mqtt": {"host": "file", "port": 1}}, env=env)
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls.enabled) == (
        "core-mosquitto",
        8883,
        True,
    )
    with pytest.raises(ConfigError, match=r"^EDGE_ASSISTANT_MQTT_PORT: must be a port"):
        parse_config({}, env={"EDGE_ASSISTANT_MQTT_PORT": "http"})


def test_addon_options_with_unset_numbers_mean_auto(tmp_path: Path) -> None:
    options = tmp_path / "options.json"
    options.write_text('{"engine": {"threads": null, "max_tokens": 64}, "model": {"dir": null}}')
    config = load_config(options, env={})
    assert (config.engine.threads, config.engine.max_tokens) == (AUTO, 64)


def test_http_section_defaults_and_secret_from_environment() -> None:
    config = parse_config({}, env={})
    assert (config.http.enabled, config.http.host, config.http.port) == (False, "0.0.0.0", 11434)
    assert config.http.api_key is None
    env = {"EDGE_ASSISTANT_HTTP_API_KEY": "from-env"}
    config = parse_config({"http": {"enabled": True, "api_key": "from-file"}}, env=env)
    assert config.http.api_key == "from-env"
    assert config.public_dict()["http"]["api_key"] == "***"
    assert "from-env" not in repr(config)
    with pytest.raises(ConfigError, match=r"http\.port: must be at most 65535"):
        parse_config({"http": {"port": 70000}}, env={})
