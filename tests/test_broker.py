"""The private broker fixture works end to end with the paho client the service uses."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import Broker


def test_private_broker_round_trip(mosquitto: Broker) -> None:
    received: list[bytes] = []
    got = threading.Event()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received.append(bytes(msg.payload))
        got.set()

    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        client.subscribe("fixture/check", qos=1)
        assert subscribed.wait(5)
        client.publish("fixture/check", b"hello", qos=1)
        assert got.wait(5)
    finally:
        client.loop_stop()
        client.disconnect()
    assert received == [b"hello"]
