"""The add-on's page in a real browser (headless Debian Chromium through Playwright),
against the real service with the real broker, opened the way Home Assistant opens it:
through an ingress proxy under /api/hassio_ingress/<token>.

The service runs in add-on mode (the Supervisor's token is set), so it answers only the
ingress proxy; the proxy (tests/ingress_proxy.py, the one double: the Supervisor cannot
run here) connects from 127.0.0.2, the address the test gives the rule in place of
172.30.32.2. Every test fails on a console error or an uncaught page error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.browser import FLAGS, artifacts_dir, chromium_path
from tests.conftest import Broker
from tests.ingress_proxy import PREFIX, IngressProxy
from tests.mqtt_helpers import Client, ServiceProcess, final_for
from tests.web_helpers import PEER, page_service, web_port

WAIT_MS = 30_000


@pytest.fixture(scope="module")
def service(
    mosquitto: Broker, real_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    # The real default model: a reply that runs for seconds (the tiny one writes 2,000
    # tokens in a third of a second, faster than a click), and readable text in the
    # screenshot. Greedy (ServiceProcess's default).
    engine = {"max_tokens": 4096, "context_tokens": 4096}
    workdir = tmp_path_factory.mktemp("page")
    with page_service(mosquitto, real_model_dir, workdir, config={"engine": engine}) as svc:
        yield svc


@pytest.fixture(scope="module")
def proxy(service: ServiceProcess) -> Iterator[IngressProxy]:
    ingress = IngressProxy(web_port(service), PEER).start()
    yield ingress
    ingress.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, proxy: IngressProxy) -> Iterator[Page]:
    """The page as HA's panel opens it; fails the test on any console error."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    tab = context.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"console {message.type}: {message.text}")

    tab.on("console", on_console)
    tab.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    tab.goto(proxy.url)
    tab.wait_for_selector("#models tr:nth-child(2)", timeout=WAIT_MS)
    yield tab
    context.close()
    assert problems == []


def test_the_page_loads_under_the_ingress_path(page: Page, proxy: IngressProxy) -> None:
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    page.reload()
    page.wait_for_selector("#models tr:nth-child(2)", timeout=WAIT_MS)
    page.wait_for_selector("#plots .plot[data-points]", timeout=WAIT_MS)
    # Every URL the page built went through the ingress prefix (the proxy forwarded it).
    origin = f"http://127.0.0.1:{proxy.port}"
    assert seen and all(url.startswith(origin + PREFIX + "/") or url == proxy.url for url in seen)
    assert {"/api/info", "/api/history", "/static/page.js"} <= set(proxy.forwarded)
    models = page.inner_text("#models")
    assert "yes" in models  # the model in use is marked
    plan = page.inner_text("#plan")  # the plan's values with their reasons
    assert "context_tokens" in plan and "set in config (engine.context_tokens)" in plan
    assert "CPU cores ≥ 4" in page.inner_text("#doctor")
    sandbox = page.inner_text("#sandbox")  # the layers the worker reported in its hello
    assert "seccomp" in sandbox and "active" in sandbox


def test_plots_receive_new_points(page: Page) -> None:
    cpu = page.locator('#plots .plot[data-series="cpu_percent"]')
    cpu.wait_for(timeout=WAIT_MS)
    before = int(cpu.get_attribute("data-points") or "0")
    # The service samples every second: three more points arrive within a few seconds.
    page.wait_for_function(
        f"""() => Number(document.querySelector('#plots .plot[data-series="cpu_percent"]')
            .dataset.points) >= {before + 3}""",
        timeout=10_000,
    )
    assert page.locator("#live.on").count() == 1


def count_reply_updates(page: Page) -> None:
    """Count the reply box's updates (one per streamed delta) in window.replyUpdates."""
    page.evaluate(
        """() => {
        window.replyUpdates = 0;
        new MutationObserver((changes) => { window.replyUpdates += changes.length; })
            .observe(document.getElementById('try-out'), { childList: true });
    }"""
    )


def test_try_it_streams_a_reply_token_by_token(page: Page) -> None:
    count_reply_updates(page)
    page.fill("#try-text", "Say hello")
    page.fill("#try-max", "12")
    page.click("#try-send")
    page.wait_for_selector("#try-status[data-finish]", timeout=WAIT_MS)
    status = page.locator("#try-status")
    assert status.get_attribute("data-finish") == "length", status.inner_text()
    assert "12 tokens" in status.inner_text()
    # Streamed: the text arrived in several pieces before the final, not in one.
    assert page.evaluate("window.replyUpdates") >= 3
    assert page.inner_text("#try-out").strip()
    assert page.is_enabled("#try-send") and not page.is_enabled("#try-cancel")


def test_cancel_stops_the_reply(page: Page) -> None:
    page.fill("#try-text", "Tell me a very long story")
    page.fill("#try-max", "4096")
    page.click("#try-send")
    page.wait_for_function(
        "() => document.getElementById('try-out').textContent.length > 0", timeout=WAIT_MS
    )
    page.click("#try-cancel")
    page.wait_for_selector("#try-status[data-finish]", timeout=WAIT_MS)
    assert page.get_attribute("#try-status", "data-finish") == "cancelled"
    tokens = int(page.inner_text("#try-status").split(" tokens")[0].split()[-1])
    assert tokens < 4096
    # The recent requests show it, from the page, cancelled.
    page.wait_for_function(
        "() => document.getElementById('requests').textContent.includes('cancelled')",
        timeout=WAIT_MS,
    )
    row = page.locator("#requests tr", has_text="cancelled").first.inner_text()
    assert "page" in row


def test_model_output_is_shown_as_text_never_run(page: Page) -> None:
    """The tiny model cannot be made to write markup, so the reply stream is replaced at
    the network layer (Playwright's route) by one that does: the page's rendering is
    what is under test."""
    hostile = "<script>window.pwned = 1</script><img src=x onerror='window.pwned = 2'>"
    lines = [
        {"type": "start", "id": "page-x"},
        {"type": "delta", "text": hostile},
        {"type": "tool_call", "name": "HassTurnOn<b>", "arguments": {"name": hostile}},
        {
            "type": "final",
            "id": "page-x",
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 1, "completion_tokens": 2},
            "timing": {"first_token_ms": 1, "total_ms": 2, "tokens_per_s": 3},
            "error": None,
        },
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    page.route(
        "**/api/try",
        lambda route: route.fulfill(status=200, content_type="application/x-ndjson", body=body),
    )
    page.fill("#try-text", "hi")
    page.click("#try-send")
    page.wait_for_selector("#try-status[data-finish]", timeout=WAIT_MS)
    assert page.text_content("#try-out") == hostile
    assert page.locator("#try-out *").count() == 0  # no element was created from it
    assert page.locator("#try-calls .call *").count() == 0
    assert hostile in (page.text_content("#try-calls") or "")
    assert page.evaluate("window.pwned") is None


def test_screenshot_with_requests_from_two_front_ends(
    page: Page, service: ServiceProcess, mosquitto: Broker
) -> None:
    client = Client(mosquitto.host, mosquitto.port)
    try:
        client.subscribe(f"{service.base}/reply", retained=False)
        client.publish(f"{service.base}/ask", {"id": "mqtt-shot", "text": "hi", "max_tokens": 8})
        client.wait_for(final_for("mqtt-shot"))
    finally:
        client.close()
    page.fill("#try-text", "What can you do?")
    page.fill("#try-max", "24")
    page.click("#try-send")
    page.wait_for_selector("#try-status[data-finish]", timeout=WAIT_MS)
    page.wait_for_function(
        "() => document.getElementById('requests').textContent.includes('mqtt-shot')",
        timeout=WAIT_MS,
    )
    row = page.locator("#requests tr", has_text="mqtt-shot").inner_text()
    assert "mqtt" in row.split("mqtt-shot", 1)[1]
    assert "length" in row  # 8 tokens of a greedy reply, cut by max_tokens
    page.wait_for_function(
        """() => Number(document.querySelector('#plots .plot[data-series="cpu_percent"]')
            .dataset.points) >= 10""",
        timeout=WAIT_MS,
    )
    shot = artifacts_dir() / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    # Readable on a phone: once the plots have followed the resize, nothing is wider
    # than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_function("() => document.documentElement.scrollWidth <= 390", timeout=5000)
    page.screenshot(path=str(artifacts_dir() / "page-phone.png"), full_page=True)


def test_dark_theme_follows_the_system(browser: Browser, proxy: IngressProxy) -> None:
    context = browser.new_context(color_scheme="dark")
    try:
        tab = context.new_page()
        tab.goto(proxy.url)
        background = tab.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(17, 17, 17)"
    finally:
        context.close()
