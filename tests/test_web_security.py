"""The page's listener against the real service, over real connections: the ingress
rule (only the Supervisor's proxy, in an add-on), localhost outside HA, no endpoint that
changes anything but a try-it request, bounded bodies, no header reflected as markup."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from assistant.core.api import CoreApi
from assistant.web.app import BODY_LIMIT, PageSources, make_app
from assistant.web.history import History
from assistant.web.requests_log import RequestLog
from tests.conftest import Broker
from tests.mqtt_helpers import Client, ServiceProcess, final_for
from tests.web_helpers import OTHER, PEER, page_service, request, web_port

GET_PATHS = ("/", "/api/info", "/api/history", "/api/requests", "/static/page.js")
# Every route's path and methods, read from the app itself (the routes table below must
# change with it, deliberately).
EXPECTED_ROUTES = {
    ("GET", "/"),
    ("HEAD", "/"),
    ("GET", "/api/info"),
    ("HEAD", "/api/info"),
    ("GET", "/api/history"),
    ("HEAD", "/api/history"),
    ("GET", "/api/requests"),
    ("HEAD", "/api/requests"),
    ("GET", "/api/events"),
    ("HEAD", "/api/events"),
    ("POST", "/api/try"),
    ("POST", "/api/try/{id}/cancel"),
    ("GET", "/static"),
    ("HEAD", "/static"),
}


@pytest.fixture(scope="module")
def addon_service(
    mosquitto: Broker, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("web-addon")
    engine = {"max_tokens": 4096, "context_tokens": 2048}
    with page_service(mosquitto, tiny_model_dir, workdir, config={"engine": engine}) as svc:
        yield svc


def test_in_an_addon_only_the_ingress_proxy_is_answered(addon_service: ServiceProcess) -> None:
    port = web_port(addon_service)
    for path in GET_PATHS:
        assert request(port, "GET", path, source=PEER)[0] == 200, path
        status, body = request(port, "GET", path, source=OTHER)
        assert status == 403, path
        assert b"ingress" in body and b"<" not in body
    assert request(port, "POST", "/api/try", source=OTHER, body=b'{"text":"hi"}')[0] == 403


def test_outside_an_addon_the_page_listens_on_localhost_only(
    mosquitto: Broker, tiny_model_dir: Path, tmp_path: Path
) -> None:
    with page_service(mosquitto, tiny_model_dir, tmp_path, addon=False) as service:
        port = web_port(service)
        assert service.settings["web"].get("host") is None  # the default: 127.0.0.1
        assert request(port, "GET", "/api/info", source=OTHER)[0] == 200
        # Any client that reaches it is answered (no ingress rule outside HA)...
        assert request(port, "GET", "/api/info", source=PEER)[0] == 200
        # ...but it is bound to 127.0.0.1: another address of this machine is refused.
        with pytest.raises(ConnectionRefusedError):
            request(port, "GET", "/api/info", source=OTHER, host=PEER)


def test_no_endpoint_changes_configuration(addon_service: ServiceProcess) -> None:
    port = web_port(addon_service)
    before = request(port, "GET", "/api/info")[1]
    # The only writes the app routes are the try-it request and its cancel.
    sources = PageSources(cast(CoreApi, object()), History(dict), RequestLog(), dict)
    app = make_app(sources, None)
    routes = {
        (route.method, route.resource.canonical if route.resource else "")
        for route in app.router.routes()
    }
    assert routes == EXPECTED_ROUTES
    for path in (*GET_PATHS, "/api/events"):
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            assert request(port, method, path, body=b"{}")[0] == 405, (method, path)
    for path in ("/api/config", "/api/options", "/api/plan", "/api/info/x"):
        assert request(port, "POST", path, body=b'{"log_level": "debug"}')[0] in (404, 405)
    assert request(port, "GET", "/api/info")[1] == before


def test_try_it_bodies_are_bounded_and_validated(addon_service: ServiceProcess) -> None:
    port = web_port(addon_service)
    json_type = {"Content-Type": "application/json"}
    big = json.dumps({"text": "x" * BODY_LIMIT}).encode()
    assert request(port, "POST", "/api/try", body=big, headers=json_type)[0] == 413
    for bad in (b"{", b"[]", b'{"text": ""}', b'{"text": "hi", "max_tokens": -1}', b"\xff"):
        status, body = request(port, "POST", "/api/try", body=bad, headers=json_type)
        assert status == 400, bad
        assert body.strip()


def test_the_page_cannot_cancel_another_front_ends_request(
    addon_service: ServiceProcess, mosquitto: Broker
) -> None:
    port = web_port(addon_service)
    base = addon_service.base
    client = Client(mosquitto.host, mosquitto.port)
    try:
        client.subscribe(f"{base}/reply", f"{base}/reply/stream", retained=False)
        ask = {"id": "mqtt-long", "text": "go on", "max_tokens": 4096, "stream": True}
        client.publish(f"{base}/ask", ask)
        client.wait_for(f"{base}/reply/stream")  # it is running
        status, _ = request(port, "POST", "/api/try/mqtt-long/cancel", body=b"")
        assert status == 404
        assert not client.messages(final_for("mqtt-long"))  # the attempt came mid-reply
        # Had the page's cancel reached it, it would end "cancelled" after a few tokens.
        final = client.wait_for(final_for("mqtt-long"))[0].json()
        assert final["finish_reason"] == "length", final["usage"]
    finally:
        client.close()


def test_the_ingress_path_header_is_never_reflected_as_markup(
    addon_service: ServiceProcess,
) -> None:
    port = web_port(addon_service)
    good = {"X-Ingress-Path": "/api/hassio_ingress/abc_DEF-123"}
    page = request(port, "GET", "/", headers=good)[1].decode()
    assert '<base href="/api/hassio_ingress/abc_DEF-123/">' in page
    hostile = {"X-Ingress-Path": '/x"><script>alert(1)</script>'}
    page = request(port, "GET", "/", headers=hostile)[1].decode()
    assert "<base" not in page and "alert(1)" not in page
    assert "<base" not in request(port, "GET", "/")[1].decode()
