#!/usr/bin/env bash
# ==============================================================================
# arm64 smoke test of the add-on image under qemu-user emulation (what most Raspberry
# Pi users run). Correctness only: speed under emulation means nothing. Checks that
# the aarch64 wheels install and load, that `edge-assistant ask` answers, and that
# `doctor` reports the arm CPU features the plan uses. The model folder is copied from
# the amd64 image (it is architecture-independent; preparing it under emulation would
# take most of the time budget).
#
#   tests/image/arm64-smoke.sh AMD64_IMAGE       (scripts/image-test.sh runs it)
# ==============================================================================
set -euo pipefail
cd "$(dirname "$0")/../.."
AMD64_IMAGE=${1:?usage: arm64-smoke.sh AMD64_IMAGE}
readonly IMAGE=localhost/edge-assistant-addon:image-test-arm64
readonly CA=/etc/ssl/certs/ca-certificates.crt
readonly BINFMT=/proc/sys/fs/binfmt_misc
# qemu-user (7.2, Debian 12) shows an arm64 process the x86 host's /proc/cpuinfo, and
# ONNX Runtime's CPU detection (the cpuinfo library) crashes on it at import. Builds and
# runs here get an arm64 one (two Cortex-A76 cores, as a Raspberry Pi 5) bind-mounted
# over it, as lxcfs does for containers; real arm64 hardware has its own. The features
# doctor reports come from AT_HWCAP (qemu's emulated CPU), not from this file.
CPUINFO="$(pwd)/tests/image/emulated-cpuinfo-arm64:/proc/cpuinfo:ro"
readonly CPUINFO
start=${SECONDS}

# Debian's qemu-user-static registers qemu-aarch64 with the F flag (the interpreter is
# opened at registration, so it works inside containers); mount binfmt_misc first.
if [ ! -e "${BINFMT}/register" ]; then
    mount -t binfmt_misc binfmt_misc "${BINFMT}"
fi
if [ ! -e "${BINFMT}/qemu-aarch64" ]; then
    cat /usr/lib/binfmt.d/qemu-aarch64.conf >"${BINFMT}/register"
fi
grep -q '^flags: .*F' "${BINFMT}/qemu-aarch64"

base=$(bash tests/image/build-base.sh arm64)
echo "arm64-smoke: base ${base} ($((SECONDS - start)) s)"

models=$(mktemp -d /var/tmp/edge-assistant-models.XXXXXX)
trap 'rm -rf "${models}"' EXIT
container=$(podman create "${AMD64_IMAGE}")
podman cp "${container}:/opt/models/." "${models}/"
podman rm "${container}" >/dev/null

podman build --format docker --platform linux/arm64 --build-arg BUILD_FROM="${base}" \
    --build-arg BUILD_ARCH=aarch64 --build-arg PREPARED_MODELS=/prepared-models \
    --volume "${models}:/prepared-models:ro" --volume "${CA}:${CA}:ro" --volume "${CPUINFO}" \
    --tag "${IMAGE}" . >/tmp/edge-assistant-image-arm64.log 2>&1 || {
    tail -n 60 /tmp/edge-assistant-image-arm64.log
    echo "arm64-smoke: the build failed (log: /tmp/edge-assistant-image-arm64.log)" >&2
    exit 1
}
echo "arm64-smoke: built ${IMAGE} ($((SECONDS - start)) s)"

run() {
    podman run --rm --platform linux/arm64 --entrypoint /bin/bash --volume "${CPUINFO}" \
        --env EDGE_ASSISTANT_MODELS=/opt/models "${IMAGE}" -c "$1"
}

# The interpreter and every compiled extension in the venv are aarch64 ELF files.
# shellcheck disable=SC2016  # expanded inside the container
run 'set -e
    test "$(uname -m)" = aarch64
    /opt/venv/bin/python - <<PY
import pathlib, platform
import numpy, onnxruntime, tokenizers, psutil, yaml
assert platform.machine() == "aarch64", platform.machine()
AARCH64 = 183  # e_machine of an arm64 ELF file
for lib in pathlib.Path("/opt/venv").rglob("*.so*"):
    head = lib.read_bytes()[:20]
    if head[:4] == b"\x7fELF":
        assert int.from_bytes(head[18:20], "little") == AARCH64, lib
print("arm64-smoke: aarch64 wheels load: onnxruntime", onnxruntime.__version__,
      onnxruntime.get_available_providers(), "numpy", numpy.__version__)
PY'

# A prompt, greedy, through the real engine and worker.
reply=$(run 'cd / && /opt/venv/bin/edge-assistant ask --json --max-tokens 8 --temperature 0 \
    "Say hello to the kitchen."')
echo "arm64-smoke: ask: ${reply}"
python3 -c 'import json, sys
reply = json.loads(sys.argv[1])
assert "error" not in reply and reply["usage"]["completion_tokens"] >= 1, reply' "${reply}"

# doctor: the arm int8 features (the plan's decode estimate uses dotprod), from AT_HWCAP:
# qemu's CPU has sve and i8mm, which the mounted cpuinfo does not list.
doctor=$(run 'cd / && /opt/venv/bin/edge-assistant doctor --json')
python3 -c 'import json, sys
report = json.loads(sys.argv[1])
hardware = report["hardware"]
features = set(hardware["cpu_features"])
print("arm64-smoke: doctor: arch", hardware["arch"], "int8 features", sorted(features))
assert hardware["arch"] == "aarch64", hardware["arch"]
assert {"asimd", "dotprod", "i8mm", "sve"} <= features, features
assert not features & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx"}, features' "${doctor}"
echo "arm64-smoke: passed ($((SECONDS - start)) s)"
