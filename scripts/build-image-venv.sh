#!/usr/bin/env bash
# Build what the add-on image ships: a runtime virtual environment with Edge Assistant
# installed (not editable) and the default model prepared as INT8, so the add-on answers
# on its first start with no conversion on the device. The Dockerfile runs the two halves
# in separate build stages; tests/test_addon.py (slow) runs both into a temporary folder.
#
#   scripts/build-image-venv.sh VENV_DIR MODELS_DIR     (either may be "-": skipped)
#   scripts/build-image-venv.sh --dependencies VENV_DIR
#
# - --dependencies: the runtime venv with the project's dependencies alone (trimmed as
#   below), not the package. The Dockerfile runs it in a stage that sees pyproject.toml and
#   not the sources, so a change to the sources reuses that layer: under the arm64
#   emulation of the image test, installing the dependencies is most of the build time.
#   A later `VENV_DIR -` on that venv then installs just the package (--no-deps).
# - MODELS_DIR: the model is prepared by a throw-away venv that has the converter
#   (the package's `prepare` extra: gguf, onnx, onnx-ir and what they pull in).
# - VENV_DIR: the runtime venv: the package without that extra, no pip, none of the
#   distributions that only a cut dependency edge needs (RUNTIME_CUTS below), and none
#   of ONNX Runtime's offline tooling, the dependencies' test suites, stubs or C sources,
#   and its shared libraries stripped of symbols nothing links against.
#
# Environment: PYTHON (default python3); PREPARED_MODELS: a folder of prepared models to
# copy instead of preparing (they are architecture-independent). The model source
# download is cached in ~/.cache/edge-assistant/downloads (or $EDGE_ASSISTANT_CACHE),
# in neither output folder.
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 VENV_DIR|- MODELS_DIR|-  or  $0 --dependencies VENV_DIR" >&2
    exit 2
fi
DEPENDENCIES_ONLY=0
if [ "$1" = "--dependencies" ]; then
    DEPENDENCIES_ONLY=1
    shift
    set -- "$1" -
fi
VENV_DIR=$1
MODELS_DIR=$2
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
# No pip cache in the outputs; wheels only (no compilers needed, none are installed).
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
TOOLS=$(mktemp -d)
trap 'rm -rf "${TOOLS}"' EXIT

# "requirer>dependency" edges left out of the runtime venv, with what they are for:
# - tokenizers needs huggingface-hub only for Tokenizer.from_pretrained (downloads from
#   the Hub); the add-on reads tokenizer.json from the model folder and never goes online;
# - onnxruntime needs protobuf and packaging only in its offline tooling (below), never
#   to run a model.
RUNTIME_CUTS="tokenizers>huggingface-hub onnxruntime>protobuf onnxruntime>packaging"
# ONNX Runtime's offline tooling: quantization and transformer optimizers (the
# converter's work, done in the prepare venv), model tools, the onnx backend API and
# sample data. The service and the worker use onnxruntime's inference API alone.
ORT_TOOLING="quantization transformers tools backend datasets"
# Left in a venv that --dependencies built: the package step then adds the package alone.
readonly DEPS_MARK=.edge-assistant-dependencies

prepare_models() {
    if [ -n "${PREPARED_MODELS:-}" ]; then
        echo "build-image-venv: copying the prepared models of ${PREPARED_MODELS}"
        ls "${PREPARED_MODELS}"/*/manifest.json >/dev/null
        mkdir -p "$MODELS_DIR"
        cp -R "${PREPARED_MODELS}"/. "$MODELS_DIR"/
        chmod -R a+rX,go-w "$MODELS_DIR"
        return
    fi
    echo "build-image-venv: preparing the default model into ${MODELS_DIR}"
    "$PYTHON" -m venv "${TOOLS}/prepare"
    "${TOOLS}/prepare/bin/python" -m pip install --quiet --upgrade pip
    # Until the package has a `prepare` extra, pip warns and installs the plain package,
    # which then still carries the converter as a hard dependency.
    "${TOOLS}/prepare/bin/python" -m pip install --quiet --prefer-binary "${REPO}[prepare]"
    mkdir -p "$MODELS_DIR"
    # No ./config.yaml is read: run from a folder that has none.
    (cd / && EDGE_ASSISTANT_MODELS="$MODELS_DIR" ORT_DISABLE_TELEMETRY=1 \
        "${TOOLS}/prepare/bin/edge-assistant" model prepare --precision int8)
    (cd / && EDGE_ASSISTANT_MODELS="$MODELS_DIR" "${TOOLS}/prepare/bin/edge-assistant" model list)
    # The worker drops to nobody: every file it reads must be world-readable (onnx writes
    # external data 0600), and nothing needs to be writable by anyone else.
    chmod -R a+rX,go-w "$MODELS_DIR"
}

# The project's runtime requirements, one per line, from pyproject.toml.
project_dependencies() {
    "$PYTHON" - "${REPO}/pyproject.toml" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as file:
    print("\n".join(tomllib.load(file)["project"]["dependencies"]))
PY
}

# The distributions of VENV that the project's dependencies (ROOTS, one requirement a
# line) do not need once RUNTIME_CUTS are cut.
unneeded_distributions() {
    RUNTIME_CUTS="${RUNTIME_CUTS}" ROOTS="$2" "$1/bin/python" - <<'PY'
import os
import re
from importlib.metadata import distributions


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


cuts = {tuple(map(norm, edge.split(">"))) for edge in os.environ["RUNTIME_CUTS"].split()}
requires = {}
for dist in distributions():
    needs = set()
    for req in dist.requires or []:
        if "extra ==" in req:
            continue  # optional extras are never installed here
        needs.add(norm(re.match(r"[A-Za-z0-9._-]+", req).group(0)))
    requires[norm(dist.metadata["Name"])] = needs
roots = [re.match(r"[A-Za-z0-9._-]+", line).group(0) for line in os.environ["ROOTS"].split("\n")]
keep, todo = set(), [norm(root) for root in roots]
while todo:
    name = todo.pop()
    if name in keep or name not in requires:
        continue
    keep.add(name)
    todo.extend(dep for dep in requires[name] if (name, dep) not in cuts)
print(" ".join(sorted(set(requires) - keep)))
PY
}

# pip, run from a throw-away venv (--python): the runtime venv carries no pip.
runtime_pip() {
    "$PYTHON" -m venv "${TOOLS}/pip"
    "${TOOLS}/pip/bin/python" -m pip install --quiet --upgrade pip
}

install_dependencies() {
    echo "build-image-venv: creating the runtime venv ${VENV_DIR} (dependencies, no pip, no converter)"
    runtime_pip
    "$PYTHON" -m venv --without-pip "$VENV_DIR"
    local pip=("${TOOLS}/pip/bin/python" -m pip --python "${VENV_DIR}/bin/python")
    local requirements
    requirements=$(project_dependencies)
    local -a wanted
    mapfile -t wanted <<<"${requirements}"
    "${pip[@]}" install --quiet --prefer-binary "${wanted[@]}"
    local unneeded
    unneeded=$(unneeded_distributions "$VENV_DIR" "${requirements}")
    if [ -n "${unneeded}" ]; then
        echo "build-image-venv: removing what only a cut edge needs: ${unneeded}"
        # shellcheck disable=SC2086  # a list of distribution names
        "${pip[@]}" uninstall --quiet --yes ${unneeded}
    fi
    trim_site
    touch "${VENV_DIR}/${DEPS_MARK}"
}

trim_site() {
    local site
    site=$(echo "$VENV_DIR"/lib/python3*/site-packages)
    for tool in ${ORT_TOOLING}; do
        rm -rf "${site:?}/onnxruntime/${tool}"
    done
    # The dependencies' own test suites (numpy's alone is ~14 MB), and what only building
    # or type-checking against them reads (type stubs, C/Cython sources and headers).
    find "$site" -mindepth 2 -type d -name tests -prune -exec rm -rf {} +
    find "$site" -type f \( -name '*.pyi' -o -name '*.c' -o -name '*.h' -o -name '*.pyx' \
        -o -name '*.pxd' \) -delete
    # Symbols no program links against: several wheels ship their extensions unstripped
    # (tokenizers, aiohttp, PyYAML: ~9 MB together). Dynamic
    # symbols stay, so imports and the image test's real inference are unaffected.
    # Not the libraries auditwheel vendored or patched (the *.libs folders, anything with
    # an RPATH): patchelf moved their load segments, and strip would break them.
    if command -v strip >/dev/null 2>&1 && command -v readelf >/dev/null 2>&1; then
        find "$site" -type f -name '*.so*' -not -path '*.libs/*' -print0 |
            while IFS= read -r -d '' lib; do
                if ! readelf -d "$lib" 2>/dev/null | grep -qE '\((RPATH|RUNPATH)\)'; then
                    strip --strip-unneeded "$lib"
                fi
            done
    else
        echo "build-image-venv: no strip (binutils): the venv keeps its debug symbols" >&2
    fi
}

# The package itself into a venv that has its dependencies (--no-deps: pip must not bring
# back what install_dependencies cut).
install_package() {
    echo "build-image-venv: installing edge-assistant into ${VENV_DIR}"
    [ -d "${TOOLS}/pip" ] || runtime_pip
    "${TOOLS}/pip/bin/python" -m pip --python "${VENV_DIR}/bin/python" install --quiet \
        --no-deps "$REPO"
    rm -f "${VENV_DIR}/${DEPS_MARK}"
    # Everything the service and the worker import at start must still be there.
    "$VENV_DIR/bin/python" -c 'import assistant.serve, assistant.worker.main, onnxruntime, tokenizers'
    "$VENV_DIR/bin/edge-assistant" --version
    chmod -R a+rX,go-w "$VENV_DIR"
}

if [ "$MODELS_DIR" != "-" ]; then
    prepare_models
fi
if [ "$VENV_DIR" != "-" ]; then
    if [ ! -e "${VENV_DIR}/${DEPS_MARK}" ]; then
        install_dependencies
    fi
    if [ "${DEPENDENCIES_ONLY}" = 1 ]; then
        chmod -R a+rX,go-w "$VENV_DIR"
    else
        install_package
    fi
fi
echo "build-image-venv: done"
