"""Run a real Home Assistant core in-process and perform steps on request.

Started by harness.py with the Python of Home Assistant's venv (scripts/ha-venv.sh):
`python -m tests.ha.driver CONFIG_DIR`. Reads one JSON object per line on stdin,
`{"id": N, "step": NAME, "args": {...}}`, runs `Session.step_NAME(**args)` on Home
Assistant's event loop, and answers one line on stdout, `{"id": N, "ok": true, "result":
...}` or `{"id": N, "ok": false, "error": "..."}`. The `stop` step stops the core and
ends the driver; so does the end of stdin. Anything else written to stdout (by Home
Assistant or a library) goes to stderr, so the protocol stays clean.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import IO, Any

from tests.ha.steps import Session


def _read_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line)
    loop.call_soon_threadsafe(queue.put_nowait, None)


async def _run(session: Session, command: dict[str, Any]) -> dict[str, Any]:
    step = getattr(session, f"step_{command.get('step')}", None)
    if step is None:
        return {"ok": False, "error": f"no step {command.get('step')!r}"}
    try:
        result = await step(**command.get("args", {}))
    except Exception as err:  # the reply carries it; the test decides
        traceback.print_exc()
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}
    return {"ok": True, "result": result}


async def serve(config_dir: Path, out: IO[str]) -> None:
    session = Session(config_dir)
    session.enable_logging()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    reader = threading.Thread(
        target=_read_lines, args=(asyncio.get_running_loop(), queue), daemon=True
    )
    reader.start()
    while (line := await queue.get()) is not None:
        command = json.loads(line)
        reply = await _run(session, command)
        out.write(json.dumps({"id": command.get("id"), **reply}, default=str) + "\n")
        out.flush()
        if command.get("step") == "stop":
            return
    await session.step_stop()


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    asyncio.run(serve(Path(sys.argv[1]), protocol))


if __name__ == "__main__":
    main()
