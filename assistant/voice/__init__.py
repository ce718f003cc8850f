"""Voice front ends: Rhasspy Hermes over MQTT and a Wyoming "handle" server for Home
Assistant's Assist. Both turn recognised speech into requests of the same core."""

from __future__ import annotations

import logging

from assistant.core.api import CoreApi
from assistant.core.events import Finished
from assistant.core.request import FrontEnd, Request, new_id
from assistant.errors import RequestError

LOG = logging.getLogger(__name__)
# Voice requests have a person waiting in front of a speaker: they may use the batch
# slots the scheduler keeps for priority > 0 (assistant/scheduler.py).
VOICE_PRIORITY = 1


def voice_request(text: str, session: str | None, client: str, front_end: FrontEnd) -> Request:
    """Recognised speech as a request: a person is waiting, so it may take the urgent slots."""
    return Request(new_id(), front_end, client, text, session=session, priority=VOICE_PRIORITY)


async def ask_safely(core: CoreApi, request: Request) -> Finished:
    """The final event, even when asking raised (a bug): then an `engine_failure`, logged
    here, so the speaker still hears an apology instead of nothing."""
    try:
        return await core.submit(request).final()
    except Exception:  # the boundary: a bug must not turn into silence
        LOG.exception("voice request %s failed unexpectedly", request.id)
        return Finished(request.id, error=RequestError("engine_failure", "internal error"))


_APOLOGIES = {
    "invalid_request": "Sorry, I did not catch a question.",
    "prompt_too_long": "Sorry, that is too long for me to answer.",
    "busy": "Sorry, I am busy right now. Please ask again in a moment.",
    "timeout": "Sorry, that took me too long.",
    "shutting_down": "Sorry, I am restarting. Please ask again in a minute.",
}
APOLOGY = "Sorry, something went wrong and I cannot answer that."


def apology(error: RequestError | None) -> str:
    """A short sentence to speak instead of silence when a request failed."""
    if error is None:
        return APOLOGY
    return _APOLOGIES.get(error.code, APOLOGY)


def spoken_answer(final: Finished) -> tuple[str, RequestError | None]:
    """The text to speak for a final event, and the error behind it (None on success).
    An empty or cancelled reply is spoken as an apology too: never silence."""
    result = final.result
    if result is None:
        error = final.error or RequestError("engine_failure", "no result")
    elif result.finish_reason == "cancelled":
        error = RequestError("cancelled", "the request was cancelled")
    elif result.text.strip():
        return result.text.strip(), None
    else:
        error = RequestError("engine_failure", "the model gave an empty reply")
    return apology(error), error
