# syntax=docker/dockerfile:1
# The Edge Assistant add-on image (the add-on manifest is addon/config.yaml).
# Debian, not Alpine: onnxruntime publishes no musl wheels. The base image brings
# s6-overlay v3, bashio and tempio.
#
#   docker buildx build --platform linux/arm64 \
#       --build-arg BUILD_ARCH=aarch64 --build-arg BUILD_VERSION=0.1.0 .
ARG BUILD_FROM=ghcr.io/home-assistant/base-debian:trixie

# --- python: the interpreter the add-on runs on; the final stage builds on it ---------
FROM ${BUILD_FROM} AS python
# Unpinned apt packages (DL3008): the base image's Debian release fixes the versions, and
# pinning exact ones breaks the build at every Debian security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*

# --- build: what the build stages share: venv support and the venv script -------------
FROM python AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv binutils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml ./
COPY scripts/build-image-venv.sh ./scripts/

# --- dependencies: the runtime venv's dependencies, from pyproject.toml alone, so that a
# change to the sources reuses this layer (the slow one under arm64 emulation)
FROM build AS dependencies
RUN bash scripts/build-image-venv.sh --dependencies /opt/venv

# --- prepare: the default INT8 model, made with the converter (gguf, onnx), which the
# add-on itself does not ship
FROM build AS prepare
COPY README.md ./
COPY assistant ./assistant
# Empty: prepare the model here. A folder of already prepared models (mounted into the
# build) is copied instead: the prepared model is architecture-independent, and the
# arm64 smoke test under emulation (scripts/image-test.sh) reuses the amd64 build's.
ARG PREPARED_MODELS=""
RUN bash scripts/build-image-venv.sh - /opt/models

# --- venv: the runtime venv: the package onto its dependencies; no converter, no pip ---
FROM dependencies AS venv
COPY README.md ./
COPY assistant ./assistant
RUN bash scripts/build-image-venv.sh /opt/venv -

# --- the add-on: the interpreter, the venv, the models and the s6 services, no more ---
FROM python
ARG BUILD_ARCH=amd64
# Must equal addon/config.yaml and pyproject.toml (tests/test_addon.py checks all three).
ARG BUILD_VERSION=0.1.0
COPY --from=venv /opt/venv /opt/venv
COPY --from=prepare /opt/models /opt/models
COPY rootfs /

# ONNX Runtime reads this at import: no usage telemetry from a local assistant.
ENV ORT_DISABLE_TELEMETRY=1 \
    EDGE_ASSISTANT_MODELS=/data/models \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    S6_CMD_WAIT_FOR_SERVICES_MAXTIME=0 \
    S6_SERVICES_GRACETIME=20000

LABEL io.hass.version="${BUILD_VERSION}" \
      io.hass.type="addon" \
      io.hass.arch="${BUILD_ARCH}" \
      io.hass.name="Edge Assistant" \
      io.hass.description="A local AI assistant over MQTT" \
      org.opencontainers.image.title="Edge Assistant" \
      org.opencontainers.image.version="${BUILD_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# Healthy while the service refreshes /run/edge-assistant/health (connected to the
# broker, worker ready); the Supervisor's watchdog restarts an unhealthy add-on.
HEALTHCHECK --interval=30s --timeout=10s --start-period=5m --retries=3 \
    CMD ["/usr/local/bin/edge-assistant-healthcheck"]
