"""core.files, the one atomic write: a target is absent, old or whole; nothing else is ever left behind."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bgremove.core.files import atomic_file, write_atomically


def test_a_write_lands_whole_with_the_usual_permissions(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "out.png"
    write_atomically(target, b"new")
    reference = tmp_path / "plain"
    reference.write_bytes(b"")  # what open() makes under this umask (a private temp file would be 0600)
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode == reference.stat().st_mode
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(ZeroDivisionError), atomic_file(target) as handle:
        handle.write(b"half of the new")
        _ = 1 / 0
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_threads_writing_one_target_each_get_their_own_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    payloads = [bytes([number]) * 100_000 for number in range(8)]
    barrier = threading.Barrier(len(payloads))
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            with atomic_file(target) as handle:
                barrier.wait()  # every thread holds its temp file open at once
                handle.write(data)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(data,)) for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
