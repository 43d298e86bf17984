"""The job store and runner without HTTP: resume after a crash, retention, the runner lock, interactive first."""

from __future__ import annotations

import io
import sqlite3
import threading
import time
import zipfile
from collections.abc import Callable

from bgremove.batch.engine import BatchInput, process_item
from bgremove.batch.jobs import BackgroundCache, JobRunner, JobStore
from bgremove.core.errors import UnsupportedFormat
from bgremove.core.files import write_atomically
from bgremove.core.options import RemovalOptions
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from tests.jobs.conftest import leftovers, photo


def wait_final(store: JobStore, job_id: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while (status := store.status_of(job_id)) not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job still {status}"
        time.sleep(0.05)
    return status


def test_a_crash_at_any_point_resumes_with_every_input_exactly_once(jobs_settings: Callable[..., Settings]) -> None:
    settings = jobs_settings()
    cache = SessionCache(settings)
    store = JobStore(settings)
    inputs = [BatchInput(f"p{number}.png", data=photo(number)) for number in range(5)]
    inputs.append(BatchInput("huge.png", error=UnsupportedFormat("huge.png is too big.", hint="Send less.")))
    job = store.submit(inputs, RemovalOptions())
    half_received = store.submit([BatchInput("x.png", data=photo(9))], RemovalOptions())

    # The state a kill -9 can leave: item 0 done; item 1's output written but not yet marked done;
    # a temp file of item 2 half written; a job still being received; a folder without a job.
    assert store.claim_next() is not None
    pending = store.pending_items(job.id)
    for item, commit in [(pending[0], True), (pending[1], False)]:
        source = BatchInput(item.filename, path=store.input_path(job.id, item.index))
        result = process_item(source, RemovalOptions(), settings=settings, cache=cache, index=item.index, output=item.planned)
        assert result.data is not None and result.output is not None
        write_atomically(store.output_path(job.id, result.output), result.data)
        if commit:
            assert store.commit_item(job.id, result, len(result.data))
    (store.output_path(job.id, "p2.png").parent / ".p2.png.4242.partial").write_bytes(b"half a png")
    with sqlite3.connect(settings.data_dir / "jobs.sqlite3") as db:
        db.execute("UPDATE jobs SET status = 'receiving' WHERE id = ?", (half_received.id,))
    (store.jobs_dir / ("f" * 32)).mkdir()
    store.close()  # no clean shutdown: the job is left 'running'

    runner = JobRunner(settings, cache, poll_seconds=0.05)
    runner.start()
    try:
        assert wait_final(runner.store, job.id) == "done"
        buffer = io.BytesIO()
        manifest = runner.store.write_result(job.id, "", buffer)
    finally:
        runner.close()

    with zipfile.ZipFile(buffer) as archive:
        names = archive.namelist()
    assert names == ["p0.png", "p1.png", "p2.png", "p3.png", "p4.png", "manifest.json"]
    assert [entry["filename"] for entry in manifest["items"]] == [*(f"p{n}.png" for n in range(5)), "huge.png"]
    assert (manifest["count"], manifest["completed"], manifest["failed"]) == (6, 5, 1)
    assert manifest["items"][5]["error"] == "huge.png is too big." and manifest["items"][5]["hint"] == "Send less."
    assert leftovers(settings.data_dir) == []
    assert sorted(path.name for path in (settings.data_dir / "jobs").iterdir()) == [job.id]  # the rest cleaned up


def test_retention_sweep_deletes_expired_jobs_only(jobs_settings: Callable[..., Settings]) -> None:
    settings = jobs_settings(JOB_RETENTION_HOURS="1")
    runner = JobRunner(settings, SessionCache(settings), poll_seconds=0.05)
    old = runner.store.submit([BatchInput("a.png", data=photo(1))], RemovalOptions())
    queued = runner.store.submit([BatchInput("b.png", data=photo(2))], RemovalOptions())
    assert runner.store.claim_next() is not None
    runner.store.finish(old.id)
    finished = runner.store.find(old.id)
    assert finished is not None and finished.status == "failed" and finished.finished is not None

    assert runner.store.sweep(now=finished.finished + 3599) == []
    assert runner.store.sweep(now=finished.finished + 3601) == [old.id]
    assert runner.store.find(old.id) is None and not runner.store.job_dir(old.id).exists()
    assert runner.store.find(queued.id) is not None, "a queued job is never expired"
    assert runner.store.usage_bytes() == len(photo(2))
    runner.close()


def test_the_janitor_sweeps_on_its_own(jobs_settings: Callable[..., Settings]) -> None:
    settings = jobs_settings(JOB_RETENTION_HOURS="0.0001")  # 0.36 s
    runner = JobRunner(settings, SessionCache(settings), poll_seconds=0.05, sweep_seconds=0.1)
    runner.start()
    try:
        job = runner.store.submit([BatchInput("a.png", data=photo(1))], RemovalOptions())
        runner.wake()
        deadline = time.monotonic() + 30
        while runner.store.find(job.id) is not None or runner.store.job_dir(job.id).exists():  # row first, then files
            assert time.monotonic() < deadline, "the finished job was never swept"
            time.sleep(0.05)
        assert runner.store.usage_bytes() == 0
    finally:
        runner.close()


def test_only_one_runner_per_data_dir_runs_workers(jobs_settings: Callable[..., Settings]) -> None:
    settings = jobs_settings()
    first, second = (JobRunner(settings, SessionCache(settings)) for _ in range(2))
    first.start()
    second.start()
    assert first.running and not second.running
    first.close()
    second.start()  # the lock was released
    assert second.running
    second.close()


def test_jobs_let_waiting_interactive_requests_go_first(jobs_settings: Callable[..., Settings]) -> None:
    cache = SessionCache(jobs_settings(MAX_CONCURRENT_INFERENCES="1"))
    background = BackgroundCache(cache, threading.Event())
    order: list[str] = []

    def interactive() -> None:
        with cache.inference_slot():
            order.append("interactive")

    def job() -> None:
        with background.inference_slot():
            order.append("job")

    with cache.inference_slot():  # an interactive request holds the only slot...
        waiter = threading.Thread(target=interactive)
        waiter.start()
        while cache.waiting < 1:  # ...a second one waits for it...
            time.sleep(0.005)
        worker = threading.Thread(target=job)
        worker.start()  # ...and then a job asks
        time.sleep(0.1)
        assert background.interactive_waiting() == 1
        assert cache.waiting == 1, "the job queued for the slot while an interactive request was waiting"
    waiter.join(10)
    worker.join(10)
    assert order == ["interactive", "job"]


def test_a_job_running_two_items_leaves_the_interactive_slot_free(jobs_settings: Callable[..., Settings]) -> None:
    """Job workers are sized to leave one slot for interactive requests; a worker's two item threads hold one."""
    cache = SessionCache(jobs_settings(MAX_CONCURRENT_INFERENCES="2"))
    background = BackgroundCache(cache, threading.Event(), holders=1)  # one job worker
    inside = threading.Event()
    release = threading.Event()
    entered: list[str] = []

    def item(name: str) -> None:
        with background.inference_slot():
            entered.append(name)
            inside.set()
            release.wait(10)

    first = threading.Thread(target=item, args=("first",))
    first.start()
    assert inside.wait(10)
    second = threading.Thread(target=item, args=("second",))
    second.start()
    second.join(0.2)
    assert entered == ["first"], "the second item thread took a slot of its own"
    assert cache._slots.acquire(blocking=False), "no slot left for an interactive request"
    cache._slots.release()
    release.set()
    first.join(10)
    second.join(10)
    assert entered == ["first", "second"]
