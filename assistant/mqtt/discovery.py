"""Home Assistant MQTT discovery: one retained device-based config message.

HA then shows the assistant as a device with sensors, an "Ask" text box, the last reply
and a cancel button, without the user writing YAML.
"""

from __future__ import annotations

from typing import Any

from assistant import __version__
from assistant.mqtt.topics import Topics

PROJECT_URL = "https://github.com/edge-assistant/edge-assistant"
STATE_MAX = 255  # HA refuses longer entity states


def _sensor(topics: Topics, key: str, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "p": "sensor",
        "name": name,
        "uniq_id": f"{topics.node_id}_{key}",
        "stat_t": topics.telemetry,
        "val_tpl": f"{{{{ value_json.{key} }}}}",
        **extra,
    }


def discovery_payload(topics: Topics, model_id: str, tier: str) -> dict[str, Any]:
    """The config for `{prefix}/device/{node_id}/config`."""
    diagnostic = {"ent_cat": "diagnostic"}
    components: dict[str, dict[str, Any]] = {
        "cpu": _sensor(
            topics, "cpu_percent", "CPU", unit_of_meas="%", stat_cla="measurement", **diagnostic
        ),
        "memory_available": _sensor(
            topics,
            "memory_available_mb",
            "Memory available",
            unit_of_meas="MB",
            stat_cla="measurement",
            **diagnostic,
        ),
        "worker_rss": _sensor(
            topics,
            "worker_rss_mb",
            "Model memory",
            unit_of_meas="MB",
            stat_cla="measurement",
            **diagnostic,
        ),
        "cpu_temp": _sensor(
            topics,
            "cpu_temp_c",
            "CPU temperature",
            unit_of_meas="°C",
            dev_cla="temperature",
            stat_cla="measurement",
            **diagnostic,
        ),
        "queue_depth": _sensor(topics, "queue_depth", "Queue depth", stat_cla="measurement"),
        "tokens_per_s": _sensor(
            topics,
            "tokens_per_s",
            "Tokens per second",
            unit_of_meas="tok/s",
            stat_cla="measurement",
        ),
        "requests_total": _sensor(
            topics, "requests_total", "Requests", stat_cla="total_increasing"
        ),
        "errors_total": _sensor(topics, "errors_total", "Errors", stat_cla="total_increasing"),
        "last_reply": {
            "p": "sensor",
            "name": "Last reply",
            "uniq_id": f"{topics.node_id}_last_reply",
            "stat_t": topics.last_reply,
            "val_tpl": "{{ value_json.state }}",
            "json_attr_t": topics.last_reply,
            "icon": "mdi:message-reply-text",
        },
        "ask": {
            "p": "text",
            "name": "Ask",
            "uniq_id": f"{topics.node_id}_ask",
            "cmd_t": topics.ask,
            "max": STATE_MAX,
            "icon": "mdi:chat-question",
        },
        "cancel": {
            "p": "button",
            "name": "Cancel requests",
            "uniq_id": f"{topics.node_id}_cancel",
            "cmd_t": topics.cancel,
            "pl_prs": '{"id": "*"}',
            "icon": "mdi:cancel",
        },
    }
    return {
        "dev": {
            "ids": [topics.node_id],
            "name": "Edge Assistant",
            "mf": "Edge Assistant",
            "mdl": f"{model_id} ({tier} tier)",
            "sw": __version__,
        },
        "o": {"name": "edge-assistant", "sw": __version__, "url": PROJECT_URL},
        "avty_t": topics.status,
        "pl_avail": "online",
        "pl_not_avail": "offline",
        "qos": 1,
        "cmps": components,
    }


def last_reply_payload(request_id: str, text: str, ts: str) -> dict[str, Any]:
    """State = the first 250 characters (HA's cap is 255); the full text as attributes."""
    state = text if len(text) <= 250 else text[:249] + "…"
    return {"state": state, "text": text, "id": request_id, "ts": ts}
