# Edge Assistant add-on image — minimal placeholder until the add-on issue lands.
# The base is Debian, not Alpine: onnxruntime publishes no musl wheels.
FROM ghcr.io/home-assistant/base-debian:trixie
ENV ORT_DISABLE_TELEMETRY=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY . /opt/edge-assistant
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir /opt/edge-assistant
CMD ["/opt/venv/bin/edge-assistant", "doctor"]
