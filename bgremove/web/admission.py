"""The one admission gate of an app: at most MAX_CONCURRENT_INFERENCES + MAX_QUEUE_SIZE removals in flight,
counted across every door together (/api/remove, /api/remove/batch, /v1.0/removebg, the UI, gradio_client and
MCP) and the job workers.

Interactive doors take a slot without waiting (`try_enter`, `slot`): when none is free they refuse at once with
`ServerBusy` (503 + Retry-After natively, remove.bg's 429), so a burst never builds an unbounded queue. Job
workers wait for a slot instead (`JobSlots`): a job is already accepted and durable, it only runs later.

A slot is held for the whole request, upload to answer; Gradio's own queue still orders its events, but a UI
event takes a slot here before it runs the model. One `Admission` per app (`create_app` puts it on `app.state`),
so two apps in one process never share or trip over each other's counts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bgremove.core.errors import ServerBusy
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings

BUSY_MESSAGE = "The server is busy: the queue is full."


class Admission:
    """A counting gate shared by the event loop (the guards) and worker threads (UI handlers, jobs)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_flight = 0
        self._waiters = 0
        self._changed = threading.Condition()
        self._on_change: Callable[[int], None] | None = None
        self._on_refusal: Callable[[str], None] | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> Admission:
        """The documented limit: MAX_CONCURRENT_INFERENCES running + MAX_QUEUE_SIZE waiting for a slot."""
        return cls(settings.max_concurrent_inferences + settings.max_queue_size)

    def observe(self, in_flight: Callable[[int], None], refused: Callable[[str], None]) -> None:
        """Report the count and each refusal (the app's metrics)."""
        self._on_change, self._on_refusal = in_flight, refused

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiters(self) -> int:
        """Job workers waiting for a slot right now."""
        return self._waiters

    def try_enter(self, door: str = "") -> bool:
        """Take a slot if one is free (never blocks: safe on the event loop); count a refusal for `door` if not."""
        with self._changed:
            if self._in_flight >= self.limit:
                admitted = False
            else:
                self._in_flight += 1
                admitted = True
            count = self._in_flight
        if not admitted and self._on_refusal is not None:
            self._on_refusal(door)
        elif admitted and self._on_change is not None:
            self._on_change(count)
        return admitted

    def enter_waiting(self, stop: threading.Event | None = None, poll: float = 0.5) -> bool:
        """Wait for a slot (job workers); False if `stop` was set first."""
        with self._changed:
            self._waiters += 1
            try:
                while self._in_flight >= self.limit:
                    if stop is not None and stop.is_set():
                        return False
                    self._changed.wait(poll)
                self._in_flight += 1
                count = self._in_flight
            finally:
                self._waiters -= 1
        if self._on_change is not None:
            self._on_change(count)
        return True

    def leave(self) -> None:
        with self._changed:
            self._in_flight -= 1
            count = self._in_flight
            self._changed.notify()
        if self._on_change is not None:
            self._on_change(count)

    @contextmanager
    def slot(self, door: str = "") -> Iterator[None]:
        """A slot for one interactive request, or ServerBusy at once."""
        if not self.try_enter(door):
            raise busy()
        try:
            yield
        finally:
            self.leave()


def busy() -> ServerBusy:
    return ServerBusy(BUSY_MESSAGE)


class JobSlots:
    """The session cache as the job workers see it: each forward pass first waits for an admission slot, so jobs
    count against the same limit as the interactive doors but are never refused.

    The job workers are fewer than MAX_CONCURRENT_INFERENCES + MAX_QUEUE_SIZE (at most MAX_CONCURRENT_INFERENCES,
    and MAX_QUEUE_SIZE >= 1), so jobs alone never take every slot. `waiting` adds the job workers waiting here, so
    the runner's count of interactive requests waiting for an inference slot stays right.
    """

    def __init__(self, cache: SessionCache, admission: Admission) -> None:
        self._cache = cache
        self._admission = admission

    @property
    def settings(self) -> Settings:
        return self._cache.settings

    @property
    def waiting(self) -> int:
        return self._cache.waiting + self._admission.waiters

    @contextmanager
    def inference_slot(self) -> Iterator[None]:
        self._admission.enter_waiting()
        try:
            with self._cache.inference_slot():
                yield
        finally:
            self._admission.leave()

    def __getattr__(self, name: str) -> Any:  # loaded models, engine, ...: the shared cache's own
        return getattr(self._cache, name)
