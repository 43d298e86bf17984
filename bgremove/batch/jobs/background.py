"""Interactive requests first: the SessionCache as a job sees it, and job threads at a lower CPU priority."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bgremove.core.sessions import LoadedModel, SessionCache
from bgremove.core.settings import Settings

JOB_NICENESS = 10  # job threads' CPU priority below interactive requests' (Linux: per thread)


class BackgroundCache:
    """The SessionCache as a job sees it: the same loaded models and the same inference slots, but a job asks
    for a slot only while no interactive request is waiting for one.

    With fewer job workers than MAX_CONCURRENT_INFERENCES an interactive request normally finds a free slot at
    once; when slots run short (MAX_CONCURRENT_INFERENCES=1, or several doors busy) it waits at most for the one
    forward pass a job already started, and the job then steps aside until nobody is waiting.

    A job runs two items at once (one decodes while the other is in the model), so job threads could ask for
    twice the slots their workers were sized for and leave none free: at most `holders` job threads (one per job
    worker) wait for or hold a slot; the others wait here first.

    Job threads run at a lower CPU priority (`lower_thread_priority`). Threads inherit it from the thread that
    creates them, so models are loaded on `loader`, a thread at normal priority: an engine's thread pool built
    during a load must not be slowed down for the interactive requests that share it.
    """

    def __init__(
        self,
        cache: SessionCache,
        stopping: threading.Event,
        pause: float = 0.02,
        loader: ThreadPoolExecutor | None = None,
        holders: int = 1,
    ) -> None:
        self._cache = cache
        self._holders = threading.BoundedSemaphore(max(1, holders))
        self._stopping = stopping
        self._pause = pause
        self._loader = loader
        self._lock = threading.Lock()
        self._job_waiters = 0  # job threads inside cache.inference_slot() waiting: not interactive requests

    @property
    def settings(self) -> Settings:
        return self._cache.settings

    @property
    def waiting(self) -> int:
        return self._cache.waiting

    def get(self, name: str | None = None) -> LoadedModel:
        if self._loader is None:
            return self._cache.get(name)
        return self._loader.submit(self._cache.get, name).result()

    def interactive_waiting(self) -> int:
        with self._lock:
            return max(0, self._cache.waiting - self._job_waiters)

    @contextlib.contextmanager
    def inference_slot(self) -> Iterator[None]:
        with self._holders:  # first: a job thread that waited here still lets a newer interactive request go first
            while self.interactive_waiting() > 0 and not self._stopping.is_set():
                time.sleep(self._pause)
            with self._lock:
                self._job_waiters += 1
            counted = True
            try:
                with self._cache.inference_slot():
                    with self._lock:
                        self._job_waiters -= 1
                    counted = False
                    yield
            finally:
                if counted:
                    with self._lock:
                        self._job_waiters -= 1

    def __getattr__(self, name: str) -> Any:  # anything else the pipeline may ask of the cache
        return getattr(self._cache, name)


def lower_thread_priority() -> None:
    """Job threads' decode/encode/compose yield the CPU to interactive requests (Linux nice is per thread)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), JOB_NICENESS)
