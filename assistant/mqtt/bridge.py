"""The one crossing point between paho's network thread and the asyncio loop.

paho's callbacks only hand messages and connection events to the loop with
`call_soon_threadsafe`; all decisions happen on the loop. Publishing is thread-safe in
paho and is called from the loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from assistant.config import MqttConfig
from assistant.mqtt.requests import MAX_PAYLOAD

LOG = logging.getLogger(__name__)
# The broker keeps our session (and queues QoS 1 prompts) this long while we are away.
SESSION_EXPIRY_S = 24 * 3600
# Packets larger than this are dropped by the broker instead of reaching us (MQTT 5).
MAX_PACKET = MAX_PAYLOAD + 4096
RECONNECT_DELAY_S = (1, 8)


@dataclass(frozen=True)
class Incoming:
    """One received PUBLISH, copied out of paho's objects."""

    topic: str
    payload: bytes
    retain: bool
    dup: bool
    mid: int
    response_topic: str | None = None
    correlation_data: bytes | None = None


class MqttBridge:
    """A paho client run by its own thread, reporting to the asyncio loop."""

    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        will_topic: str,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[Incoming], None],
        on_connect: Callable[[], None],
    ) -> None:
        self.config = config
        self.v5 = config.protocol == "5"
        self._loop = loop
        self._on_message = on_message
        self._on_connect = on_connect
        self.connected = False
        self.connects = 0
        self._last_info: mqtt.MQTTMessageInfo | None = None
        self._stopping = False
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            # MQTT 3.1.1: a persistent session; MQTT 5 sets clean_start at connect.
            clean_session=None if self.v5 else False,
        )
        if config.username:
            client.username_pw_set(config.username, config.password)
        if config.tls.enabled:
            client.tls_set(
                ca_certs=str(config.tls.ca_certs) if config.tls.ca_certs else None,
                certfile=str(config.tls.certfile) if config.tls.certfile else None,
                keyfile=str(config.tls.keyfile) if config.tls.keyfile else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(config.tls.insecure)
        client.will_set(will_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(*RECONNECT_DELAY_S)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_message = self._paho_message
        client.on_socket_open = self._paho_socket_open
        self.client = client

    # --- paho's thread: hand over, nothing else ---------------------------------------

    def _paho_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        response = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = "\ufffd"  # not a topic anyone subscribed to; dropped on the loop
        incoming = Incoming(
            topic=topic,
            payload=bytes(msg.payload),
            retain=bool(msg.retain),
            dup=bool(msg.dup),
            mid=int(msg.mid),
            response_topic=response if isinstance(response, str) else None,
            correlation_data=bytes(correlation) if correlation is not None else None,
        )
        self._loop.call_soon_threadsafe(self._deliver, incoming)

    @staticmethod
    def _paho_socket_open(_c: mqtt.Client, _u: Any, sock: Any) -> None:
        # paho leaves Nagle on: a reply written shortly after our PUBACK waited for the
        # broker's delayed ACK (~40 ms on Linux) before it left. Small packets go at once.
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _paho_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            self._loop.call_soon_threadsafe(self._connected)
        else:
            LOG.warning("broker refused the connection: %s", reason)

    def _paho_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._loop.call_soon_threadsafe(self._disconnected, str(reason))

    # --- the loop ----------------------------------------------------------------------

    def _deliver(self, incoming: Incoming) -> None:
        self._on_message(incoming)

    def _connected(self) -> None:
        self.connected = True
        self.connects += 1
        LOG.info(
            "connected to %s:%d (MQTT %s)", self.config.host, self.config.port, self.config.protocol
        )
        self._on_connect()

    def _disconnected(self, reason: str) -> None:
        if self.connected and not self._stopping:
            LOG.warning("disconnected from the broker (%s); reconnecting", reason)
        self.connected = False

    def start(self) -> None:
        """Connect in the background; a broker that is down is retried with backoff."""
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
            properties.MaximumPacketSize = MAX_PACKET
        self.client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive_s,
            clean_start=False if self.v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self.client.loop_start()

    def subscribe(self, filters: list[str], *, retained: bool = False) -> None:
        """QoS 1 subscriptions; retained messages are not sent unless `retained`."""
        if self.v5:
            handling = (
                SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE
                if retained
                else SubscribeOptions.RETAIN_DO_NOT_SEND
            )
            options = SubscribeOptions(qos=1, retainHandling=handling)
            self.client.subscribe([(f, options) for f in filters])
        else:
            self.client.subscribe([(f, 1) for f in filters])

    def publish(
        self,
        topic: str,
        payload: str | bytes,
        *,
        retain: bool = False,
        correlation_data: bytes | None = None,
        expiry_s: int | None = None,
    ) -> None:
        """QoS 1. Never retried by us: paho queues it while disconnected (rc 4) and a
        retry would publish it twice. `expiry_s`: MQTT 5 message expiry (3.1.1 has none)."""
        properties = None
        if self.v5 and (correlation_data is not None or expiry_s is not None):
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if correlation_data is not None:
                properties.CorrelationData = correlation_data
            if expiry_s is not None:
                properties.MessageExpiryInterval = expiry_s
        try:
            self._last_info = self.client.publish(
                topic, payload, qos=1, retain=retain, properties=properties
            )
        except (ValueError, TypeError) as err:  # paho rejects bad topics: a bug upstream
            LOG.error("not published to %r: %s", topic[:80], err)

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until what was published has left (bounded: the broker may be gone)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.connected:
            info = self._last_info
            if info is None or info.is_published():
                return
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        await self.flush()
        self._stopping = True
        self.client.disconnect()
        await asyncio.get_running_loop().run_in_executor(None, self.client.loop_stop)
