"""Headless Debian Chromium for the page's tests, driven by Playwright-for-Python.

Playwright's own browser download cannot work here (and must not be needed): it drives
the system's /usr/bin/chromium (Debian's `chromium`, installed by scripts/setup.sh). The
flags keep Chromium off the network it would otherwise try at start (updates, sync).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",  # the tests may run as root, where Chromium's own sandbox refuses
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[1]


def chromium_path() -> str:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (apt-get install chromium)")
    return str(CHROMIUM)


def artifacts_dir() -> Path:
    """Where screenshots go: $EDGE_ASSISTANT_TEST_ARTIFACTS or ./test-artifacts."""
    folder = Path(os.environ.get("EDGE_ASSISTANT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
