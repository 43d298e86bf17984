"""Where a batch's items run: in this process or on a Ray cluster, behind one protocol; and the one way to join Ray.

An `ItemExecutor` takes the work (`ItemWork`: index, name, planned output name, the input on this machine's disk)
and yields one `ItemResult` per item as items finish, each from the batch engine's `process_item` (the same
per-item function and error boundary as every door). It stops starting items as soon as `should_continue()`
says so; what the caller does with a result (write it, commit it) happens between two results, so a caller's
crash-safety ordering holds whichever executor runs the items.

- `LocalExecutor`: BATCH_CONCURRENCY items at once in this process (one in the model while the next decodes and
  the last encodes), yielded in order, through the caller's cache.
- `RayExecutor`: items as Ray tasks, a few in flight per cluster CPU; the input bytes travel with the task and
  the output bytes come back in its result.

Joining Ray has one recipe, `ray_init_arguments` / `connect_ray`, used by JOB_EXECUTOR=ray (`joined_ray`) and
by `remove --engine ray` (`bgremove.batch.ray.connect`): this package shipped to every worker as a runtime_env
(nodes need requirements*.txt installed, not our code), no dashboard, no usage stats, a reachability check that
answers in seconds. So both doors run the same code on the same cluster.

Ray is optional (`pip install -r requirements-ray.txt`): nothing here imports it at module level.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from bgremove.batch.engine import BatchInput, ItemResult, process_item
from bgremove.batch.prefetch import ReadAhead, overlapped
from bgremove.core.errors import BgRemoveError
from bgremove.core.options import RemovalOptions
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings

if TYPE_CHECKING:
    from types import ModuleType

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -r requirements-ray.txt"


class RayUnavailable(BgRemoveError):
    """Ray is not installed, or the cluster at the given address cannot be reached."""


@dataclass(frozen=True)
class ItemWork:
    """One item to run: its index in the batch, its name, the output name planned for it, its input on disk."""

    index: int
    name: str
    output: str
    path: Path


class ItemExecutor(Protocol):
    def run(
        self,
        work: Iterable[ItemWork],
        options: RemovalOptions,
        *,
        bg_image: bytes | None,
        should_continue: Callable[[], bool],
        photo_images: Mapping[str, bytes] | None = None,
    ) -> Iterator[ItemResult]:
        """One result per item started, as items finish; no item starts once `should_continue()` is False.
        `photo_images`: a one-photo job's own image inputs (touch-up hints), name -> bytes."""
        ...


class LocalExecutor:
    """Items in this process, BATCH_CONCURRENCY at once (`prefetch.overlapped`), in order, through `cache` (the job
    runner passes its BackgroundCache)."""

    def __init__(self, settings: Settings, cache: SessionCache) -> None:
        self.settings = settings
        self.cache = cache

    def run(
        self,
        work: Iterable[ItemWork],
        options: RemovalOptions,
        *,
        bg_image: bytes | None,
        should_continue: Callable[[], bool],
        photo_images: Mapping[str, bytes] | None = None,
    ) -> Iterator[ItemResult]:
        items = list(work)
        sources = [BatchInput(item.name, path=item.path) for item in items]
        with ReadAhead(sources, BatchInput.in_memory) as ahead:  # the next files are read while these run

            def run_one(number: int) -> ItemResult:
                item = items[number]
                return process_item(
                    ahead.take(number),
                    options,
                    settings=self.settings,
                    cache=self.cache,
                    index=item.index,
                    output=item.output,
                    bg_image=bg_image,
                    photo_images=photo_images,
                )

            yield from overlapped(len(items), run_one, window=self.settings.batch_concurrency, should_continue=should_continue)


class RayExecutor:
    """Items as Ray tasks over the same `process_item`, as many in flight as the cluster has CPUs.

    A task whose worker dies (or any Ray failure) fails that item only. When `should_continue()` turns False
    the tasks still in flight are cancelled and their items stay unrun (a job resumes them later).
    """

    def __init__(self, settings: Settings, *, poll_seconds: float = 1.0) -> None:
        self.settings = settings
        self.poll_seconds = poll_seconds

    def run(
        self,
        work: Iterable[ItemWork],
        options: RemovalOptions,
        *,
        bg_image: bytes | None,
        should_continue: Callable[[], bool],
        photo_images: Mapping[str, bytes] | None = None,
    ) -> Iterator[ItemResult]:
        ray = joined_ray(self.settings)
        task = ray.remote(max_retries=1)(ray_process_item)
        window = max(1, int(ray.cluster_resources().get("CPU", 1)))
        queue = iter(work)
        in_flight: dict[Any, ItemWork] = {}
        try:
            while True:
                while len(in_flight) < window and should_continue():
                    item = next(queue, None)
                    if item is None:
                        break
                    data = item.path.read_bytes()
                    arguments = (self.settings, options, item.name, data, item.index, item.output, bg_image)
                    ref = task.remote(*arguments, dict(photo_images or {}))
                    in_flight[ref] = item
                if not in_flight:
                    return
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=self.poll_seconds)
                for ref in ready:
                    item = in_flight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # the task's worker died or Ray failed: this file only
                        result = ItemResult(
                            item.index,
                            item.name,
                            "failed",
                            model=options.model or PurePosixPath(self.settings.model_name).name,
                            error=f"{item.name} failed on the Ray cluster ({type(exc).__name__}).",
                            hint="Retry the job; check the Ray cluster's logs if it happens again.",
                        )
                    yield result
                if not should_continue():
                    return
        finally:  # stopped, or the caller gave up (its commit failed): nothing keeps running for nobody
            for ref in in_flight:
                ray.cancel(ref)


def executor_for(settings: Settings, cache: SessionCache, *, poll_seconds: float = 1.0) -> ItemExecutor:
    """JOB_EXECUTOR's choice: this process (`local`) or the Ray cluster at RAY_ADDRESS (`ray`)."""
    if settings.job_executor == "ray":
        return RayExecutor(settings, poll_seconds=poll_seconds)
    return LocalExecutor(settings, cache)


# --- the Ray task -------------------------------------------------------------------------------------------


@lru_cache(maxsize=2)
def _worker_cache(settings: Settings) -> SessionCache:
    """One SessionCache per Ray worker process (the model loads once per worker, not per item)."""
    return SessionCache(settings)


def ray_process_item(
    settings: Settings,
    options: RemovalOptions,
    name: str,
    data: bytes,
    index: int,
    output: str,
    bg_image: bytes | None,
    photo_images: dict[str, bytes] | None = None,
) -> ItemResult:
    """The Ray task: one item through `process_item` on a worker; the output bytes come back in the result."""
    return process_item(
        BatchInput(name, data=data),
        options,
        settings=settings,
        cache=_worker_cache(settings),
        index=index,
        output=output,
        bg_image=bg_image,
        photo_images=photo_images,
    )


# --- the one Ray connection recipe ----------------------------------------------------------------------------

_ray_lock = threading.Lock()


def import_ray(needed_by: str, *, data: bool = False) -> ModuleType:
    """Ray (and Ray Data when `data`), or RayUnavailable saying what to install, in one line."""
    try:
        import ray

        if data:
            import ray.data  # ray without the [data] extra has no ray.data
    except ImportError as exc:
        raise RayUnavailable(f"{needed_by} needs Ray ({exc.name or 'ray'} is not installed).", hint=INSTALL_HINT) from None
    return ray


def ray_init_arguments(address: str | None, *, num_cpus: int | None = None, workers: int | None = None) -> dict[str, Any]:
    """The keyword arguments of `ray.init` for every door: a new local instance (address None) or the cluster at
    `address`, no dashboard, and this package shipped to every worker."""
    import bgremove

    arguments: dict[str, Any] = {
        "address": address or "local",
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        # Workers import bgremove from this upload: nodes need requirements*.txt installed, not our code.
        # (Ray accepts local directories only here, at the job level, not per actor.)
        "runtime_env": {"py_modules": [bgremove]},
    }
    if address is None:
        # A new local instance; with more workers than cores, the user asked to oversubscribe.
        arguments["num_cpus"] = num_cpus or max(os.cpu_count() or 1, workers or 0)
    return arguments


def connect_ray(
    address: str | None,
    *,
    num_cpus: int | None = None,
    workers: int | None = None,
    needed_by: str = "--engine ray",
    address_name: str = "--address",
    log_to_driver: bool = True,
) -> ModuleType:
    """`ray.init` with `ray_init_arguments`; RayUnavailable (in one line) when Ray is missing or unreachable.

    `needed_by` and `address_name` only word the errors for the door (`--engine ray`/`--address` or
    `JOB_EXECUTOR=ray`/`RAY_ADDRESS`); `log_to_driver=False` keeps workers' output out of a server's log.
    """
    ray = import_ray(needed_by)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home, on air-gapped machines too
    if address is not None:
        _check_reachable(address, address_name)
    try:
        ray.init(**ray_init_arguments(address, num_cpus=num_cpus, workers=workers), log_to_driver=log_to_driver)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailable(
            f"Could not start or join Ray at {address or 'a new local instance'} ({exc}).",
            hint=f"Check {address_name} (host:6379, auto or ray://host:10001), that the cluster runs the same "
            "Ray and Python versions and, if it uses token auth, RAY_AUTH_MODE=token with its "
            "token in ~/.ray/auth_token or RAY_AUTH_TOKEN.",
        ) from exc
    return ray


def joined_ray(settings: Settings) -> ModuleType:
    """JOB_EXECUTOR=ray: the Ray this process joined, joined once with the recipe (RAY_ADDRESS, or a local one)."""
    with _ray_lock:
        ray = import_ray("JOB_EXECUTOR=ray")
        if not ray.is_initialized():
            connect_ray(settings.ray_address, needed_by="JOB_EXECUTOR=ray", address_name="RAY_ADDRESS", log_to_driver=False)
        return ray


def _check_reachable(address: str, address_name: str) -> None:
    """A host:port nobody listens on makes ray.init retry for minutes; say so in seconds instead."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():  # auto, ray://...: Ray's own lookup and timeouts
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise RayUnavailable(
            f"No Ray cluster answers at {address} ({exc.strerror or exc}).",
            hint=f"Start one with `ray start --head` (it prints the address), or leave out {address_name} for a local one.",
        ) from None
