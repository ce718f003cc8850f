#!/usr/bin/env bash
# ==============================================================================
# Build the add-on image and run it, on this machine, without ghcr.io or Docker Hub
# (CI runs this after pytest; docs/addon.md says what it does and does not cover):
#   1. the stand-in base: Debian trixie (debootstrap) with Debian's s6, a small /init
#      and a stand-in bashio (tests/image/base/), imported into podman; cached;
#   2. the project's real Dockerfile on it (BUILD_FROM), `podman build --format docker`;
#   3. tests/image/check_image.py: the image with a private Mosquitto, a Supervisor API
#      double, /data and /share; a prompt, changed options, the health check, the
#      worker's sandbox, `podman stop`, a killed service; prints the image size;
#   4. tests/image/arm64-smoke.sh: the arm64 image under qemu-user emulation.
#
#   scripts/image-test.sh            (as root; EA_IMAGE_ARM64=0 skips step 4)
# ==============================================================================
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
ARM64=${EA_IMAGE_ARM64:-1}
readonly IMAGE=localhost/edge-assistant-addon:image-test-amd64
readonly TARGET_MB=450
readonly CA=/etc/ssl/certs/ca-certificates.crt

# --- tools: Debian's podman (rootful), buildah, debootstrap, runc, qemu for arm64 ------
missing=()
for tool in podman buildah debootstrap runc; do
    command -v "${tool}" >/dev/null 2>&1 || missing+=("${tool}")
done
if [ "${ARM64}" = 1 ] && ! [ -x /usr/bin/qemu-aarch64-static ]; then
    missing+=(qemu-user-static)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "image-test: installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The defaults fail here (nofile limit, crun on hybrid cgroups): tests/image/containers.conf.
export CONTAINERS_CONF="${REPO}/tests/image/containers.conf"

# --- 1. the stand-in base (cached by content) -----------------------------------------
start=${SECONDS}
base=$(bash tests/image/build-base.sh amd64)
echo "image-test: base ${base} ($((SECONDS - start)) s)"

# --- 2. the add-on image ---------------------------------------------------------------
# The host's CA bundle, read-only, is all pip needs inside the build (no pip.conf).
start=${SECONDS}
podman build --format docker --build-arg BUILD_FROM="${base}" \
    --volume "${CA}:${CA}:ro" --tag "${IMAGE}" . >/tmp/edge-assistant-image-build.log 2>&1 || {
    tail -n 60 /tmp/edge-assistant-image-build.log
    echo "image-test: the build failed (log: /tmp/edge-assistant-image-build.log)" >&2
    exit 1
}
echo "image-test: built ${IMAGE} ($((SECONDS - start)) s)"
# The HEALTHCHECK only survives in the docker format: check that it is there.
podman image inspect --format '{{json .HealthCheck}}' "${IMAGE}" | grep -q edge-assistant-healthcheck

bytes=$(podman image inspect --format '{{.Size}}' "${IMAGE}")
size_mb=$((bytes / 1000000))
verdict="met"
if [ "${size_mb}" -gt "${TARGET_MB}" ]; then
    verdict="NOT met"
fi
echo "image-test: image size ${size_mb} MB (target <= ${TARGET_MB} MB: ${verdict})"
podman run --rm --entrypoint /bin/sh "${IMAGE}" -c \
    'du -sm /opt/venv /opt/models /usr/lib/python3* 2>/dev/null' | sed 's/^/image-test:   /'

# --- 3. run it --------------------------------------------------------------------------
.venv/bin/python -m tests.image.check_image "${IMAGE}"

# --- 4. arm64 under emulation ---------------------------------------------------------
if [ "${ARM64}" = 1 ]; then
    bash tests/image/arm64-smoke.sh "${IMAGE}"
else
    echo "image-test: arm64 smoke test skipped (EA_IMAGE_ARM64=0)"
fi
# Every changed input leaves untagged layers behind (~2 GB a build): drop those older
# than two days, and keep the recent ones, which are the build cache of the next run.
podman image prune --force --filter until=48h >/dev/null
echo "image-test: done; image size ${size_mb} MB"
