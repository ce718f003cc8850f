"""What a front end may rely on: submit a `Request`, read its events, cancel it.

Front ends depend on this protocol, not on the core's class, so each stays a thin
translator that can be tested against the real core or read on its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from assistant.core.events import Event, Finished
from assistant.core.request import Request


class Handle(Protocol):
    """One accepted request, from submit to its one final event."""

    @property
    def id(self) -> str: ...

    def events(self) -> AsyncIterator[Event]:
        """Deltas, then exactly one `Finished`; may be iterated once."""
        ...

    async def final(self) -> Finished:
        """Wait for the one final event (drops the deltas)."""
        ...

    def cancel(self) -> bool:
        """Ask the request to stop; it still ends in one `Finished` (finish_reason
        `cancelled`). False when it had already finished."""
        ...


class CoreApi(Protocol):
    """The core as front ends see it. `submit` never raises for a bad or refused request:
    the handle's final event carries the error (busy, shutting_down, invalid_request…)."""

    @property
    def model_id(self) -> str: ...

    def submit(self, request: Request) -> Handle: ...

    def cancel(self, request_id: str) -> bool: ...

    def cancel_all(self) -> int:
        """Cancel every request not yet finished; how many."""
        ...

    def reset_session(self, key: str) -> bool:
        """Forget a conversation's history; False if it had none."""
        ...
