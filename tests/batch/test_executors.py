"""The executor protocol: the same work gives the same results in this process and on Ray; a stop is obeyed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from bgremove.batch.executors import ItemWork, LocalExecutor, RayExecutor, executor_for
from bgremove.core.options import RemovalOptions
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from tests.conftest import encode, square_photo


def work_in(folder: Path) -> list[ItemWork]:
    """Three photos and one broken file on disk, as a job keeps them."""
    folder.mkdir()
    work = []
    for index in range(4):
        path = folder / str(index)
        image = square_photo((96, 64))
        image.putpixel((0, 0), (index, 0, 0))
        path.write_bytes(encode(image, "PNG") if index != 2 else b"\x89PNG\r\n\x1a\nbroken")
        work.append(ItemWork(index, f"p{index}.png", f"p{index}.webp", path))
    return work


def test_one_at_a_time_the_local_executor_starts_no_item_once_told_to_stop(make_settings, tmp_path: Path) -> None:
    settings = make_settings(BATCH_CONCURRENCY="1")
    taken: list[int] = []
    results = LocalExecutor(settings, SessionCache(settings)).run(
        work_in(tmp_path / "in"), RemovalOptions(), bg_image=None, should_continue=lambda: len(taken) < 2
    )
    for result in results:
        taken.append(result.index)
    assert taken == [0, 1]
    assert isinstance(executor_for(settings, SessionCache(settings)), LocalExecutor)


def started_items(monkeypatch: pytest.MonkeyPatch, barrier: threading.Barrier | None = None) -> list[int]:
    """Record each item as it starts (and, with `barrier`, hold it there until another item has started too)."""
    from bgremove.batch import executors

    started: list[int] = []
    real = executors.process_item

    def recording(item, options, **keywords):  # type: ignore[no-untyped-def]
        started.append(keywords["index"])
        if barrier is not None:
            barrier.wait()  # broken (an error) unless a second item runs at the same time
        return real(item, options, **keywords)

    monkeypatch.setattr(executors, "process_item", recording)
    return started


def test_the_next_item_runs_while_the_current_one_does(
    settings: Settings, cache: SessionCache, tmp_path: Path, monkeypatch
) -> None:
    """Two items in progress at once (one decodes or encodes while the other is in the model), results in order."""
    started_items(monkeypatch, threading.Barrier(settings.batch_concurrency, timeout=30))
    results = list(
        LocalExecutor(settings, cache).run(
            work_in(tmp_path / "in"), RemovalOptions(), bg_image=None, should_continue=lambda: True
        )
    )
    assert settings.batch_concurrency == 2
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert [r.status for r in results] == ["completed", "completed", "failed", "completed"]  # 2 is the broken file


def test_after_a_stop_no_item_starts_and_running_ones_are_dropped(
    settings: Settings, cache: SessionCache, tmp_path: Path, monkeypatch
) -> None:
    """Two at a time, a stop once item 1 is handed over: item 2 was already running (it finishes, its result is
    dropped, so a job keeps it to do), item 3 never starts."""
    started = started_items(monkeypatch)
    taken: list[int] = []
    for result in LocalExecutor(settings, cache).run(
        work_in(tmp_path / "in"), RemovalOptions(), bg_image=None, should_continue=lambda: len(taken) < 2
    ):
        taken.append(result.index)
    assert taken == [0, 1]
    assert sorted(started) == [0, 1, 2]


@pytest.mark.slow
def test_ray_gives_what_this_process_gives(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    import ray  # requirements-dev installs requirements-ray.txt: CI always has it

    settings = make_settings(JOB_EXECUTOR="ray")
    cache = SessionCache(settings)
    work = work_in(tmp_path / "in")
    options = RemovalOptions(format="webp")
    local = list(LocalExecutor(settings, cache).run(work, options, bg_image=None, should_continue=lambda: True))
    executor = executor_for(settings, cache, poll_seconds=0.2)
    assert isinstance(executor, RayExecutor)
    try:
        remote = sorted(executor.run(work, options, bg_image=None, should_continue=lambda: True), key=lambda r: r.index)
        assert list(executor.run(work, options, bg_image=None, should_continue=lambda: False)) == []
    finally:
        ray.shutdown()

    def seen(results: list) -> list[tuple[object, ...]]:
        return [(r.index, r.status, r.output, r.error, r.hint, r.data, r.manifest_entry() | {"seconds": 0}) for r in results]

    assert seen(remote) == seen(local)
    assert [r.status for r in local] == ["completed", "completed", "failed", "completed"]
    assert all(r.data for r in local if r.status == "completed")
