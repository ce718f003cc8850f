"""The core: one typed `Request` in, one `Flight` out that ends in exactly one `Finished`.

It owns the conversation sessions, the scheduler and the worker client. Front ends (MQTT,
Hermes, Wyoming, `ask`, HTTP) only translate their protocol to a `Request` and the events
back; everything a request goes through after that is decided here or below.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from assistant.config import Config
from assistant.core.constrained import ToolPolicy
from assistant.core.events import Finished
from assistant.core.flight import Flight
from assistant.core.prompt import generation_request
from assistant.core.request import Request
from assistant.core.sessions import CHARS_PER_TOKEN, KEPT_FINISH_REASONS, SessionStore
from assistant.errors import RequestError
from assistant.plan import Plan
from assistant.scheduler import SchedulerStats, TaskScheduler
from assistant.worker.launch import start_spec
from assistant.worker.protocol import Hello
from assistant.worker.supervisor import Supervisor

LOG = logging.getLogger(__name__)


class Core:
    """Implements `assistant.core.api.CoreApi`."""

    def __init__(
        self,
        config: Config,
        worker: Supervisor,
        *,
        model_id: str,
        max_batch: int,
        context_tokens: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.worker = worker
        self.scheduler = TaskScheduler(worker, config.scheduler, max_batch, clock)
        self.sessions = SessionStore(config.sessions, context_tokens * CHARS_PER_TOKEN, clock)
        self.started = False
        # Told every request's one final (the page's recent requests); must not raise.
        self.observers: list[Callable[[Request, Finished], None]] = []
        self._model_id = model_id
        self._clock = clock

    @classmethod
    def for_plan(cls, config: Config, plan: Plan, model_dir: Path) -> Core:
        """A core whose worker runs the planned model from `model_dir`."""
        worker = Supervisor(start_spec(plan, config, model_dir), log_level=config.log_level)
        return cls(
            config,
            worker,
            model_id=plan.model.id,
            max_batch=plan.max_batch,
            context_tokens=plan.context_tokens,
        )

    @property
    def model_id(self) -> str:
        return self._model_id

    async def start(self) -> Hello:
        """Start the worker (raises WorkerStartError) and begin accepting requests."""
        hello = await self.worker.start()
        self._model_id = hello.model_id
        await self.scheduler.start()
        self.started = True
        return hello

    def submit(self, request: Request) -> Flight:
        """Never raises: a refused or invalid request's flight ends with the error."""
        flight = Flight(
            request.id,
            None,
            priority=request.priority,
            source=request.client,
            timeout_s=request.timeout_s,
            clock=self._clock,
        )
        if self.observers:
            flight.when_final(lambda done: self._observe(request, done))
        if not self.started:  # shutting_down is the scheduler's to decide
            return self.scheduler.refuse(flight, "busy", "the service is starting")
        try:
            history = self.sessions.history(request.session) if request.text else ()
            tools = ToolPolicy(self.config.tools.grounding, self.config.tools.decide)
            flight.generation = generation_request(request, self.config.engine, history, tools)
        except RequestError as err:
            return self.scheduler.refuse(flight, err.code, err.message)
        if request.session is not None and request.text is not None:
            flight.when_final(lambda done: self._remember(request, done))
        return self.scheduler.submit_task(flight)

    def cancel(self, request_id: str) -> bool:
        return self.scheduler.cancel_task(request_id)

    def cancel_all(self) -> int:
        return self.scheduler.cancel_all()

    def reset_session(self, key: str) -> bool:
        return self.sessions.reset(key)

    def stats(self) -> SchedulerStats:
        return self.scheduler.stats()

    async def drain(self, grace_s: float) -> None:
        """Stop intake, let running requests finish for up to `grace_s`, then end the rest
        (`shutting_down`). The worker keeps running: `close` stops it."""
        self.scheduler.close()
        await self.scheduler.settle(grace_s)
        await self.scheduler.stop()

    async def close(self) -> None:
        await self.worker.stop()

    def _observe(self, request: Request, flight: Flight) -> None:
        if flight.outcome is not None:
            for observer in self.observers:
                observer(request, flight.outcome)

    def _remember(self, request: Request, flight: Flight) -> None:
        """Only a successful reply becomes a turn of its session."""
        result = flight.outcome.result if flight.outcome is not None else None
        if result is None or result.finish_reason not in KEPT_FINISH_REASONS:
            return
        assert request.session is not None and request.text is not None
        self.sessions.append(request.session, request.text, result.text)
