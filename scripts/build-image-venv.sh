#!/usr/bin/env bash
# Build what the add-on image ships: a virtual environment with Edge Assistant installed
# (not editable) and the default model prepared as INT8, so the add-on answers on its
# first start with no conversion on the device. The Dockerfile's build stage runs this;
# CI runs it too, into a temporary folder (tests/test_addon.py, marked slow).
#
#   scripts/build-image-venv.sh VENV_DIR MODELS_DIR
#
# Environment: PYTHON (default python3). The model source download is cached in
# ~/.cache/edge-assistant/downloads (or $EDGE_ASSISTANT_CACHE) and is not part of either
# output folder.
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 VENV_DIR MODELS_DIR" >&2
    exit 2
fi
VENV_DIR=$1
MODELS_DIR=$2
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}

echo "build-image-venv: creating ${VENV_DIR}"
"$PYTHON" -m venv "$VENV_DIR"
# No pip cache in the output; wheels only for the dependencies (no compilers needed).
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV_DIR/bin/python" -m pip install --quiet --upgrade pip
echo "build-image-venv: installing edge-assistant from ${REPO}"
# The `prepare` extra: this script prepares the default model, and the add-on's run script
# prepares GGUFs dropped in /share.
"$VENV_DIR/bin/python" -m pip install --quiet --prefer-binary "$REPO[prepare]"
"$VENV_DIR/bin/edge-assistant" --version

echo "build-image-venv: preparing the default model into ${MODELS_DIR}"
mkdir -p "$MODELS_DIR"
# No ./config.yaml is read: run from a folder that has none.
(cd / && EDGE_ASSISTANT_MODELS="$MODELS_DIR" ORT_DISABLE_TELEMETRY=1 \
    "$VENV_DIR/bin/edge-assistant" model prepare --precision int8)
(cd / && EDGE_ASSISTANT_MODELS="$MODELS_DIR" "$VENV_DIR/bin/edge-assistant" model list)

# The worker drops to nobody: every file it reads must be world-readable (onnx writes
# external data 0600), and nothing needs to be writable by anyone else.
chmod -R a+rX,go-w "$VENV_DIR" "$MODELS_DIR"
echo "build-image-venv: done"
