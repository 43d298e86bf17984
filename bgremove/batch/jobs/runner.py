"""The job runner: worker threads that drain queued jobs through an executor, and a janitor.

Workers run in this process, one job at a time each, the items of a job in order through the executor JOB_EXECUTOR
names (`bgremove.batch.executors`: this process, or Ray tasks whose outputs come back here). Each result is
committed as it arrives: output written durably, THEN the item row (see `store`). In this process the items share
the SessionCache's inference slots with interactive requests, and interactive requests go first (see
`background.BackgroundCache`). The janitor posts callbacks and deletes finished jobs after JOB_RETENTION_HOURS.

One server process per DATA_DIR runs the workers (an advisory lock file decides which); others only serve.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import IO

from bgremove.batch.engine import ItemResult
from bgremove.batch.executors import ItemWork, executor_for
from bgremove.batch.jobs.background import BackgroundCache, lower_thread_priority
from bgremove.batch.jobs.callbacks import post_callback
from bgremove.batch.jobs.models import Job
from bgremove.batch.jobs.store import JobStore, storage_error
from bgremove.batch.prefetch import commit_behind
from bgremove.core.errors import BgRemoveError
from bgremove.core.files import write_atomically
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings

log = logging.getLogger(__name__)

LOCK_NAME = "jobs.lock"


class JobRunner:
    """Worker threads that drain queued jobs, plus a janitor for callbacks and retention.

    `start()` in the app's lifespan start, `stop()` at its end. Submitting and reading go through `.store`;
    `wake()` tells idle workers a job was queued (they also poll, so jobs queued by another process run too).
    """

    def __init__(
        self,
        settings: Settings,
        cache: SessionCache,
        *,
        workers: int | None = None,
        poll_seconds: float = 1.0,
        sweep_seconds: float = 300.0,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.store = JobStore(settings)
        self.workers = workers or max(1, settings.max_concurrent_inferences - 1)
        self.poll_seconds = poll_seconds
        self.sweep_seconds = sweep_seconds
        self._stopping = threading.Event()
        self._work = threading.Event()
        self._janitor_wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._active: set[str] = set()
        self._active_lock = threading.Lock()
        self._lock_file: IO[bytes] | None = None
        self._loader: ThreadPoolExecutor | None = None
        self.job_cache = BackgroundCache(cache, self._stopping, holders=self.workers)
        self.executor = executor_for(settings, self.job_cache, poll_seconds=poll_seconds)  # type: ignore[arg-type]

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def start(self) -> None:
        """Recover after a crash, then start the workers and the janitor (unless another process runs them)."""
        if self._threads:
            return
        if not self._take_lock():
            log.warning(
                "Another process runs the jobs of DATA_DIR=%s; this one only accepts and serves them.", self.settings.data_dir
            )
            return
        self._stopping.clear()
        self.store.recover()
        # The loader's thread is created here, at the caller's priority (see BackgroundCache), not by a job thread.
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bgremove-job-loader")
        self._loader.submit(lambda: None).result()
        self.job_cache = BackgroundCache(self.cache, self._stopping, loader=self._loader, holders=self.workers)
        self.executor = executor_for(self.settings, self.job_cache, poll_seconds=self.poll_seconds)  # type: ignore[arg-type]
        for number in range(self.workers):
            self._threads.append(threading.Thread(target=self._work_loop, name=f"bgremove-job-{number}", daemon=True))
        self._threads.append(threading.Thread(target=self._janitor_loop, name="bgremove-job-janitor", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current item of each job, requeue the jobs, stop the threads (the items resume on restart)."""
        self._stopping.set()
        self._work.set()
        self._janitor_wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        if self._loader is not None:
            self._loader.shutdown(wait=False)
            self._loader = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    def close(self) -> None:
        self.stop()
        self.store.close()

    def wake(self) -> None:
        self._work.set()

    def _take_lock(self) -> bool:
        try:
            import fcntl
        except ImportError:  # Windows: one process per DATA_DIR is on the operator
            return True
        handle = open(self.settings.data_dir / LOCK_NAME, "ab")  # noqa: SIM115 - held open while the runner runs
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock_file = handle
        return True

    # -- workers

    def _work_loop(self) -> None:
        lower_thread_priority()
        while not self._stopping.is_set():
            self._work.clear()
            try:
                job = self.store.claim_next()
            except sqlite3.Error:
                log.exception("Could not read the job queue")
                job = None
            if job is None:
                self._work.wait(self.poll_seconds)
                continue
            with self._active_lock:
                self._active.add(job.id)
            try:
                self._run(job)
            except Exception:  # the store itself failed (disk, database): the job resumes on the next start
                log.exception("Job %s could not be updated", job.id)
            finally:
                with self._active_lock:
                    self._active.discard(job.id)
                self._janitor_wake.set()

    def _run(self, job: Job) -> None:
        """The job's pending items in order; stops between items when cancelled, deleted or shutting down."""
        log.info("Job %s: running %d of %d files", job.id, len(self.store.pending_items(job.id)), job.total)
        try:
            options = job.removal_options
            bg_image = self.store.bg_image_path(job.id).read_bytes() if job.has_bg_image else None
            work = [
                ItemWork(item.index, item.filename, item.planned, self.store.input_path(job.id, item.index))
                for item in self.store.pending_items(job.id)
            ]
            results = self.executor.run(
                work,
                options,
                bg_image=bg_image,
                should_continue=lambda: self._should_continue(job.id),
                photo_images=self.store.photo_images(job.id),
            )
            # Each result is committed on a writer thread while the next item runs, in order (batch.prefetch).
            commit_behind(results, lambda result: self._commit(job.id, result))
        except BgRemoveError as exc:
            log.warning("Job %s stopped: %s", job.id, exc)
            self.store.finish(job.id, error=exc)
            return
        except OSError as exc:
            log.exception("Job %s stopped", job.id)
            error = storage_error(exc, self.store.job_dir(job.id)) or BgRemoveError(
                f"The job stopped: {exc.strerror or exc}.", hint="Retry the job; see the server log if it happens again."
            )
            self.store.finish(job.id, error=error)
            return
        except Exception as exc:  # a worker never dies: the job fails with a message, the next job runs
            log.exception("Job %s stopped by an unexpected error", job.id)
            self.store.finish(
                job.id,
                error=BgRemoveError(
                    f"The job stopped unexpectedly ({type(exc).__name__}).",
                    hint="Retry the job; report it with the server log if it happens again.",
                ),
            )
            return
        if self._stopping.is_set() and self.store.status_of(job.id) == "running":
            self.store.requeue(job.id)
        else:
            self.store.finish(job.id)
        log.info("Job %s: %s", job.id, self.store.status_of(job.id))

    def _should_continue(self, job_id: str) -> bool:
        return not self._stopping.is_set() and self.store.status_of(job_id) == "running"

    def _commit(self, job_id: str, result: ItemResult) -> None:
        """Output to disk durably, THEN the item row: the order that makes a crash safe."""
        written = 0
        target = None
        if result.status == "completed" and result.data is not None and result.output:
            target = self.store.output_path(job_id, result.output)
            write_atomically(target, result.data)
            written = len(result.data)
        result.release()
        if not self.store.commit_item(job_id, result, written) and self.store.status_of(job_id) is None:
            shutil.rmtree(self.store.job_dir(job_id), ignore_errors=True)  # deleted while this item ran

    # -- janitor

    def _janitor_loop(self) -> None:
        next_sweep = 0.0
        while not self._stopping.is_set():
            try:
                self._send_callbacks()
                if time.monotonic() >= next_sweep:
                    self.store.sweep()
                    next_sweep = time.monotonic() + self.sweep_seconds
            except Exception:
                log.exception("Job housekeeping failed; retrying later")
            self._janitor_wake.wait(min(self.sweep_seconds, 5.0))
            self._janitor_wake.clear()

    def notify(self) -> None:
        """A job may have ended (cancelled by a request): let the janitor post its callback."""
        self._janitor_wake.set()

    def _send_callbacks(self) -> None:
        while not self._stopping.is_set():
            with self._active_lock:
                busy = set(self._active)
            job = self.store.claim_callback(busy)
            if job is None or job.callback_url is None:
                return
            try:
                status = post_callback(job, self.settings)
                log.info("Job %s: callback answered %d", job.id, status)
            except BgRemoveError as exc:
                log.warning("Job %s: callback to its URL failed: %s", job.id, exc.message)
