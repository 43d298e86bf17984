"""Read-ahead: files are read before a worker asks for them, never more than `depth` ahead, and unreadable
files still fail only themselves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from bgremove.batch.engine import BatchInput, inputs_from_paths, run_batch
from bgremove.batch.prefetch import ReadAhead
from bgremove.core.options import parse_options
from bgremove.core.sessions import SessionCache
from tests.conftest import encode, square_photo


def photo_folder(folder: Path, count: int) -> Path:
    folder.mkdir()
    for number in range(count):
        (folder / f"p{number}.png").write_bytes(encode(square_photo((40 + number, 30)), "PNG"))
    return folder


def test_reads_ahead_and_holds_at_most_depth_items(tmp_path: Path, make_settings) -> None:
    inputs, _ = inputs_from_paths([photo_folder(tmp_path / "in", 6)], make_settings())
    with ReadAhead(inputs, BatchInput.in_memory, depth=2) as ahead:
        first = ahead.take(0)
        assert first.data == inputs[0].path.read_bytes()
        assert ahead.held == 2  # items 1 and 2 are being read, 3 is not
        (tmp_path / "in" / "p4.png").unlink()  # not read yet: its read must fail later, not now
        assert ahead.take(1).data is not None
        assert ahead.take(2).data is not None and ahead.take(3).data is not None
        assert ahead.take(4).data is None  # could not be read: left for its worker to report
        assert ahead.held <= 2


def test_a_batch_with_an_unreadable_file_reports_it_and_finishes_the_rest(tmp_path: Path, make_settings) -> None:
    settings = make_settings()
    inputs, _ = inputs_from_paths([photo_folder(tmp_path / "in", 5)], settings)
    (tmp_path / "in" / "p3.png").unlink()
    results = sorted(run_batch(inputs, parse_options({}), settings=settings, cache=SessionCache(settings)), key=lambda r: r.index)
    assert [r.status for r in results] == ["completed", "completed", "completed", "failed", "completed"]
    assert "p3.png could not be read" in (results[3].error or "")


def test_commit_behind_writes_the_last_result_while_the_next_item_runs() -> None:
    import threading

    from bgremove.batch.prefetch import commit_behind

    started = [threading.Event() for _ in range(4)]
    overlapped: list[bool] = []
    committed: list[int] = []

    def results() -> Iterator[int]:  # a lazy executor: item n runs only when asked for
        for index in range(4):
            started[index].set()
            yield index * 10

    def commit(result: int) -> None:
        index = result // 10
        if index + 1 < len(started):  # the next item's work starts while this one is being written
            overlapped.append(started[index + 1].wait(10))
        committed.append(result)

    commit_behind(results(), commit)
    assert committed == [0, 10, 20, 30] and overlapped == [True, True, True]


def test_commit_behind_commits_in_order_and_stops_with_the_executor() -> None:
    from bgremove.batch.prefetch import commit_behind

    committed: list[int] = []

    def results() -> Iterator[int]:
        for index in range(6):
            if len(committed) >= 2:  # the executor's should_continue, checked before each item
                return
            yield index

    commit_behind(results(), committed.append)
    assert committed[:2] == [0, 1] and len(committed) <= 3  # one item may have started before the second commit
