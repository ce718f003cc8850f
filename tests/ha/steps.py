"""What a test can ask of a real Home Assistant core; runs inside HA's own venv.

Everything goes through Home Assistant's own code paths: config entries through their
config and options flows, conversations through `conversation.async_converse`, the
frontend's requests through the real websocket and REST API with an access token of a
system user. Each public `step_*` coroutine is one step of the JSON-lines protocol of
driver.py; its keyword arguments and JSON result are the step's request and reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from homeassistant import bootstrap, core, loader
from homeassistant import config as conf_util
from homeassistant.auth.const import GROUP_ID_ADMIN
from homeassistant.components import conversation
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.event import async_track_state_change_event

LOG_FORMAT = "%(asctime)s %(levelname)s (%(threadName)s) [%(name)s] %(message)s"


class StepError(Exception):
    """A step could not do what it was asked (the reply carries the message)."""


class Recorder(logging.Handler):
    """Keeps Home Assistant's warnings and errors for the `log` step."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(
            {"level": record.levelname, "name": record.name, "message": record.getMessage()}
        )


def _speech(response: Any) -> str | None:
    plain = response.speech.get("plain") or {}
    return plain.get("speech")


class Session:
    """One Home Assistant core, started by `step_start`."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.recorder = Recorder()
        self.hass: Any = None
        self.port = 0
        self.token = ""

    # --- life cycle ---------------------------------------------------------------

    def enable_logging(self) -> None:
        handler = logging.FileHandler(self.config_dir / "home-assistant.log")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        root.addHandler(self.recorder)
        root.setLevel(logging.INFO)

    async def step_start(self, config: dict[str, Any]) -> dict[str, Any]:
        """Start a core with `config` (configuration.yaml as a dict; it must set
        `http.server_port`), as `hass` would, minus the pip installs (offline).

        The file is written and read back by Home Assistant's own loader: integrations
        reread it on reload. Automations made in the UI go to automations.yaml, included
        as the UI's default configuration does."""
        began = time.monotonic()
        text = yaml.safe_dump(config) + "automation ui: !include automations.yaml\n"
        (self.config_dir / "configuration.yaml").write_text(text)
        (self.config_dir / "automations.yaml").write_text("[]\n")
        hass = core.HomeAssistant(str(self.config_dir))
        loader.async_setup(hass)
        hass.config.skip_pip = True  # the venv has every requirement; no network here
        self.hass = hass
        loaded = await conf_util.async_hass_config_yaml(hass)
        if await bootstrap.async_from_config_dict(loaded, hass) is None:
            raise StepError("Home Assistant did not set up (see home-assistant.log)")
        await hass.async_start()
        self.port = int(config["http"]["server_port"])
        user = await hass.auth.async_create_system_user("tests", group_ids=[GROUP_ID_ADMIN])
        refresh = await hass.auth.async_create_refresh_token(user)
        self.token = hass.auth.async_create_access_token(refresh)
        return {"version": core.__version__, "started_s": time.monotonic() - began}

    async def step_stop(self) -> dict[str, Any]:
        if self.hass is not None:
            await self.hass.async_stop()
        return {}

    # --- config entries through their flows ---------------------------------------

    async def _flow(self, domain: str, answers: list[dict[str, Any]]) -> Any:
        flows = self.hass.config_entries.flow
        result = await flows.async_init(domain, context={"source": "user"})
        for answer in answers:
            while result["type"] is FlowResultType.SHOW_PROGRESS:
                await self.hass.async_block_till_done()
                result = await flows.async_configure(result["flow_id"])
            if result["type"] not in (FlowResultType.FORM, FlowResultType.MENU):
                raise StepError(f"{domain} flow: expected a form, got {result}")
            result = await flows.async_configure(result["flow_id"], answer)
            if result.get("errors"):
                raise StepError(f"{domain} flow refused {answer}: {result['errors']}")
        if result["type"] is not FlowResultType.CREATE_ENTRY:
            raise StepError(f"{domain} flow did not create an entry: {result}")
        await self.hass.async_block_till_done()
        return result["result"]

    async def _options(self, entry: Any, options: dict[str, Any]) -> None:
        flows = self.hass.config_entries.options
        result = await flows.async_init(entry.entry_id)
        result = await flows.async_configure(result["flow_id"], options)
        if result["type"] is not FlowResultType.CREATE_ENTRY:
            raise StepError(f"{entry.domain} options flow: {result}")
        await self.hass.async_block_till_done()

    def _entry(self, entry: Any) -> dict[str, Any]:
        registry = er.async_get(self.hass)
        entities = er.async_entries_for_config_entry(registry, entry.entry_id)
        return {
            "entry_id": entry.entry_id,
            "title": entry.title,
            "state": entry.state.value,
            "entities": sorted(e.entity_id for e in entities),
        }

    async def step_add_mqtt(self, host: str, port: int) -> dict[str, Any]:
        return self._entry(await self._flow("mqtt", [{"broker": host, "port": port}]))

    async def step_add_wyoming(self, host: str, port: int) -> dict[str, Any]:
        return self._entry(await self._flow("wyoming", [{"host": host, "port": port}]))

    async def step_add_ollama(
        self, url: str, model: str, llm_hass_api: str | None = "assist"
    ) -> dict[str, Any]:
        """The Ollama integration (URL, then model), with the Assist LLM API enabled."""
        entry = await self._flow("ollama", [{"url": url}, {"model": model}])
        if llm_hass_api is not None:
            await self._options(entry, {"llm_hass_api": llm_hass_api})
        return self._entry(entry)

    # --- talking to it ----------------------------------------------------------------

    async def step_converse(
        self,
        text: str,
        agent_id: str | None = None,
        conversation_id: str | None = None,
        language: str | None = None,
    ) -> dict[str, Any]:
        """One sentence through `conversation.async_converse`, as Assist sends it."""
        result = await conversation.async_converse(
            self.hass,
            text,
            conversation_id,
            core.Context(),
            language=language,
            agent_id=agent_id,
        )
        response = result.response
        return {
            "speech": _speech(response),
            "response_type": response.response_type.value,
            "error_code": response.error_code.value if response.error_code else None,
            "conversation_id": result.conversation_id,
        }

    async def step_call_service(
        self, domain: str, service: str, data: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        await self.hass.services.async_call(
            domain, service, data or {}, blocking=True, context=core.Context()
        )
        return {}

    # --- looking at it ----------------------------------------------------------------

    def _state(self, entity_id: str) -> dict[str, Any] | None:
        state = self.hass.states.get(entity_id)
        if state is None:
            return None
        return {"state": state.state, "attributes": dict(state.attributes)}

    async def step_state(self, entity_id: str) -> dict[str, Any] | None:
        return self._state(entity_id)

    async def step_devices(self, domain: str) -> list[dict[str, Any]]:
        """The devices of `domain`'s config entries, each with its entities' states and
        registry entries."""
        devices, entities = dr.async_get(self.hass), er.async_get(self.hass)
        out = []
        for entry in self.hass.config_entries.async_entries(domain):
            for device in dr.async_entries_for_config_entry(devices, entry.entry_id):
                members = er.async_entries_for_device(entities, device.id)
                out.append(
                    {
                        "name": device.name,
                        "manufacturer": device.manufacturer,
                        "model": device.model,
                        "sw_version": device.sw_version,
                        "identifiers": sorted(list(i) for i in device.identifiers),
                        "entities": [
                            {
                                "entity_id": e.entity_id,
                                "unique_id": e.unique_id,
                                "original_name": e.original_name,
                                "unit": e.unit_of_measurement,
                                "device_class": e.device_class or e.original_device_class,
                                "entity_category": e.entity_category,
                                **(self._state(e.entity_id) or {}),
                            }
                            for e in members
                        ],
                    }
                )
        return out

    async def step_wait_state(
        self,
        entity_id: str,
        state: str | None = None,
        not_state: str | None = None,
        timeout_s: float = 10.0,
        attribute: str | None = None,
    ) -> dict[str, Any]:
        """Until the entity's state (or its `attribute`) is `state`, or is not
        `not_state`; the entity's state, and how long it took."""
        began = time.monotonic()
        found: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def check(*_args: Any) -> None:
            now = self._state(entity_id)
            if now is None or found.done():
                return
            value = now["state"] if attribute is None else now["attributes"].get(attribute)
            if (state is not None and value == state) or (
                not_state is not None and value != not_state
            ):
                found.set_result(now)

        unsubscribe = async_track_state_change_event(self.hass, [entity_id], check)
        try:
            check()
            result = await asyncio.wait_for(found, timeout_s)
        except TimeoutError as err:
            raise StepError(
                f"{entity_id} stayed {self._state(entity_id)} for {timeout_s} s"
            ) from err
        finally:
            unsubscribe()
        return {**result, "waited_s": time.monotonic() - began}

    async def step_log(self, since: int = 0) -> dict[str, Any]:
        """Warnings and errors logged so far (from index `since`), and the next index."""
        records = self.recorder.records
        return {"records": records[since:], "next": len(records)}

    # --- the frontend's own API -------------------------------------------------------

    async def step_ws(
        self, message: dict[str, Any], until_event: str | None = None, timeout_s: float = 60.0
    ) -> dict[str, Any]:
        """One websocket command; with `until_event`, also its events up to the one of
        that type (an Assist pipeline run ends with `run-end`)."""
        url = f"http://127.0.0.1:{self.port}/api/websocket"
        events: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.receive_json(timeout=timeout_s)  # auth_required
            await ws.send_json({"type": "auth", "access_token": self.token})
            if (await ws.receive_json(timeout=timeout_s))["type"] != "auth_ok":
                raise StepError("the websocket refused the token")
            await ws.send_json({"id": 1, **message})
            result = await ws.receive_json(timeout=timeout_s)
            if not result.get("success"):
                raise StepError(f"{message['type']}: {result.get('error')}")
            while until_event is not None:
                event = (await ws.receive_json(timeout=timeout_s))["event"]
                events.append(event)
                if event.get("type") == until_event:
                    break
        return {"result": result.get("result"), "events": events}

    async def step_http(
        self, method: str, path: str, body: Any = None, timeout_s: float = 60.0
    ) -> dict[str, Any]:
        """A REST API request with the token, as the frontend makes it."""
        headers = {"Authorization": f"Bearer {self.token}"}
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.request(
                method, f"http://127.0.0.1:{self.port}{path}", json=body, headers=headers
            ) as response,
        ):
            return {"status": response.status, "body": await response.text()}
