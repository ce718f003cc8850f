"""Announcing the Wyoming service to Home Assistant through the Supervisor (add-on only).

`POST {supervisor}/discovery` with `{"service": "wyoming", "config": {"uri": ...}}` and
the add-on's `SUPERVISOR_TOKEN`; the manifest must list `discovery: [wyoming]`. Home
Assistant then offers to add the Wyoming integration pointing at this add-on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping

from assistant.supervisor_api import DEFAULT_URL, TOKEN_ENV, URL_ENV

LOG = logging.getLogger(__name__)
TIMEOUT_S = 10.0
RETRY_DELAYS_S = (1.0, 3.0, 10.0)  # the Supervisor may be busy right after a start


class AnnounceError(Exception):
    """The Supervisor did not accept the discovery message."""


def wyoming_uri(host: str, port: int) -> str:
    """How Home Assistant reaches us: a wildcard bind means "this container's name"."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"tcp://{host}:{port}"


def announce(url: str, token: str, uri: str, timeout_s: float = TIMEOUT_S) -> None:
    """One blocking POST; AnnounceError when it fails."""
    body = json.dumps({"service": "wyoming", "config": {"uri": uri}}).encode()
    request = urllib.request.Request(
        url.rstrip("/") + "/discovery",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        raise AnnounceError(f"the Supervisor answered {err.code} {err.reason}") from err
    except (OSError, ValueError) as err:
        raise AnnounceError(f"cannot reach the Supervisor at {url}: {err}") from err
    if isinstance(answer, dict) and answer.get("result") not in (None, "ok"):
        raise AnnounceError(f"the Supervisor refused the discovery: {answer}")


async def announce_when_in_addon(
    host: str, port: int, env: Mapping[str, str] | None = None
) -> bool:
    """Announce the Wyoming service when running as an add-on (the token is set), with a
    few retries; False when not an add-on or every attempt failed (logged, not fatal)."""
    env = os.environ if env is None else env
    token = env.get(TOKEN_ENV)
    if not token:
        return False
    url = env.get(URL_ENV) or DEFAULT_URL
    uri = wyoming_uri(host, port)
    for attempt, delay in enumerate((0.0, *RETRY_DELAYS_S)):
        await asyncio.sleep(delay)
        try:
            await asyncio.to_thread(announce, url, token, uri)
        except AnnounceError as err:
            LOG.warning("announcing the Wyoming service (try %d): %s", attempt + 1, err)
            continue
        LOG.info("announced the Wyoming service %s to Home Assistant", uri)
        return True
    return False
