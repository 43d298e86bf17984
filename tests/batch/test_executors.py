"""The executor protocol: the same work gives the same results in this process and on Ray; a stop is obeyed."""

from __future__ import annotations

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


def test_the_local_executor_starts_no_item_once_told_to_stop(settings: Settings, cache: SessionCache, tmp_path: Path) -> None:
    taken: list[int] = []
    results = LocalExecutor(settings, cache).run(
        work_in(tmp_path / "in"), RemovalOptions(), bg_image=None, should_continue=lambda: len(taken) < 2
    )
    for result in results:
        taken.append(result.index)
    assert taken == [0, 1]
    assert isinstance(executor_for(settings, cache), LocalExecutor)


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
