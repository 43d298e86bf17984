"""The one atomic write for everything durable: batch folders and manifests, job inputs and outputs, model files.

Write a hidden temp file beside the target, fsync it, rename it over the target, fsync the folder: after a crash
or a power cut the target is absent, the old file, or the whole new one, never a truncated file that looks
finished. A crash can leave only a temp file ending in PARTIAL_SUFFIX (the job store removes those on start).
It lives in core because the model store needs it too, and core imports nothing above it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

PARTIAL_SUFFIX = ".partial"


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[IO[bytes]]:
    """A handle to write `target` through: the file appears, whole and durable, when the block ends without error.

    If the block raises, the temp file is removed and `target` is left as it was. Temp names are unique per call
    (pid and a random token), so threads and processes writing the same target never share one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
    try:
        with open(partial, "xb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_folder(target.parent)


def write_atomically(target: Path, data: bytes) -> None:
    """`data` as `target`, through `atomic_file`."""
    with atomic_file(target) as handle:
        handle.write(data)


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
