"""A TEST DOUBLE of the Home Assistant Supervisor's HTTP API (the Supervisor cannot run
here): the two resources an add-on container of Edge Assistant asks for.

- `GET /services/mqtt`: the broker the Mosquitto add-on offers (the service asks,
  assistant/supervisor_api.py);
- `GET /addons/self/options/config`: the add-on's options (bashio::config asks, in the
  s6 `run` script).

Both want `Authorization: Bearer <token>` (401 otherwise) and answer the Supervisor's
envelope `{"result": "ok", "data": ...}`. Every request is recorded. Like the real
Supervisor, `write_options` also writes the options to the add-on's
`/data/options.json`, which the service reads.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol, TypeVar


@dataclass
class SupervisorDouble:
    token: str
    broker: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def write_options(self, options: Mapping[str, Any], data_dir: Path | None = None) -> None:
        """New options, as the Supervisor stores them (and writes options.json)."""
        with self.lock:
            self.options = json.loads(json.dumps(options))
        if data_dir is not None:
            (data_dir / "options.json").write_text(json.dumps(options))

    def paths_asked(self) -> list[str]:
        with self.lock:
            return [path for path, _ in self.requests]

    def answer(self, path: str, auth: str | None) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append((path, auth))
            if auth != f"Bearer {self.token}":
                return 401, {"result": "error", "message": "Unauthorized"}
            if path == "/services/mqtt":
                return 200, {"result": "ok", "data": dict(self.broker)}
            if path == "/addons/self/options/config":
                return 200, {"result": "ok", "data": json.loads(json.dumps(self.options))}
            return 404, {"result": "error", "message": f"{path} is not in this double"}


class Answers(Protocol):
    """What `serving` needs of a double: an answer per GET, and where it is served."""

    url: str

    def answer(self, path: str, auth: str | None) -> tuple[int, Any]: ...


D = TypeVar("D", bound=Answers)


@contextmanager
def serving(double: D, host: str = "127.0.0.1") -> Iterator[D]:
    """Serve `double` on `host` at a free port (its `url`) until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = double.answer(self.path, self.headers.get("Authorization"))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    double.url = f"http://{host}:{server.server_address[1]}"
    try:
        yield double
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
