#!/usr/bin/env bash
# Set up Edge Assistant on a fresh machine, idempotently:
#   1. a virtual environment in .venv with the package, the `prepare` extra and dev tools,
#   2. the mosquitto broker binary (the test suite starts private brokers),
#   3. the default model, converted to INT8 ONNX (cached outside the checkout),
#   4. Home Assistant's venv for the real-HA tests (scripts/ha-venv.sh, also cached).
# Re-running is cheap: each step skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: Python 3.11 or newer is required ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
echo "setup: installing edge-assistant, its model converter and dev tools into .venv"
.venv/bin/python -m pip install --quiet -e '.[dev,prepare]'
# Test-only: the Hermes tests speak through rhasspy-hermes' own message classes. Every
# release pins paho-mqtt 1.5, which we must not get, so it goes in without its pins.
.venv/bin/python -m pip install --quiet "dataclasses-json==0.5.6"
.venv/bin/python -m pip install --quiet --no-deps "rhasspy-hermes==0.6.2"
# Test-only: the HTTP API tests also speak through ollama 0.4.7, the client Home
# Assistant 2025.4 pins, next to the newest one in .venv: its own folder, put first on
# PYTHONPATH by the tests that use it.
if [ ! -f .venv/ollama-0.4.7/ollama/__init__.py ]; then
    .venv/bin/python -m pip install --quiet --target .venv/ollama-0.4.7 "ollama==0.4.7"
fi

# Debian packages the tests use: the broker they start, AppArmor's parser, which
# compiles the add-on's profile in tests/test_addon.py, and curl and jq (below).
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto mosquitto-clients)
command -v apparmor_parser >/dev/null 2>&1 || [ -x /sbin/apparmor_parser ] || missing+=(apparmor)
# curl: docs/http.md examples (tests/test_http_docs.py) and, with jq, the stand-in bashio
# that runs the s6 `run` script in tests/test_addon.py.
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v jq >/dev/null 2>&1 || missing+=(jq)
# The page's browser tests drive Debian's Chromium through Playwright (never a browser
# download: Playwright is pointed at /usr/bin/chromium).
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} with apt-get"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if .venv/bin/edge-assistant model --help >/dev/null 2>&1; then
    echo "setup: preparing the default model (skipped when already prepared)"
    .venv/bin/edge-assistant model prepare
fi
# The real Home Assistant core that tests/test_ha_*.py run against: its own venv (Python
# 3.13, homeassistant==2025.4.4), cached outside the checkout; ~4 min the first time.
bash scripts/ha-venv.sh
echo "setup: done"
