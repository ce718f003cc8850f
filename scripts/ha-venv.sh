#!/usr/bin/env bash
# Build, idempotently, the virtual environment of a real Home Assistant core that the
# real-HA tests (tests/test_ha_*.py) start in-process: homeassistant==2025.4.4 plus the
# pinned requirements of the integrations they set up (mqtt, wyoming, template,
# conversation, ollama and what those depend on), taken from HA's own manifests and
# constrained by HA's package_constraints.txt, so the versions are the ones HA ships.
#
# It lives outside the checkout (default ~/.cache/edge-assistant/ha-venv-2025.4.4, or
# $EDGE_ASSISTANT_HA_VENV) and is reused between CI runs on the same machine. The first
# build takes ~4 min (four packages compile from source on Python 3.13: gcc/g++ needed)
# and ~600 MB; later runs only check a stamp file.
#
# HA 2025.4.4 is the newest release that installs on Python 3.13.0; it needs Python >= 3.13.
# The interpreter is $HA_PYTHON, else python3.13 under pyenv, else python3.13 on PATH.
# Without one this fails, naming what is missing; it never skips.
#
# On a shared machine run it under `flock /tmp/ea-heavy.lock` (scripts/setup.sh, which
# calls it, is run that way); it takes no lock itself, so that nesting cannot deadlock.
set -euo pipefail

HA_VERSION=2025.4.4
VENV=${EDGE_ASSISTANT_HA_VENV:-$HOME/.cache/edge-assistant/ha-venv-$HA_VERSION}
# The integrations the tests configure; their manifest dependencies are followed.
DOMAINS=(mqtt wyoming template conversation ollama assist_pipeline automation script light)
# Bumped when this script's package set changes, so a cached venv is rebuilt.
STAMP_VALUE="$HA_VERSION ${DOMAINS[*]} v1"

find_python() {
    local candidate
    if [ -n "${HA_PYTHON:-}" ]; then
        echo "$HA_PYTHON"
        return 0
    fi
    local pyenv_root
    pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
    if command -v pyenv >/dev/null 2>&1; then
        pyenv_root=$(pyenv root)
    fi
    for candidate in "$pyenv_root"/versions/3.13*/bin/python3 "$(command -v python3.13 || true)"; do
        if [ -x "$candidate" ] && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 13))'; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if [ -f "$VENV/.edge-assistant-stamp" ] && [ "$(cat "$VENV/.edge-assistant-stamp")" = "$STAMP_VALUE" ] \
    && "$VENV/bin/python" -c 'import homeassistant' >/dev/null 2>&1; then
    echo "ha-venv: ready at $VENV"
    exit 0
fi

if ! PY=$(find_python); then
    echo "ha-venv: Python >= 3.13 is required for homeassistant==$HA_VERSION and none was found" \
        "(looked for \$HA_PYTHON, ${PYENV_ROOT:-$HOME/.pyenv}/versions/3.13*/bin/python3 and python3.13 on PATH);" \
        "install it, e.g. 'pyenv install 3.13.0', or set HA_PYTHON" >&2
    exit 1
fi
for tool in gcc g++; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "ha-venv: $tool is required (ciso8601, lru-dict, pymicro-vad and pyspeex-noise compile from source)" >&2
        exit 1
    fi
done

echo "ha-venv: building $VENV with $PY (homeassistant==$HA_VERSION, ~4 min the first time)"
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "homeassistant==$HA_VERSION"

# The requirements of the integrations (and their manifest dependencies), as HA pins them.
mapfile -t requirements < <("$VENV/bin/python" - "${DOMAINS[@]}" <<'EOF'
import json
import sys
from pathlib import Path

import homeassistant

components = Path(homeassistant.__file__).parent / "components"
todo, seen, requirements = list(sys.argv[1:]), set(), set()
while todo:
    domain = todo.pop()
    if domain in seen:
        continue
    seen.add(domain)
    manifest = json.loads((components / domain / "manifest.json").read_text())
    requirements.update(manifest.get("requirements", []))
    todo.extend(manifest.get("dependencies", []))
print("\n".join(sorted(requirements)))
EOF
)
constraints=$("$VENV/bin/python" -c 'import homeassistant, pathlib; print(pathlib.Path(homeassistant.__file__).parent / "package_constraints.txt")')
echo "ha-venv: installing the integrations' requirements: ${requirements[*]}"
"$VENV/bin/python" -m pip install --quiet -c "$constraints" "${requirements[@]}"
echo "$STAMP_VALUE" >"$VENV/.edge-assistant-stamp"
echo "ha-venv: ready at $VENV"
