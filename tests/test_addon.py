"""The Home Assistant add-on: manifest, options schema, translations, images, s6 services,
health check, Dockerfile and AppArmor profile.

Docker and the Supervisor cannot run here, so everything around them is checked: the
manifest against the Supervisor's rules (known keys, the schema grammar and how it
validates values, the security rating), and the shell scripts by running them. The
Supervisor's API is the one test double (tests/supervisor_double.py): `run` goes through
the image test's stand-in bashio, which asks that API for the options as the real bashio
does (the service's own Supervisor client is tested against an HTTP double in
tests/test_supervisor_api.py). scripts/image-test.sh builds and runs the image itself.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import tomllib
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from assistant.config import WebConfig, WyomingConfig, load_config, parse_config
from assistant.supervisor_api import is_manual_broker
from tests.supervisor_double import SupervisorDouble, serving

ROOT = Path(__file__).resolve().parents[1]
ADDON = ROOT / "addon"
S6 = ROOT / "rootfs" / "etc" / "s6-overlay" / "s6-rc.d"
RUN = S6 / "edge-assistant" / "run"
FINISH = S6 / "edge-assistant" / "finish"
HEALTHCHECK = ROOT / "rootfs" / "usr" / "local" / "bin" / "edge-assistant-healthcheck"
SLUG = "edge_assistant"


def manifest() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ADDON / "config.yaml").read_text())
    return data


def project_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


# --- the manifest -------------------------------------------------------------------

REQUIRED_KEYS = {"name", "version", "slug", "description", "arch"}
# Every key the Supervisor's add-on ("app") schema knows; it silently drops the rest.
KNOWN_KEYS = REQUIRED_KEYS | {
    "machine", "url", "startup", "boot", "init", "advanced", "stage", "ports",
    "ports_description", "watchdog", "webui", "ingress", "ingress_port", "ingress_entry",
    "ingress_stream", "panel_icon", "panel_title", "panel_admin", "homeassistant",
    "host_network", "host_pid", "host_ipc", "host_uts", "host_dbus", "devices", "udev",
    "tmpfs", "map", "environment", "privileged", "apparmor", "full_access", "audio",
    "video", "gpio", "usb", "uart", "devicetree", "kernel_modules", "realtime",
    "hassio_api", "hassio_role", "homeassistant_api", "stdin", "legacy", "docker_api",
    "auth_api", "services", "discovery", "backup_exclude", "backup_pre", "backup_post",
    "backup", "options", "schema", "image", "ulimits", "timeout", "journald",
    "breaking_versions",
}  # fmt: skip
# Keys this add-on must never set: each lowers the security rating or widens access.
FORBIDDEN_KEYS = {
    "host_network", "host_pid", "host_ipc", "host_uts", "host_dbus", "privileged",
    "full_access", "docker_api", "devices", "udev", "gpio", "usb", "uart", "audio",
    "video", "devicetree", "kernel_modules", "realtime", "hassio_api", "hassio_role",
    "homeassistant_api", "watchdog",
}  # fmt: skip
# The linter rejects keys set to their default value.
DEFAULTS = {"init": True, "startup": "application", "boot": "auto", "apparmor": True}


def security_rating(config: Mapping[str, Any], custom_apparmor: bool) -> int:
    """The Supervisor's rating_security() for the keys that matter to this add-on."""
    rating = 5
    if config.get("apparmor", True) is False:
        rating -= 1
    elif custom_apparmor:
        rating += 1
    if config.get("ingress"):
        rating += 2
    elif config.get("auth_api"):
        rating += 1
    risky = {"NET_ADMIN", "SYS_ADMIN", "SYS_RAWIO", "SYS_PTRACE", "SYS_MODULE", "DAC_READ_SEARCH"}
    if risky & set(config.get("privileged", [])):
        rating -= 1
    rating -= {"manager": 1, "admin": 2}.get(config.get("hassio_role", "default"), 0)
    if config.get("host_network"):
        rating -= 1
    if config.get("host_pid"):
        rating -= 2
    if config.get("docker_api") or config.get("full_access"):
        rating = 1
    return max(1, min(8, rating))


def test_manifest_has_the_required_keys_and_only_known_ones() -> None:
    config = manifest()
    assert set(config) >= REQUIRED_KEYS
    assert set(config) <= KNOWN_KEYS, f"unknown keys: {set(config) - KNOWN_KEYS}"
    assert config["name"] == "Edge Assistant"
    assert config["slug"] == SLUG
    assert re.fullmatch(r"[-_.A-Za-z0-9]+", config["slug"])
    for key, default in DEFAULTS.items():
        assert config.get(key, object()) != default, f"{key} set to its default"


def test_manifest_matches_the_project() -> None:
    config = manifest()
    assert config["arch"] == ["aarch64", "amd64"]
    assert config["version"] == project_version()
    assert config["init"] is False
    assert "mqtt:need" in config["services"]
    assert "{arch}" in config["image"]
    assert "share:ro" in config["map"]
    assert any(pattern.startswith("models") for pattern in config["backup_exclude"])


def test_wyoming_is_discoverable_on_the_service_port() -> None:
    config = manifest()
    assert config["discovery"] == ["wyoming"]
    port = f"{WyomingConfig().port}/tcp"  # the add-on keeps the service's default port
    assert port in config["ports"] and config["ports"][port] is None  # not on the host
    assert port in config["ports_description"]
    translations = yaml.safe_load((ADDON / "translations" / "en.yaml").read_text())
    assert set(translations["network"]) == set(config["ports"])


def test_security_rating_is_eight() -> None:
    config = manifest()
    assert not FORBIDDEN_KEYS & set(config), FORBIDDEN_KEYS & set(config)
    assert (ADDON / "apparmor.txt").is_file()
    # 5, +1 for the AppArmor profile, +2 for ingress: the highest rating.
    assert security_rating(config, custom_apparmor=True) == 8
    without_ingress = {k: v for k, v in config.items() if k != "ingress"}
    assert security_rating(without_ingress, custom_apparmor=True) == 6


def test_ingress_serves_the_page_on_the_service_port() -> None:
    config = manifest()
    assert config["ingress"] is True
    assert config["ingress_port"] == WebConfig().port  # the listener's default port
    assert f"{config['ingress_port']}/tcp" not in config["ports"]  # never on the host
    assert config["panel_icon"].startswith("mdi:") and config["panel_title"].strip()


def test_repository_file() -> None:
    repo = yaml.safe_load((ROOT / "repository.yaml").read_text())
    assert set(repo) == {"name", "url", "maintainer"}
    assert repo["url"].startswith("https://")


def test_no_other_file_is_read_as_a_manifest() -> None:
    # The store reads every config.yaml/.yml/.json in the repository as an add-on.
    found = []
    for path in _walk(ROOT):
        if path.name in {"config.yaml", "config.yml", "config.json"}:
            found.append(path.relative_to(ROOT))
    assert found == [Path("addon/config.yaml")]


def _walk(folder: Path) -> Iterator[Path]:
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name in {"node_modules", "__pycache__"}:
            continue
        if entry.is_dir() and not entry.is_symlink():
            yield from _walk(entry)
        else:
            yield entry


def test_presentation_files() -> None:
    docs = (ADDON / "DOCS.md").read_text()
    for needle in ("mosquitto_pub", "mosquitto_sub", "edge_assistant/ask", "edge_assistant/reply"):
        assert needle in docs, needle
    assert f"## {project_version()}" in (ADDON / "CHANGELOG.md").read_text()
    assert (ADDON / "README.md").read_text().strip()


# --- the schema grammar and the Supervisor's validation --------------------------------


@dataclass(frozen=True)
class Element:
    """One parsed schema element such as `int(1,4096)` or `password?`."""

    kind: str
    optional: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    regex: str | None = None


_NUMBER = {"int": r"-?\d+", "float": r"-?\d*\.?\d+"}


def parse_element(text: str) -> Element:
    """Parse HA's schema grammar; ValueError for anything the Supervisor would refuse."""
    optional = text.endswith("?")
    body = text[:-1] if optional else text
    if body in {"str", "password", "int", "float", "bool", "email", "url", "port", "device"}:
        return Element(body, optional)
    if body.startswith("match(") and body.endswith(")"):
        regex = body[len("match(") : -1]
        re.compile(regex)
        return Element("match", optional, regex=regex)
    if body.startswith("list(") and body.endswith(")") and len(body) > len("list()"):
        return Element("list", optional, choices=tuple(body[len("list(") : -1].split("|")))
    if ranged := re.fullmatch(r"(int|float|str|password)\(([^,()]*),([^,()]*)\)", body):
        kind, low, high = ranged.groups()
        if kind in {"str", "password"}:
            # The grammar allows it, but the Supervisor then applies vol.Range to the
            # string itself, which refuses every value: never use length ranges.
            raise ValueError(f"{text}: str/password ranges reject every value in the Supervisor")
        pattern = _NUMBER[kind]
        if not all(re.fullmatch(pattern, bound) for bound in (low, high) if bound):
            raise ValueError(f"{text}: bounds must be {kind} numbers")
        return Element(kind, optional, float(low) if low else None, float(high) if high else None)
    raise ValueError(f"unknown schema element {text!r}")


def supervisor_validate(schema: Any, value: Any, path: str = "") -> Any:
    """Validate options the way the Supervisor does before writing /data/options.json."""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise TypeError(f"{path}: not a dict")
        out = {
            key: supervisor_validate(schema[key], v, f"{path}{key}.") for key, v in value.items()
        }
        for key, sub in schema.items():
            leaf = sub[0] if isinstance(sub, list) else sub
            if key not in out and not (isinstance(leaf, str) and leaf.endswith("?")):
                raise ValueError(f"{path}{key}: missing")
        return out
    if isinstance(schema, list):
        if not isinstance(value, list):
            raise TypeError(f"{path}: not a list")
        return [supervisor_validate(schema[0], item, path) for item in value]
    return _validate_leaf(parse_element(schema), value, path)


def _validate_number(element: Element, value: Any, path: str) -> float:
    number = int(value) if element.kind == "int" else float(value)
    too_low = element.low is not None and number < element.low
    if too_low or (element.high is not None and number > element.high):
        raise ValueError(f"{path}: {number} out of range")
    return number


def _validate_leaf(element: Element, value: Any, path: str) -> Any:
    if value is None:
        raise ValueError(f"{path}: missing required value")
    kind = element.kind
    if kind in {"int", "float"}:
        return _validate_number(element, value, path)
    if kind == "port":
        return _validate_number(Element("int", low=1, high=65535), value, path)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{path}: not a bool")
        return value
    if kind == "list":
        if str(value) not in element.choices:
            raise ValueError(f"{path}: {value!r} not in {element.choices}")
        return str(value)
    if kind == "match":
        assert element.regex is not None
        if not re.match(element.regex, str(value)):  # re.match, as the Supervisor does
            raise ValueError(f"{path}: {value!r} does not match")
        return str(value)
    return value


def leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, schema leaf) for every option; a list schema is one leaf."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def lookup(tree: Mapping[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def assign(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def options_to_raw(options: Mapping[str, Any]) -> dict[str, Any]:
    """The add-on's /data/options.json as the service's raw config.

    The options mirror the config keys one to one, so this is almost the identity: an
    "auto" number is an optional option left unset, which is absent from options.json and
    so takes the config's "auto" default; a null (never written by the Supervisor, but
    cheap to tolerate) means the same.
    """
    return {
        key: options_to_raw(value) if isinstance(value, Mapping) else value
        for key, value in options.items()
        if value is not None
    }


def test_every_schema_element_parses() -> None:
    for path, leaf in leaves(manifest()["schema"]):
        for text in leaf if isinstance(leaf, list) else [leaf]:
            element = parse_element(text)
            if element.kind == "match":
                assert element.regex is not None
                assert element.regex.startswith("^") and element.regex.endswith("$"), path


@pytest.mark.parametrize(
    "text",
    ["str(1,10)", "password(8,)", "int(a,b)", "list()", "integer", "match(", "float(1,2"],
)
def test_the_grammar_parser_refuses_what_the_supervisor_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_element(text)


def test_defaults_are_consistent_with_the_schema() -> None:
    config = manifest()
    schema, options = config["schema"], config["options"]
    assert supervisor_validate(schema, options) == options
    for path, leaf in leaves(schema):
        optional = isinstance(leaf, str) and leaf.endswith("?")
        has_default = lookup(options, path) is not None
        # HA: an optional option has no default; every other option has one.
        assert has_default != optional, path
    # Nothing in options that the schema does not know.
    assert {path for path, _ in leaves(options)} <= {path for path, _ in leaves(schema)}


def test_every_option_has_a_translation_and_vice_versa() -> None:
    translations = yaml.safe_load((ADDON / "translations" / "en.yaml").read_text())

    def check(schema: Mapping[str, Any], names: Mapping[str, Any], prefix: str) -> None:
        assert set(schema) == set(names), f"{prefix}: {set(schema) ^ set(names)}"
        for key, sub in schema.items():
            entry = names[key]
            assert entry["name"].strip() and entry["description"].strip(), prefix + key
            if isinstance(sub, dict):
                check(sub, entry["fields"], f"{prefix}{key}.")
            else:
                assert "fields" not in entry, prefix + key

    check(manifest()["schema"], translations["configuration"], "")


def test_default_options_are_a_valid_service_config(tmp_path: Path) -> None:
    options = supervisor_validate(manifest()["schema"], manifest()["options"])
    config = parse_config(options_to_raw(options), env={})
    assert config.engine.threads == "auto"
    assert config.engine.context_tokens == "auto"
    assert config.sandbox.memory_mb == "auto"
    assert config.scheduler.rate_limit_per_source is None
    assert config.mqtt.base_topic == "edge_assistant"
    # The service reads options.json itself (`serve --config /data/options.json`).
    path = tmp_path / "options.json"
    path.write_text(json.dumps(options))
    assert load_config(path, env={}).engine.max_tokens == 256


# Values for every match()/str option, so that each one is checked against the service.
SAMPLES: dict[str, list[Any]] = {
    "model.name": ["auto", "smollm2-135m-instruct-int8", "My_Model-2"],
    "engine.system_prompt": ["", "Answer in one sentence."],
    "mqtt.base_topic": ["edge_assistant", "home/kitchen/assistant"],
    "mqtt.allowed_reply_prefixes": [[], ["voice/replies", "satellites"]],
    "mqtt.host": ["core-mosquitto", "192.168.1.10"],
    "mqtt.username": ["addons"],
    "mqtt.password": ["s3cret!"],
    "http.api_key": ["s3cret-token"],
    "discovery.prefix": ["homeassistant", "ha/discovery"],
    "wyoming.languages": [[], ["en"], ["de-CH", "zh-Hans", "sr-Latn-RS"]],
}


def boundary_values(path: str, leaf: Any) -> list[Any]:
    if isinstance(leaf, list) or path in SAMPLES:
        return SAMPLES[path]
    element = parse_element(leaf)
    if element.kind in {"int", "float"}:
        assert element.low is not None and element.high is not None, f"{path}: bound it"
        cast = int if element.kind == "int" else float
        return [cast(element.low), cast(element.high)]
    if element.kind == "list":
        return list(element.choices)
    if element.kind == "bool":
        return [True, False]
    if element.kind == "port":
        return [1, 65535]
    raise AssertionError(f"{path}: add sample values for {leaf!r}")


def test_every_value_the_ui_accepts_is_accepted_by_the_service() -> None:
    config = manifest()
    checked = 0
    for path, leaf in leaves(config["schema"]):
        for value in boundary_values(path, leaf):
            options = copy.deepcopy(config["options"])
            assign(options, path, value)
            validated = supervisor_validate(config["schema"], options)
            parse_config(options_to_raw(validated), env={})
            checked += 1
    assert checked > 40


def test_credentials_come_from_the_environment() -> None:
    options = supervisor_validate(manifest()["schema"], manifest()["options"])
    env = {"EDGE_ASSISTANT_MQTT_USERNAME": "addons", "EDGE_ASSISTANT_MQTT_PASSWORD": "pw"}
    config = parse_config(options_to_raw(options), env=env)
    assert (config.mqtt.username, config.mqtt.password) == ("addons", "pw")
    assert "pw" not in json.dumps(config.public_dict())


# --- images -------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, after checking its structure and every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, kinds, idat = 8, [], b""
    width = height = 0
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert (depth, color) == (8, 6), "expected 8-bit RGBA"
        elif kind == b"IDAT":
            idat += body
        kinds.append(kind)
        offset += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    assert len(zlib.decompress(idat)) == height * (1 + 4 * width)
    return width, height


def png_pixels(data: bytes) -> bytes:
    """The decompressed image data (filter bytes included) of a PNG."""
    png_size(data)
    idat, offset = b"", 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        if data[offset + 4 : offset + 8] == b"IDAT":
            idat += data[offset + 8 : offset + 8 + length]
        offset += 12 + length
    return zlib.decompress(idat)


@pytest.mark.parametrize(("name", "size"), [("icon.png", (128, 128)), ("logo.png", (250, 100))])
def test_images_are_pngs_of_the_right_size(name: str, size: tuple[int, int]) -> None:
    assert png_size((ADDON / name).read_bytes()) == size


def test_images_are_made_by_the_script(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "make-addon-images.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True)
    for name in ("icon.png", "logo.png"):
        assert png_pixels((tmp_path / name).read_bytes()) == png_pixels(
            (ADDON / name).read_bytes()
        ), f"{name} differs from the script's drawing: rerun scripts/make-addon-images.py"


# --- s6-overlay services ----------------------------------------------------------------


def git_modes() -> dict[str, str]:
    listing = subprocess.run(
        ["git", "ls-files", "-s", "rootfs", "scripts"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {line.split("\t")[1]: line.split()[0] for line in listing.splitlines()}


def test_s6_service_layout_and_modes() -> None:
    assert (S6 / "edge-assistant" / "type").read_text().strip() == "longrun"
    assert (S6 / "edge-assistant" / "dependencies.d" / "base").is_file()
    assert (S6 / "user" / "contents.d" / "edge-assistant").is_file()
    modes = git_modes()
    for path in (RUN, FINISH, HEALTHCHECK, ROOT / "scripts" / "build-image-venv.sh"):
        assert modes.get(str(path.relative_to(ROOT))) == "100755", f"{path} not executable in git"
    assert not (ROOT / "rootfs" / "README.md").exists()  # COPY rootfs / would ship it


def test_run_execs_the_service_with_no_secret_on_argv() -> None:
    text = RUN.read_text()
    assert text.startswith("#!/command/with-contenv bashio\n")
    exec_lines = [line for line in text.splitlines() if line.strip().startswith("exec ")]
    assert exec_lines == ['exec "${SERVICE}" serve --config "${OPTIONS}"']
    assert "/opt/venv/bin/edge-assistant" in text and "/data/options.json" in text
    # The service finds the broker (assistant/supervisor_api.py); the script only clears
    # stale broker variables, and never expands a secret into a command or a log.
    assert "bashio::services" not in text
    assert "unset EDGE_ASSISTANT_MQTT_HOST" in text
    assert not re.search(r"\$\{?(EDGE_ASSISTANT_MQTT_PASSWORD|SUPERVISOR_TOKEN)", text)


def test_finish_halts_and_records_the_exit_code() -> None:
    text = FINISH.read_text()
    assert text.startswith("#!/command/with-contenv bashio\n")
    assert "/run/s6-linux-init-container-results/exitcode" in text
    assert "exec /run/s6/basedir/bin/halt" in text


# The stand-in bashio of the image test (tests/image/base/): the real library's behaviour
# for the functions `run` calls. bashio::config asks the Supervisor API
# (GET $SUPERVISOR_API/addons/self/options/config), not /data/options.json; the API is
# the test double tests/supervisor_double.py.
BASHIO = ROOT / "tests" / "image" / "base" / "bashio"
SUPERVISOR_TOKEN = "supervisor-secret"

FAKE_SERVICE = """#!{python}
import json, os, sys
with open(os.environ["FAKE_CALLS"], "a") as out:
    out.write(json.dumps({{"argv": sys.argv[1:], "env": dict(os.environ)}}) + "\\n")
"""


@dataclass
class AddonSandbox:
    """The add-on's folders in a temporary directory, a fake service binary and the
    Supervisor API double that bashio asks for the options."""

    root: Path
    supervisor: SupervisorDouble

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "SUPERVISOR_TOKEN": SUPERVISOR_TOKEN,
            "SUPERVISOR_API": self.supervisor.url,
            "EDGE_ASSISTANT_OPTIONS": str(self.root / "data" / "options.json"),
            "EDGE_ASSISTANT_MODELS_DIR": str(self.root / "data" / "models"),
            "EDGE_ASSISTANT_BUILTIN_MODELS": str(self.root / "opt" / "models"),
            "EDGE_ASSISTANT_SHARE": str(self.root / "share" / "edge_assistant"),
            "EDGE_ASSISTANT_HEALTH_DIR": str(self.root / "run" / "edge-assistant"),
            "EDGE_ASSISTANT_BIN": str(self.root / "bin" / "edge-assistant"),
            # The interpreter whose packages decide whether GGUFs can be converted: this
            # one has the `prepare` extra (scripts/setup.sh).
            "EDGE_ASSISTANT_PYTHON": sys.executable,
            "FAKE_CALLS": str(self.root / "calls.jsonl"),
        }

    def run(
        self, options: Mapping[str, Any], extra_env: Mapping[str, str] | None = None
    ) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
        """Run `run` as s6 would: `bashio run` (errexit, nounset, pipefail)."""
        # The Supervisor keeps the options and writes options.json (read by the service).
        self.supervisor.write_options(options, self.root / "data")
        done = subprocess.run(
            ["bash", str(BASHIO), str(RUN)],
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        calls_file = self.root / "calls.jsonl"
        calls = [json.loads(line) for line in calls_file.read_text().splitlines()]
        calls_file.write_text("")
        return done, calls


@pytest.fixture
def addon(tmp_path: Path) -> Iterator[AddonSandbox]:
    for tool in ("curl", "jq"):  # what bashio uses (Debian packages; setup installs them)
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run scripts/setup.sh (apt-get install {tool})")
    for folder in ("data", "opt/models/builtin-int8", "share/edge_assistant/models", "bin", "run"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "opt/models/builtin-int8/manifest.json").write_text("{}")
    fake = tmp_path / "bin" / "edge-assistant"
    fake.write_text(FAKE_SERVICE.format(python=sys.executable))
    fake.chmod(0o755)
    (tmp_path / "calls.jsonl").write_text("")
    with serving(SupervisorDouble(token=SUPERVISOR_TOKEN)) as supervisor:
        yield AddonSandbox(tmp_path, supervisor)


# What the container's environment holds: the Supervisor's token, and broker variables a
# stale image or a user might have set, which the service would take for a manual broker.
CONTAINER_ENV = {
    "SUPERVISOR_TOKEN": SUPERVISOR_TOKEN,
    "EDGE_ASSISTANT_MQTT_HOST": "stale-host",
    "EDGE_ASSISTANT_MQTT_PASSWORD": "stale-secret",
}


def test_run_leaves_the_broker_to_the_service_and_keeps_secrets_off_argv(
    addon: AddonSandbox,
) -> None:
    done, calls = addon.run(manifest()["options"], CONTAINER_ENV)
    assert done.returncode == 0, done.stderr
    (call,) = calls
    assert call["argv"] == ["serve", "--config", addon.env["EDGE_ASSISTANT_OPTIONS"]]
    env = call["env"]
    assert env["SUPERVISOR_TOKEN"] == "supervisor-secret"  # the service asks the Supervisor
    assert not [name for name in env if name.startswith("EDGE_ASSISTANT_MQTT_")]
    assert env["EDGE_ASSISTANT_MODELS"] == addon.env["EDGE_ASSISTANT_MODELS_DIR"]
    assert env["ORT_DISABLE_TELEMETRY"] == "1"
    assert "secret" not in done.stderr + done.stdout
    # The built-in model is linked into the models folder; the heartbeat folder exists.
    link = addon.root / "data" / "models" / "builtin-int8"
    assert link.is_symlink() and link.resolve() == addon.root / "opt/models/builtin-int8"
    assert (addon.root / "run" / "edge-assistant").is_dir()


def test_manual_broker_options_reach_the_service_and_win(tmp_path: Path) -> None:
    schema = manifest()["schema"]
    assert schema["mqtt"]["host"].endswith("?")  # optional: unset = the broker add-on
    defaults = supervisor_validate(schema, manifest()["options"])
    assert "host" not in defaults["mqtt"]
    path = tmp_path / "options.json"
    path.write_text(json.dumps(defaults))
    assert not is_manual_broker(load_config(path, env={}), {})

    options = copy.deepcopy(defaults)
    options["mqtt"].update(host="broker.lan", port=8883, username="me", password="pw")
    path.write_text(json.dumps(supervisor_validate(schema, options)))
    config = load_config(path, env={})
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.username) == ("broker.lan", 8883, "me")
    assert config.mqtt.password == "pw"
    assert is_manual_broker(config, {})


def test_run_prepares_dropped_gguf_files_once_and_keeps_user_models(
    addon: AddonSandbox,
) -> None:
    share = addon.root / "share" / "edge_assistant"
    (share / "models" / "Tiny.Q8_0.gguf").write_bytes(b"GGUF")
    (share / "Old.Q4_0.gguf").write_bytes(b"GGUF")  # the first releases' layout
    for folder in (share / "models" / "mine-int8", share / "older-int8"):
        folder.mkdir()
        (folder / "manifest.json").write_text("{}")
    models = addon.root / "data" / "models"
    (models / "builtin-int8").mkdir(parents=True)  # the user's own model of the same id
    (models / "stale").symlink_to(addon.root / "opt" / "models" / "gone")

    done, calls = addon.run(manifest()["options"])
    assert done.returncode == 0, done.stderr
    *prepares, serve = calls
    assert [call["argv"][:3] for call in prepares] == [["model", "prepare", "--gguf"]] * 2
    assert sorted(call["argv"][3] for call in prepares) == sorted(
        [str(share / "models" / "Tiny.Q8_0.gguf"), str(share / "Old.Q4_0.gguf")]
    )
    assert all(call["argv"][4:6] == ["--precision", "int8"] for call in prepares)
    assert serve["argv"][0] == "serve"
    assert not (models / "builtin-int8").is_symlink()
    assert not (models / "stale").is_symlink()
    for name, folder in (("mine-int8", share / "models"), ("older-int8", share)):
        assert (models / name).resolve() == folder / name
    assert not (models / "models").exists()  # the share's models folder is not a model

    done, calls = addon.run(manifest()["options"])
    assert [call["argv"][0] for call in calls] == ["serve"]


def test_without_the_converter_run_says_how_to_prepare_a_dropped_gguf(
    addon: AddonSandbox,
) -> None:
    # The published image has no `prepare` extra: no conversion, no stamp, a how-to.
    gguf = addon.root / "share" / "edge_assistant" / "models" / "Tiny.Q8_0.gguf"
    gguf.write_bytes(b"GGUF")
    no_converter = {"EDGE_ASSISTANT_PYTHON": shutil.which("false") or "/bin/false"}
    done, calls = addon.run(manifest()["options"], no_converter)
    assert done.returncode == 0, done.stderr
    assert [call["argv"][0] for call in calls] == ["serve"]
    assert f"WARNING: Not preparing {gguf} (int8): this image has no model converter" in (
        done.stdout
    )
    assert "edge-assistant model prepare --gguf FILE --precision int8" in done.stdout
    assert not list((addon.root / "data" / "models" / ".sources").iterdir())


def test_run_takes_the_options_from_the_supervisor_api(addon: AddonSandbox) -> None:
    (addon.root / "share" / "edge_assistant" / "models" / "Tiny.Q8_0.gguf").write_bytes(b"GGUF")
    options = copy.deepcopy(manifest()["options"])
    options["model"]["precision"] = "fp32"
    done, calls = addon.run(options)
    assert done.returncode == 0, done.stderr
    prepare, _serve = calls
    assert prepare["argv"][4:6] == ["--precision", "fp32"]
    assert (
        "/addons/self/options/config",
        f"Bearer {SUPERVISOR_TOKEN}",
    ) in addon.supervisor.requests


def test_without_the_supervisor_api_options_fall_back_to_their_defaults(
    addon: AddonSandbox,
) -> None:
    # Real bashio's failure mode: an error in the log, and every option its default.
    (addon.root / "share" / "edge_assistant" / "models" / "Tiny.Q8_0.gguf").write_bytes(b"GGUF")
    options = copy.deepcopy(manifest()["options"])
    options["model"]["precision"] = "fp32"
    done, calls = addon.run(options, {"SUPERVISOR_TOKEN": "wrong"})
    assert done.returncode == 0, done.stderr
    prepare, _serve = calls
    assert prepare["argv"][4:6] == ["--precision", "int8"]  # options.json says fp32
    assert "ERROR: Failed to get addon config from Supervisor API" in done.stdout


# --- the health check ---------------------------------------------------------------


def healthcheck(file: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "EDGE_ASSISTANT_HEALTH_FILE": str(file)}
    return subprocess.run(
        [str(HEALTHCHECK)], env=env, capture_output=True, text=True, timeout=10, check=False
    )


def test_healthcheck_follows_the_heartbeat_file(tmp_path: Path) -> None:
    beat = tmp_path / "health"
    assert healthcheck(beat).returncode == 1  # not connected yet
    beat.write_text(json.dumps({"ts": time.time(), "interval_s": 10, "mqtt": "connected"}))
    assert healthcheck(beat).returncode == 0
    old = time.time() - 29
    os.utime(beat, (old, old))
    assert healthcheck(beat).returncode == 0  # within 3 x 10 s
    old = time.time() - 40
    os.utime(beat, (old, old))
    result = healthcheck(beat)
    assert result.returncode == 1
    assert "old" in result.stdout
    beat.write_text("not json")  # unreadable period: 30 s is assumed
    os.utime(beat, (old, old))
    assert healthcheck(beat).returncode == 0


# --- the Dockerfile -----------------------------------------------------------------


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BUILD_FROM=ghcr.io/home-assistant/base-debian:" in text
    stages = text.split("\nFROM ")[1:]
    assert len(stages) == 6, "python, build, dependencies, prepare, venv (runtime), the add-on"
    python, build, dependencies, prepare, venv, final = stages
    assert python.startswith("${BUILD_FROM} AS python")
    assert "install -y --no-install-recommends python3 \\\n" in python
    assert build.startswith("python AS build") and "python3-venv" in build
    # The dependencies' layer sees no source: editing assistant/ must not invalidate it.
    assert "COPY assistant" not in build and "COPY assistant" not in dependencies
    assert dependencies.startswith("build AS dependencies")
    assert "scripts/build-image-venv.sh --dependencies /opt/venv" in dependencies
    assert prepare.startswith("build AS prepare")
    assert "scripts/build-image-venv.sh - /opt/models" in prepare
    assert venv.startswith("dependencies AS venv")
    assert "scripts/build-image-venv.sh /opt/venv -" in venv
    assert final.startswith("python\n")  # the interpreter only: no venv module, no sources
    assert "COPY --from=venv /opt/venv /opt/venv" in final
    assert "COPY --from=prepare /opt/models /opt/models" in final
    assert "COPY rootfs /" in final
    for build_only in ("build-essential", "gcc", "python3-dev", "python3-venv", "pip "):
        assert build_only not in final, build_only
    assert re.search(r"ENV ORT_DISABLE_TELEMETRY=1\b", final)
    assert "HEALTHCHECK" in final and "/usr/local/bin/edge-assistant-healthcheck" in final
    for label in ("io.hass.version", 'io.hass.type="addon"', "io.hass.arch"):
        assert label in final, label
    assert f"ARG BUILD_VERSION={project_version()}\n" in final


# --- the AppArmor profile -----------------------------------------------------------


def profile_block(text: str, name: str) -> str:
    """The body of the (child) profile `name`, found by brace matching."""
    start = text.index("{", re.search(rf"^\s*profile {name}\b", text, re.M).start())  # type: ignore[union-attr]
    depth = 0
    for index in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[start : index + 1]
    raise AssertionError(f"profile {name} is not closed")


def rules(block: str) -> list[str]:
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def test_apparmor_profile_is_named_after_the_slug() -> None:
    text = (ADDON / "apparmor.txt").read_text()
    # The Supervisor accepts exactly one line starting with "profile" and renames it.
    assert re.findall(r"^profile (\S+)", text, re.M) == [SLUG]


def test_apparmor_gives_the_worker_what_its_sandbox_needs_and_no_network() -> None:
    text = (ADDON / "apparmor.txt").read_text()
    outer, service, worker = (rules(profile_block(text, n)) for n in (SLUG, "service", "worker"))
    assert "/opt/venv/bin/edge-assistant rcx -> service," in outer
    assert "/usr/bin/python3* cx -> worker," in service
    assert {"network inet stream,", "network inet6 stream,"} <= set(service)
    for rule in (
        "capability setuid,",
        "capability setgid,",
        "capability sys_admin,",
        "network unix stream,",
        "deny network inet,",
        "deny network inet6,",
        "owner @{PROC}/@{pid}/{setgroups,uid_map,gid_map,oom_score_adj} w,",
        "/opt/models/{,**} r,",
        "/tmp/{,**} rw,",
    ):
        assert rule in worker, rule
    assert not any(re.match(r"network (inet|inet6)\b", rule) for rule in worker)
    assert not any(rule.startswith("/data/") and " rw" in rule for rule in worker)
    # No exec permission of any kind: the worker runs no program.
    assert not [rule for rule in worker if re.search(r"\s[rwmlka]*[ipcuPCU]x(\s*->.*)?,$", rule)]
    for rule in outer + service + worker:
        assert not rule.startswith("/share") or rule.endswith(" r,"), rule  # read-only share
    # AppArmor 3 parsers refuse `userns,` and the add-on would not install at all.
    assert not any(rule.startswith("userns") for rule in outer + service + worker)
    assert not any(
        rule in {"capability,", "file,", "network,"} for rule in outer + service + worker
    )


def test_apparmor_profile_compiles() -> None:
    parser = shutil.which("apparmor_parser") or "/usr/sbin/apparmor_parser"
    if not Path(parser).exists():
        # Never skip: setup installs it, and a profile that does not compile stops the
        # add-on from installing at all.
        pytest.fail("apparmor_parser is missing: run scripts/setup.sh (apt-get install apparmor)")
    done = subprocess.run(
        [parser, "--skip-kernel-load", "--skip-cache", str(ADDON / "apparmor.txt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# --- the image's venv, built here by the same script (slow: ~2-3 minutes) ------------


@pytest.mark.slow
def test_build_image_venv(tmp_path: Path) -> None:
    venv, models = tmp_path / "venv", tmp_path / "models"
    script = str(ROOT / "scripts" / "build-image-venv.sh")
    # In two steps, as the Dockerfile builds it: the dependencies, then the package.
    for args in (["--dependencies", str(venv)], [str(venv), str(models)]):
        done = subprocess.run(
            ["bash", script, *args], capture_output=True, text=True, timeout=900, check=False
        )
        assert done.returncode == 0, done.stderr[-3000:]
        if args[0] == "--dependencies":
            assert not (venv / "bin" / "edge-assistant").exists()
            assert not list(venv.glob("lib/python3*/site-packages/huggingface_hub"))
    binary = venv / "bin" / "edge-assistant"
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert project_version() in version
    listing = subprocess.run(
        [str(binary), "model", "list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "EDGE_ASSISTANT_MODELS": str(models)},
    ).stdout
    assert "int8" in listing
    # Not editable: the package lives in the venv, not in this checkout.
    assert not list(venv.glob("lib/python3*/site-packages/__editable__*"))
    for path in models.rglob("*"):
        assert path.stat().st_mode & 0o004, f"{path} is not world-readable"
