"""Shared inputs of the grammar tests: HA's real first-turn request and a home around it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from assistant.core.request import Tool

# Bodies a real Home Assistant core sent (copied from the project's shared reference).
HA_REQUESTS = Path(__file__).resolve().parent / "data" / "ha"


def ha_first_turn() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (HA_REQUESTS / "ollama_chat_first_turn_ha2026.2.3.json").read_text()
    )
    return data


def ha_tools() -> list[Tool]:
    return [
        Tool(t["function"]["name"], t["function"]["description"], t["function"]["parameters"])
        for t in ha_first_turn()["tools"]
    ]


HOME_CONTEXT = """Static Context: An overview of the areas and the devices in this smart home:
- names: Kitchen Light, Cooking Light
  domain: light
  areas: Kitchen
- names: Living Room TV
  domain: media_player
  areas: Living Room
- names: Bedroom Lamp
  domain: light
  areas: Bedroom
- names: Ceiling Fan
  domain: fan
  areas: Bedroom
- names: Garage Door
  domain: cover
  areas: Garage
- names: Front Door
  domain: lock
"""


def system_prompt() -> str:
    """HA's instructions with the test home's Static Context in place of its own."""
    text: str = ha_first_turn()["messages"][0]["content"]
    return text.split("Static Context:", maxsplit=1)[0] + HOME_CONTEXT
