"""Where the Gradio door keeps its outputs: one fresh folder per request (per batch job shown), swept after
RESULT_TTL_SECONDS.

Gradio copies what a handler returns into its own cache (cleared by `delete_cache`); these folders hold the
originals. Messages never name the server's folders: a person in a browser cannot act on a server path.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

import gradio as gr

from bgremove.core.errors import BgRemoveError, StorageFull
from bgremove.core.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# One folder per process: shutting one server down (or a test's app) never deletes another's results.
WORK_ROOT = Path(tempfile.gettempdir()) / "bgremove-ui" / str(os.getpid())


class Expired(BgRemoveError):
    """A file the page still names is gone: uploads and strokes are kept RESULT_TTL_SECONDS, never across a restart.
    Without this, an option changed on a page left open said the server could not write a temporary file."""

    @classmethod
    def photo(cls, ttl: int) -> Expired:
        return cls(
            f"This photo is no longer on the server (uploads are kept {_kept(ttl)}, and not across a restart).",
            "Drop it again: your options stay as they are.",
        )

    @classmethod
    def strokes(cls, ttl: int) -> Expired:
        return cls(
            f"Your touch-up strokes are no longer on the server (they are kept {_kept(ttl)}, and not across a restart).",
            "Clear them with the editor's clear button and paint them again.",
        )


def _kept(ttl: int) -> str:
    minutes = round(ttl / 60)
    return f"{minutes} minutes" if minutes > 1 else f"{ttl} seconds"


def job_dir() -> Path:
    """A fresh folder for one request's outputs."""
    try:
        WORK_ROOT.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="job-", dir=WORK_ROOT))
    except OSError as exc:
        log.error("Cannot create a result folder under %s: %s", WORK_ROOT, exc)
        raise StorageFull(f"The server cannot store results right now ({exc.strerror}).") from exc


def job_view_dir(job_id: str) -> Path:
    """The folder of one batch job's previews, zip and manifest as this process shows them (`job-<id>`, so the
    sweeper expires it like any result folder; the next poll writes again what it needs)."""
    try:
        folder = WORK_ROOT / f"job-{job_id}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except OSError as exc:
        log.error("Cannot create a result folder under %s: %s", WORK_ROOT, exc)
        raise StorageFull(f"The server cannot store results right now ({exc.strerror}).") from exc


def save(data: bytes, folder: Path, name: str) -> Path:
    """`data` as `folder/name` (see `save_with`)."""
    return save_with(folder, name, lambda handle: handle.write(data))[0]


def save_with(folder: Path, name: str, write: Callable[[IO[bytes]], T]) -> tuple[Path, T]:
    """`write(handle)` into a temp file, renamed to `folder/name` once whole: a failed write leaves no partial
    file to hand out, and a page polling the same job from two tabs never reads a half-written file.
    Returns the path and what `write` returned (a job's zip is streamed to disk this way, never held in memory)."""
    target = folder / name
    partial = target.with_name(f".{target.name}.{threading.get_ident()}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as handle:
            answer = write(handle)
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        log.error("Cannot write %s: %s", target, exc)
        raise StorageFull(f"The server cannot store the result right now ({exc.strerror}).") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target, answer


def read_limited(path: str | Path, limit: int) -> bytes:
    """At most `limit` + 1 bytes: the pipeline reports "too large" on the extra byte."""
    with open(path, "rb") as handle:
        return handle.read(limit + 1)


def read_upload(path: str | Path, settings: Settings) -> bytes:
    """A photo the page uploaded earlier; `Expired` once Gradio's cache has let it go."""
    try:
        return read_limited(path, settings.max_image_bytes)
    except FileNotFoundError as exc:
        raise Expired.photo(settings.result_ttl_seconds) from exc


def sweep_expired(ttl: int) -> None:
    """Delete result folders older than `ttl` (also those a crashed process left), and Gradio's stray upload temp
    files (`tmp*` in its cache root, which Gradio 6.31 sometimes leaves after moving an upload); `delete_cache`
    handles the rest."""
    cutoff = time.time() - ttl
    for job in WORK_ROOT.parent.glob("*/job-*"):
        if job.is_dir() and job.stat().st_mtime < cutoff:
            shutil.rmtree(job, ignore_errors=True)
    gradio_root = Path(gr.utils.get_upload_folder())
    if gradio_root.is_dir():
        for stray in gradio_root.glob("tmp*"):
            if stray.is_file() and stray.stat().st_mtime < cutoff:
                stray.unlink(missing_ok=True)


def start_sweeper(settings: Settings) -> threading.Thread:
    """Sweep every few seconds (half the TTL, at most a minute), for the life of the process."""
    ttl = settings.result_ttl_seconds

    def loop() -> None:
        while True:
            time.sleep(max(1, min(60, ttl // 2)))
            try:
                sweep_expired(ttl)
            except OSError as exc:
                log.warning("Could not delete expired results: %s", exc)

    thread = threading.Thread(target=loop, name="bgremove-sweeper", daemon=True)
    thread.start()
    return thread


def remove_work_files() -> None:
    """At shutdown: results are not kept across restarts (Gradio clears its own cache the same way)."""
    shutil.rmtree(WORK_ROOT, ignore_errors=True)
