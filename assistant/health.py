"""The health file the add-on's Docker HEALTHCHECK reads: its age says whether the service
is alive, connected and has a ready worker. Off unless `EDGE_ASSISTANT_HEALTH_FILE` is set."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

LOG = logging.getLogger(__name__)
HEALTH_FILE_ENV = "EDGE_ASSISTANT_HEALTH_FILE"  # set by the add-on; unset: no health file
HEARTBEAT_MAX_S = 30.0


class HealthFile:
    def __init__(self, path: Path | None, interval_s: float, healthy: Callable[[], bool]) -> None:
        self.path = path
        self.interval_s = min(interval_s, HEARTBEAT_MAX_S)
        self._healthy = healthy

    @classmethod
    def from_env(
        cls, interval_s: float, healthy: Callable[[], bool], env: Mapping[str, str] | None = None
    ) -> HealthFile:
        env = os.environ if env is None else env
        path = Path(env[HEALTH_FILE_ENV]) if env.get(HEALTH_FILE_ENV) else None
        return cls(path, interval_s, healthy)

    async def run(self) -> None:
        while True:
            self.beat()
            await asyncio.sleep(self.interval_s)

    def beat(self) -> None:
        """Refresh the file while healthy; written atomically."""
        if self.path is None or not self._healthy():
            return
        payload = json.dumps({"ts": round(time.time()), "interval_s": round(self.interval_s)})
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(payload + "\n")
            temporary.replace(self.path)
        except OSError as err:
            LOG.warning("cannot write the health file %s: %s", self.path, err)

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
