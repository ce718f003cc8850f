"""Every curl example in docs/http.md, run as written against the real service (only the
host and port changed), and its answer checked for the shape the docs promise."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.http_helpers import http_service, serve_http, url_of
from tests.mqtt_helpers import REPO, ServiceProcess

DOC = REPO / "docs" / "http.md"
EXAMPLES = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture(scope="module")
def svc(
    mosquitto: Broker, real_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    service = http_service(tmp_path_factory.mktemp("http-docs"), mosquitto, real_model_dir)
    yield from serve_http(service, mosquitto)


def test_the_docs_have_examples_for_both_apis() -> None:
    assert len(EXAMPLES) >= 5
    assert any("/api/chat" in e for e in EXAMPLES) and any("/v1/chat" in e for e in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=[str(i) for i in range(len(EXAMPLES))])
def test_each_curl_example_works(svc: ServiceProcess, example: str) -> None:
    assert shutil.which("curl"), "curl is needed (apt-get install curl)"
    script = example.replace("http://localhost:11434", url_of(svc))
    done = subprocess.run(
        ["bash", "-c", f"set -euo pipefail; {script.strip()} --fail-with-body"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (script, done.stdout[-500:], done.stderr[-500:])
    out = done.stdout
    if '"stream": true' in example:  # server-sent events
        events = [line[6:] for line in out.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    elif "/api/chat" in example and '"stream": false' not in example:  # NDJSON
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert lines[-1]["done"] is True and len(lines) >= 2
    else:
        body = json.loads(out)
        assert "error" not in body
        assert any(key in body for key in ("models", "message", "choices", "data")), body
