#!/usr/bin/env bash
# ==============================================================================
# Build the TEST STAND-IN for Home Assistant's base-debian:trixie image and import it
# into podman (scripts/image-test.sh runs this; HA's base is in no registry this
# machine can reach):
#   debootstrap --variant=minbase trixie + bash, curl, jq, ca-certificates (as in HA's
#   base) + Debian's s6 and execline + tests/image/base/ (a small /init on s6-svscan,
#   with-contenv, halt and a stand-in bashio; each file says what differs from the real
#   s6-overlay and bashio), with Debian's slim-image apt/dpkg settings.
#
#   tests/image/build-base.sh ARCH      (amd64 or arm64; prints the image name)
#
# Cached: the image is named after a hash of this script and tests/image/base/, so a
# second run on the same machine reuses it; nothing depends on the cache being there.
# Environment: EA_DEBIAN_MIRROR (default: the mirror apt uses here).
# ==============================================================================
set -euo pipefail

ARCH=${1:?usage: build-base.sh amd64|arm64}
HERE=$(cd "$(dirname "$0")" && pwd)
readonly SUITE=trixie
readonly PACKAGES=s6,execline,curl,jq,ca-certificates

key=$( (cat "$0" "${HERE}"/base/*; echo "${ARCH} ${SUITE} ${PACKAGES}") | sha256sum | cut -c1-12)
IMAGE="localhost/edge-assistant-standin-base:${SUITE}-${ARCH}-${key}"
if podman image exists "${IMAGE}"; then
    echo "build-base: ${IMAGE} is cached" >&2
    echo "${IMAGE}"
    exit 0
fi

# The Debian mirror apt uses on this machine (deb822 or one-line sources).
mirror=${EA_DEBIAN_MIRROR:-}
if [[ -z "${mirror}" ]]; then
    mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | grep -oE '(https?)://[^ ]+/debian/?( |$)' | head -n 1 | tr -d ' ' || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

root=$(mktemp -d /var/tmp/edge-assistant-base.XXXXXX)
trap 'rm -rf "${root}"' EXIT
echo "build-base: debootstrap ${SUITE} ${ARCH} from ${mirror}" >&2
debootstrap --variant=minbase --arch="${ARCH}" --include="${PACKAGES}" \
    "${SUITE}" "${root}" "${mirror}" >"${root}.log" 2>&1 || {
    tail -n 30 "${root}.log" >&2
    exit 1
}
rm -f "${root}.log"

# Debian's slim-image settings (as its official images have them): no docs, man pages
# or translations from any later install, and no apt caches left behind; without them
# every `apt-get update` in the Dockerfile leaves ~94 MB in a layer.
cat >"${root}/etc/dpkg/dpkg.cfg.d/slim-image" <<'DPKG'
# Keep images small: no documentation or translations (copyright notices stay).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
DPKG
cat >"${root}/etc/apt/apt.conf.d/slim-image" <<'APT'
// Keep images small: no downloaded .deb files and no binary package caches after any
// apt run, no translated descriptions, compressed package lists.
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
Acquire::GzipIndexes "true";
Acquire::CompressionTypes::Order:: "gz";
APT::AutoRemove::SuggestsImportant "false";
APT
# What debootstrap installed before those settings existed.
find "${root}/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
find "${root}/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "${root}"/usr/share/{man,groff,info,lintian,linda,locale}/*
rm -rf "${root}"/var/cache/apt/* "${root}"/var/lib/apt/lists/* "${root}"/var/log/*.log

# The stand-in s6-overlay and bashio.
install -D -m 0755 "${HERE}/base/init" "${root}/init"
install -D -m 0755 "${HERE}/base/with-contenv" "${root}/command/with-contenv"
install -D -m 0755 "${HERE}/base/halt" "${root}/usr/lib/s6-standin/halt"
install -D -m 0755 "${HERE}/base/svscan-finish" "${root}/usr/lib/s6-standin/svscan-finish"
install -D -m 0755 "${HERE}/base/bashio" "${root}/usr/bin/bashio"
install -D -m 0644 "${HERE}/base/bashio.sh" "${root}/usr/lib/bashio/bashio.sh"

echo "build-base: importing ${IMAGE}" >&2
tar --numeric-owner -C "${root}" -c . | podman import --arch "${ARCH}" \
    --change 'ENTRYPOINT ["/init"]' --change 'CMD []' --change 'ENV LANG=C.UTF-8' \
    --change 'WORKDIR /' - "${IMAGE}" >/dev/null
echo "${IMAGE}"
