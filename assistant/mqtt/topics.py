"""Every topic the service subscribes or publishes to, and the rules for topics that come
from input (a source name, a requested reply topic)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from assistant.config import MqttConfig

LEVEL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TOPIC = 256  # longest reply topic accepted (Mosquitto allows 65,535; nobody needs it)
# Rhasspy's Hermes protocol (fixed names, outside the base topic).
HERMES_TEXT_CAPTURED = "hermes/asr/textCaptured"
HERMES_SAY = "hermes/tts/say"
HERMES_SAY_FINISHED = "hermes/tts/sayFinished"
HERMES_END_SESSION = "hermes/dialogueManager/endSession"


def valid_level(text: str) -> bool:
    """A topic level derived from input: `[A-Za-z0-9_-]{1,64}` (contract.md)."""
    return bool(LEVEL.match(text))


@dataclass(frozen=True)
class Topics:
    base: str
    allowed_reply_prefixes: tuple[str, ...] = ()
    shared_group: str | None = None
    discovery_prefix: str = "homeassistant"
    node_id: str = "edge_assistant"

    @classmethod
    def from_config(cls, mqtt: MqttConfig, discovery_prefix: str, node_id: str) -> Topics:
        return cls(
            base=mqtt.base_topic,
            allowed_reply_prefixes=mqtt.allowed_reply_prefixes,
            shared_group=mqtt.shared_group,
            discovery_prefix=discovery_prefix,
            node_id=node_id,
        )

    @property
    def ask(self) -> str:
        return f"{self.base}/ask"

    @property
    def cancel(self) -> str:
        return f"{self.base}/cancel"

    @property
    def reply(self) -> str:
        return f"{self.base}/reply"

    def reply_for(self, source: str) -> str:
        return f"{self.base}/reply/{source}"

    @property
    def session(self) -> str:
        """`{base}/session`: the parent of `{base}/session/{key}/reset`."""
        return f"{self.base}/session"

    @property
    def session_reset(self) -> str:
        return f"{self.session}/+/reset"

    def session_of_reset(self, topic: str) -> str | None:
        """`kitchen` for `{base}/session/kitchen/reset`; None for any other topic."""
        prefix, suffix = self.session + "/", "/reset"
        if not topic.startswith(prefix) or not topic.endswith(suffix):
            return None
        key = topic[len(prefix) : -len(suffix)]
        return key if "/" not in key else None

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def info(self) -> str:
        return f"{self.base}/info"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    @property
    def last_reply(self) -> str:
        return f"{self.base}/last_reply"

    @property
    def ha_status(self) -> str:
        return f"{self.discovery_prefix}/status"

    @property
    def discovery(self) -> str:
        return f"{self.discovery_prefix}/device/{self.node_id}/config"

    def subscriptions(self, *, hermes: bool = False) -> list[str]:
        """Prompt topics, load-balanced through a shared subscription when configured."""
        prompts = [self.ask, f"{self.ask}/+"]
        if hermes:
            prompts.append(HERMES_TEXT_CAPTURED)
        # Cancels and session resets must reach every instance: the one running the
        # request may be any, and each instance keeps its own sessions.
        everyone = [self.cancel, self.session_reset]
        if hermes:
            everyone.append(HERMES_SAY_FINISHED)  # each instance waits for its own ids
        if self.shared_group:
            prompts = [f"$share/{self.shared_group}/{f}" for f in prompts]
        return prompts + everyone

    def source_of(self, topic: str) -> str | None:
        """`kitchen` for `{base}/ask/kitchen`; None for `{base}/ask`."""
        prefix = self.ask + "/"
        return topic[len(prefix) :] if topic.startswith(prefix) else None

    def reply_topic_problem(self, topic: str) -> str | None:
        """Why a requested reply topic is refused, or None when it may be used.

        Only topics under `{base}/` or an allowed prefix, never a wildcard, never one of
        the service's own input or state topics (a reply there would be read back as a
        prompt, or spoof the service's status).
        """
        if not topic or len(topic) > MAX_TOPIC:
            return f"must be 1-{MAX_TOPIC} characters"
        if any(ch in topic for ch in "+#\x00") or topic.startswith("$"):
            return "must not contain wildcards, NUL or start with $"
        if any(not ch.isprintable() for ch in topic):
            return "must not contain control characters"
        own_inputs = (
            self.ask,
            self.cancel,
            self.session,
            self.status,
            self.info,
            self.telemetry,
        )
        if any(topic == t or topic.startswith(t + "/") for t in own_inputs):
            return "must not be one of the assistant's own input or state topics"
        prefixes = (self.base, *self.allowed_reply_prefixes)
        if not any(topic.startswith(p + "/") for p in prefixes):
            allowed = ", ".join(f"{p}/..." for p in prefixes)
            return f"must lie under {allowed}"
        return None
