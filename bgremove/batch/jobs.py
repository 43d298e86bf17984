"""Durable batch jobs: submit now, poll, fetch later; survive `kill -9` without losing or duplicating a file.

State lives in DATA_DIR: `jobs.sqlite3` (stdlib sqlite3, WAL) holds jobs and items; `jobs/<id>/in/<index>` holds
each input (written and fsync'd before the job is queued) and `jobs/<id>/out/<output name>` each output.
The crash rule is one ordering: an output is written atomically (temp file, fsync, rename) and only THEN is its
item marked done, in one transaction. After a crash at any point an item is either done with its output on
disk, or pending and run again (its output, if any, is overwritten). The result zip is built from the item
rows, so every input appears in it exactly once. `.partial` files and half-received jobs are removed on start.

Workers run in this process (`JobRunner`), one job at a time each, the items of a job in order through the
batch engine's `process_item`. They share the SessionCache's inference slots with interactive requests, and
interactive requests go first: a job asks for a slot only while no other request is waiting for one, there are
fewer job workers than slots, and job threads run at a lower CPU priority (see `BackgroundCache`). With
JOB_EXECUTOR=ray the same `process_item` runs as Ray tasks (bytes travel with the task; outputs are written
here). A janitor thread posts callbacks and deletes finished jobs after JOB_RETENTION_HOURS.

One server process per DATA_DIR runs the workers (an advisory lock file decides which); others only serve.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, Literal

from bgremove.batch.engine import (
    MANIFEST_NAME,
    BatchInput,
    ItemResult,
    build_manifest,
    output_extension,
    output_names,
    process_item,
)
from bgremove.batch.prefetch import run_in_order
from bgremove.core import store as model_store
from bgremove.core.errors import BgRemoveError, ConfigError, StorageFull
from bgremove.core.options import RemovalOptions
from bgremove.core.sessions import LoadedModel, SessionCache
from bgremove.core.settings import Settings

if TYPE_CHECKING:
    from types import ModuleType

log = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
ItemStatus = Literal["pending", "completed", "failed", "cancelled"]
FINAL_STATUSES = ("done", "failed", "cancelled")
ACTIVE_STATUSES = ("receiving", "queued", "running")  # count against MAX_QUEUE_SIZE
DATABASE_NAME = "jobs.sqlite3"
LOCK_NAME = "jobs.lock"
PARTIAL_SUFFIX = ".partial"
DISK_HEADROOM_BYTES = 64 * 1024 * 1024  # never fill the disk to the last byte: SQLite and the OS need room too
JOB_NICENESS = 10  # job threads' CPU priority below interactive requests' (Linux: per thread)
CANCELLED_HINT = "Submit this file again in a new job."

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    options TEXT NOT NULL,
    model TEXT NOT NULL,
    total INTEGER NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    has_bg_image INTEGER NOT NULL DEFAULT 0,
    callback_url TEXT,
    callback_sent INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    hint TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created);
CREATE TABLE IF NOT EXISTS items (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    filename TEXT NOT NULL,
    planned TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    model TEXT,
    seconds REAL NOT NULL DEFAULT 0,
    error TEXT,
    hint TEXT,
    metadata TEXT,
    PRIMARY KEY (job_id, idx)
);
"""


class JobNotFound(BgRemoveError):
    """No such job for this caller (another key's job is reported the same way: its existence is not leaked)."""

    default_hint = "Check the id (GET /api/jobs lists your jobs); finished jobs are deleted after JOB_RETENTION_HOURS."


class JobNotFinished(BgRemoveError):
    """The result was asked for while the job is still queued or running."""

    default_hint = "Poll the job's status_url until its status is done, failed or cancelled, then fetch the result."


class JobQueueFull(BgRemoveError):
    """MAX_QUEUE_SIZE jobs are already queued or running."""

    default_hint = "Retry when a job has finished (GET /api/jobs), or raise MAX_QUEUE_SIZE."


@dataclass(frozen=True)
class JobItem:
    """One input of a job and what became of it."""

    index: int
    filename: str
    planned: str  # the output name chosen at submit (output_names); format=auto may change its extension
    status: ItemStatus
    output: str | None = None
    model: str | None = None
    seconds: float = 0.0
    error: str | None = None
    hint: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The status API's item: the manifest keys (metadata first), plus the index."""
        entry: dict[str, Any] = {
            **self.metadata,
            "index": self.index,
            "filename": self.filename,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "hint": self.hint,
        }
        if self.model is not None:
            entry["model"] = self.model
        return entry

    def as_result(self) -> ItemResult:
        """The item as the batch engine's result, for `build_manifest` (cancelled items count as failed there)."""
        if self.status == "completed":
            return ItemResult(
                self.index,
                self.filename,
                "completed",
                output=self.output,
                model=self.model,
                seconds=self.seconds,
                metadata=dict(self.metadata),
            )
        return ItemResult(
            self.index,
            self.filename,
            "failed",
            model=self.model,
            seconds=self.seconds,
            error=self.error or "Not processed.",
            hint=self.hint or CANCELLED_HINT,
        )


@dataclass(frozen=True)
class Job:
    """A job's row: who owns it, where it stands, and (when asked for) its items."""

    id: str
    owner: str
    status: JobStatus
    options: str
    model: str
    total: int
    completed: int
    failed: int
    bytes: int
    has_bg_image: bool
    callback_url: str | None
    error: str | None
    hint: str | None
    created: float
    updated: float
    finished: float | None
    items: tuple[JobItem, ...] = ()

    @property
    def done(self) -> int:
        """Items processed so far, completed or failed."""
        return self.completed + self.failed

    @property
    def removal_options(self) -> RemovalOptions:
        return RemovalOptions.model_validate_json(self.options)

    def summary(self) -> dict[str, Any]:
        """{id, status, total, done, completed, failed, model, created, updated} (times in ISO 8601, UTC)."""
        data: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "total": self.total,
            "done": self.done,
            "completed": self.completed,
            "failed": self.failed,
            "model": self.model,
            "created": iso_time(self.created),
            "updated": iso_time(self.updated),
        }
        if self.error:
            data["error"], data["hint"] = self.error, self.hint
        return data

    def to_dict(self) -> dict[str, Any]:
        """The summary plus every item."""
        return {**self.summary(), "items": [item.to_dict() for item in self.items]}

    def callback_payload(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "total": self.total, "done": self.done, "failed": self.failed}


def iso_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# --- files ------------------------------------------------------------------------------------------------------


def write_durably(target: Path, data: bytes) -> None:
    """Write a temp file beside `target`, fsync it, rename it over `target`, fsync the folder.

    After a crash `target` is either absent or whole (batch.sinks.write_atomically, plus the fsyncs a power
    cut needs); a leftover `.partial` file is removed by `JobStore.recover`.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}{PARTIAL_SUFFIX}")
    try:
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_folder(target.parent)


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (no-op where folders cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def storage_error(exc: OSError, where: Path) -> StorageFull | None:
    """ENOSPC and friends as StorageFull (507); None for other OSErrors (the server's problem, not the disk's)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
        return StorageFull(
            f"The job folder {where} is full or not writable ({exc.strerror}).",
            hint="Free space in DATA_DIR or point DATA_DIR at a larger disk, then retry.",
        )
    return None


# --- the store -------------------------------------------------------------------------------------------------


class JobStore:
    """Jobs and items in SQLite, inputs and outputs under DATA_DIR/jobs; safe to use from many threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.data_dir
        self.jobs_dir = self.root / "jobs"
        self._lock = threading.RLock()  # one connection, one writer at a time (SQLite serialises writers anyway)
        try:
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.root / DATABASE_NAME, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a committed item survives a power cut, not just kill -9
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._lock:
                self._db.executescript(SCHEMA)
            self._salt = self._owner_salt()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"DATA_DIR={self.root} cannot hold the job database ({exc}).",
                hint="Point DATA_DIR at a writable directory on a local disk.",
            ) from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: checks and writes inside see no other writer in between."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, parameters: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    # -- owners: a keyed hash of the API key, never the key itself

    def _owner_salt(self) -> bytes:
        with self._transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'owner_salt'").fetchone()
            if row is None:
                value = secrets.token_hex(32)
                db.execute("INSERT INTO meta (key, value) VALUES ('owner_salt', ?)", (value,))
                return bytes.fromhex(value)
            return bytes.fromhex(row["value"])

    def owner_of(self, api_key: str | None) -> str:
        """The owner recorded for a caller: HMAC-SHA256 of its key with this store's secret salt ("" without keys)."""
        if not api_key:
            return ""
        return hmac.new(self._salt, api_key.encode(), hashlib.sha256).hexdigest()

    # -- paths

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def input_path(self, job_id: str, index: int) -> Path:
        return self.job_dir(job_id) / "in" / str(index)

    def bg_image_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "bg_image"

    def output_path(self, job_id: str, output: str) -> Path:
        relative = PurePosixPath(output)
        if relative.is_absolute() or ".." in relative.parts:  # output_names never makes one; refuse anyway
            raise ValueError(f"unsafe output name {output!r}")
        return self.job_dir(job_id) / "out" / relative

    # -- submit

    def usage_bytes(self) -> int:
        """Bytes the jobs use now (inputs at submit, outputs as they land)."""
        return int(self._query("SELECT COALESCE(SUM(bytes), 0) AS used FROM jobs")[0]["used"])

    def submit(
        self,
        inputs: list[BatchInput],
        options: RemovalOptions,
        *,
        owner: str = "",
        callback_url: str | None = None,
        bg_image: bytes | None = None,
    ) -> Job:
        """Store a new job: reserve its place and bytes, write the inputs durably, then queue it.

        Raises JobQueueFull (MAX_QUEUE_SIZE jobs queued or running) or StorageFull (JOB_DISK_QUOTA_MB would be
        exceeded, or the disk is nearly full). Inputs that failed early (oversized, encrypted, nested zip) are
        recorded as failed items straight away.
        """
        job_id = secrets.token_hex(16)
        model = options.model or PurePosixPath(self.settings.model_name).name
        planned = output_names([item.name for item in inputs], output_extension(options))
        size = sum(_input_size(item) for item in inputs) + len(bg_image or b"")
        now = time.time()
        with self._transaction() as db:
            self._admit(db, size)
            db.execute(
                "INSERT INTO jobs (id, owner, status, options, model, total, bytes, has_bg_image, callback_url, "
                "created, updated) VALUES (?, ?, 'receiving', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    owner,
                    options.model_dump_json(),
                    model,
                    len(inputs),
                    size,
                    bg_image is not None,
                    callback_url,
                    now,
                    now,
                ),
            )
        try:
            for index, item in enumerate(inputs):
                data = item.data if item.error is None else None
                if data is None and item.error is None:
                    data = item.read()  # a file on disk (inputs_from_paths)
                if data is not None:
                    write_durably(self.input_path(job_id, index), data)
            if bg_image is not None:
                write_durably(self.bg_image_path(job_id), bg_image)
            with self._transaction() as db:
                for index, (item, name) in enumerate(zip(inputs, planned, strict=True)):
                    error = item.error
                    db.execute(
                        "INSERT INTO items (job_id, idx, filename, planned, status, model, error, hint) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            job_id,
                            index,
                            item.name,
                            name,
                            "pending" if error is None else "failed",
                            model,
                            error.message if error else None,
                            error.hint if error else None,
                        ),
                    )
                db.execute("UPDATE jobs SET status = 'queued', updated = ? WHERE id = ?", (time.time(), job_id))
        except BaseException as exc:
            self._forget(job_id)
            full = storage_error(exc, self.jobs_dir) if isinstance(exc, OSError) else None
            if full is not None:
                raise full from exc
            raise
        return self.get(job_id, owner)

    def _admit(self, db: sqlite3.Connection, size: int) -> None:
        """Queue length and disk checks, inside the transaction that reserves the job (20 at once stay exact)."""
        placeholders = ",".join("?" * len(ACTIVE_STATUSES))
        active = db.execute(f"SELECT COUNT(*) FROM jobs WHERE status IN ({placeholders})", ACTIVE_STATUSES).fetchone()[0]
        if active >= self.settings.max_queue_size:
            raise JobQueueFull(
                f"{active} jobs are already queued or running; the limit is MAX_QUEUE_SIZE={self.settings.max_queue_size}."
            )
        used = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM jobs").fetchone()[0]
        quota = self.settings.job_disk_quota_bytes
        if used + size > quota:
            raise StorageFull(
                f"This job needs {size / 1048576:.1f} MB and jobs already use {used / 1048576:.1f} MB of the "
                f"{self.settings.job_disk_quota_mb:g} MB job quota.",
                hint="Fetch and delete finished jobs (DELETE /api/jobs/ID), wait for JOB_RETENTION_HOURS to clean "
                "them up, or raise JOB_DISK_QUOTA_MB.",
            )
        free = shutil.disk_usage(self.root).free
        if free < 2 * size + DISK_HEADROOM_BYTES:  # the inputs, about as much again for outputs, and headroom
            raise StorageFull(
                f"The disk of DATA_DIR has {free / 1048576:.0f} MB free, too little for a job of "
                f"{size / 1048576:.1f} MB and its results.",
                hint="Free space on the disk of DATA_DIR, or point DATA_DIR at a larger disk.",
            )

    def _forget(self, job_id: str) -> None:
        """Remove a job's row and files (a failed submit, a delete, the retention sweep)."""
        with self._transaction() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    # -- reading

    def get(self, job_id: str, owner: str, *, items: bool = True) -> Job:
        """The job if `owner` may see it, else JobNotFound (the same answer as for an unknown id)."""
        rows = self._query(
            f"{_JOB_SELECT} WHERE j.id = ? AND j.owner = ? AND j.status != 'receiving' GROUP BY j.id", (job_id, owner)
        )
        if not rows:
            raise JobNotFound(f"There is no job {job_id!r}.")
        return self._job(rows[0], self.items(job_id) if items else ())

    def find(self, job_id: str) -> Job | None:
        """A job whatever its owner (for the runner)."""
        rows = self._query(f"{_JOB_SELECT} WHERE j.id = ? GROUP BY j.id", (job_id,))
        return self._job(rows[0], ()) if rows else None

    def jobs_of(self, owner: str, limit: int = 100) -> list[Job]:
        """The owner's jobs, newest first."""
        rows = self._query(
            f"{_JOB_SELECT} WHERE j.owner = ? AND j.status != 'receiving' GROUP BY j.id ORDER BY j.created DESC LIMIT ?",
            (owner, limit),
        )
        return [self._job(row, ()) for row in rows]

    def items(self, job_id: str) -> tuple[JobItem, ...]:
        """Every item in input order; in a cancelled or failed job the unprocessed ones say why they were not run."""
        jobs = self._query("SELECT status, error, hint FROM jobs WHERE id = ?", (job_id,))
        rows = self._query("SELECT * FROM items WHERE job_id = ? ORDER BY idx", (job_id,))
        items = [_item(row) for row in rows]
        if jobs and jobs[0]["status"] in ("cancelled", "failed"):
            job = jobs[0]
            if job["status"] == "cancelled":
                why = JobItem(
                    0, "", "", "cancelled", error="Not processed: the job was cancelled before this file.", hint=CANCELLED_HINT
                )
            else:
                why = JobItem(
                    0,
                    "",
                    "",
                    "failed",
                    error=f"Not processed: {job['error'] or 'the job stopped.'}",
                    hint=job["hint"] or CANCELLED_HINT,
                )
            items = [
                replace(item, status=why.status, error=why.error, hint=why.hint) if item.status == "pending" else item
                for item in items
            ]
        return tuple(items)

    def pending_items(self, job_id: str) -> list[JobItem]:
        rows = self._query("SELECT * FROM items WHERE job_id = ? AND status = 'pending' ORDER BY idx", (job_id,))
        return [_item(row) for row in rows]

    def status_of(self, job_id: str) -> str | None:
        rows = self._query("SELECT status FROM jobs WHERE id = ?", (job_id,))
        return str(rows[0]["status"]) if rows else None

    @staticmethod
    def _job(row: sqlite3.Row, items: tuple[JobItem, ...]) -> Job:
        return Job(
            id=row["id"],
            owner=row["owner"],
            status=row["status"],
            options=row["options"],
            model=row["model"],
            total=row["total"],
            completed=row["completed"] or 0,
            failed=row["failed"] or 0,
            bytes=row["bytes"],
            has_bg_image=bool(row["has_bg_image"]),
            callback_url=row["callback_url"],
            error=row["error"],
            hint=row["hint"],
            created=row["created"],
            updated=row["updated"],
            finished=row["finished"],
            items=items,
        )

    # -- the result

    def write_result(self, job_id: str, owner: str, target: IO[bytes]) -> dict[str, Any]:
        """The result zip (outputs at their names, manifest.json last: the batch zip's layout) into `target`.

        Built from the item rows, so every input appears once however often the job was interrupted.
        Raises JobNotFinished while the job is queued or running.
        """
        job = self.get(job_id, owner)
        if job.status not in FINAL_STATUSES:
            raise JobNotFinished(f"Job {job_id} is {job.status} ({job.done} of {job.total} files done).")
        results: list[ItemResult] = []
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for item in job.items:
                result = item.as_result()
                if item.status == "completed" and item.output:
                    try:
                        archive.write(self.output_path(job_id, item.output), item.output)
                    except FileNotFoundError:  # someone removed it from DATA_DIR by hand
                        result = ItemResult(
                            item.index,
                            item.filename,
                            "failed",
                            model=item.model,
                            error=f"The output of {item.filename} is missing from DATA_DIR.",
                            hint="Submit this file again in a new job.",
                        )
                results.append(result)
            manifest = build_manifest(results, job.model)
            archive.writestr(MANIFEST_NAME, json.dumps(manifest, indent=2))
        return manifest

    # -- the runner's side

    def claim_next(self) -> Job | None:
        """Mark the oldest queued job running and return it (None when nothing is queued)."""
        with self._transaction() as db:
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'running', updated = ? WHERE id = ?", (time.time(), row["id"]))
        return self.find(row["id"])

    def commit_item(self, job_id: str, result: ItemResult, written: int) -> bool:
        """Mark one item done (its output already on disk). False when the job was deleted meanwhile."""
        metadata = json.dumps(
            {
                key: value
                for key, value in result.metadata.items()
                if key not in ("filename", "status", "output", "model", "error", "hint")
            }
        )
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE items SET status = ?, output = ?, model = ?, seconds = ?, error = ?, hint = ?, metadata = ? "
                "WHERE job_id = ? AND idx = ? AND status = 'pending'",
                (
                    result.status,
                    result.output,
                    result.model,
                    result.seconds,
                    result.error,
                    result.hint,
                    metadata,
                    job_id,
                    result.index,
                ),
            ).rowcount
            db.execute("UPDATE jobs SET bytes = bytes + ?, updated = ? WHERE id = ?", (written, time.time(), job_id))
        return changed == 1

    def finish(self, job_id: str, *, error: BgRemoveError | None = None) -> None:
        """A running job has no pending item left (or could not go on): done, or failed if nothing completed."""
        now = time.time()
        with self._transaction() as db:
            completed = db.execute("SELECT COUNT(*) FROM items WHERE job_id = ? AND status = 'completed'", (job_id,)).fetchone()[
                0
            ]
            status = "failed" if error is not None or completed == 0 else "done"
            db.execute(
                "UPDATE jobs SET status = ?, error = ?, hint = ?, updated = ?, finished = ? WHERE id = ? AND status = 'running'",
                (status, error.message if error else None, error.hint if error else None, now, now, job_id),
            )

    def requeue(self, job_id: str) -> None:
        """A running job whose worker stopped (server shutdown): queued again, it resumes at its next item."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET status = 'queued', updated = ? WHERE id = ? AND status = 'running'", (time.time(), job_id)
            )

    def cancel(self, job_id: str, owner: str) -> bool:
        """Cancel a queued or running job (its finished files stay); never deletes. False if it had already ended."""
        self.get(job_id, owner, items=False)
        now = time.time()
        with self._transaction() as db:
            cancelled = db.execute(
                "UPDATE jobs SET status = 'cancelled', updated = ?, finished = ? "
                "WHERE id = ? AND status IN ('queued', 'running')",
                (now, now, job_id),
            ).rowcount
        return bool(cancelled)

    def cancel_or_delete(self, job_id: str, owner: str) -> Literal["cancelled", "deleted"]:
        """DELETE's meaning: a queued or running job is cancelled (its finished files stay); any other is deleted."""
        if self.cancel(job_id, owner):
            return "cancelled"
        self._forget(job_id)
        return "deleted"

    def claim_callback(self, busy: set[str] | frozenset[str] = frozenset()) -> Job | None:
        """A finished job whose callback is still to be posted, marked as posted (callbacks go at most once).

        `busy` jobs (cancelled while a worker finishes their current item) wait until the worker is done.
        """
        statuses = ",".join("?" * len(FINAL_STATUSES))
        skipped = ",".join("?" * len(busy))
        with self._transaction() as db:
            row = db.execute(
                f"SELECT id FROM jobs WHERE callback_url IS NOT NULL AND callback_sent = 0 "
                f"AND status IN ({statuses}) AND id NOT IN ({skipped}) ORDER BY finished LIMIT 1",
                (*FINAL_STATUSES, *busy),
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET callback_sent = 1 WHERE id = ?", (row["id"],))
        return self.find(row["id"])

    # -- housekeeping

    def recover(self) -> None:
        """After a crash: drop half-received jobs, requeue running ones, remove temp files and stray outputs."""
        with self._transaction() as db:
            receiving = [row["id"] for row in db.execute("SELECT id FROM jobs WHERE status = 'receiving'")]
            requeued = db.execute(
                "UPDATE jobs SET status = 'queued', updated = ? WHERE status = 'running'", (time.time(),)
            ).rowcount
        for job_id in receiving:
            self._forget(job_id)
        for partial in self.jobs_dir.rglob(f"*{PARTIAL_SUFFIX}"):
            partial.unlink(missing_ok=True)
        known = {row["id"] for row in self._query("SELECT id FROM jobs")}
        for folder in self.jobs_dir.iterdir():
            if folder.name not in known:
                shutil.rmtree(folder, ignore_errors=True) if folder.is_dir() else folder.unlink(missing_ok=True)
        for job_id in known:  # outputs written just before a crash, their items still pending: rerun, not kept
            out = self.job_dir(job_id) / "out"
            if not out.is_dir():
                continue
            kept = {
                row["output"]
                for row in self._query("SELECT output FROM items WHERE job_id = ? AND status = 'completed'", (job_id,))
            }
            for file in out.rglob("*"):
                if file.is_file() and file.relative_to(out).as_posix() not in kept:
                    file.unlink(missing_ok=True)
        if requeued or receiving:
            log.info("Jobs recovered after a restart: %d resumed, %d half-received dropped", requeued, len(receiving))

    def sweep(self, now: float | None = None) -> list[str]:
        """Delete finished jobs older than JOB_RETENTION_HOURS (rows first: a crash leaves only a stray folder)."""
        cutoff = (now if now is not None else time.time()) - self.settings.job_retention_hours * 3600
        placeholders = ",".join("?" * len(FINAL_STATUSES))
        expired = [
            row["id"]
            for row in self._query(
                f"SELECT id FROM jobs WHERE status IN ({placeholders}) AND finished < ?", (*FINAL_STATUSES, cutoff)
            )
        ]
        for job_id in expired:
            self._forget(job_id)
        if expired:
            log.info("Deleted %d jobs older than JOB_RETENTION_HOURS=%g", len(expired), self.settings.job_retention_hours)
        return expired


def _input_size(item: BatchInput) -> int:
    if item.error is not None:
        return 0
    if item.data is not None:
        return len(item.data)
    return item.path.stat().st_size if item.path is not None else 0


_JOB_SELECT = """
SELECT j.*, SUM(i.status = 'completed') AS completed, SUM(i.status = 'failed') AS failed
FROM jobs AS j LEFT JOIN items AS i ON i.job_id = j.id
"""


def _item(row: sqlite3.Row) -> JobItem:
    return JobItem(
        index=row["idx"],
        filename=row["filename"],
        planned=row["planned"],
        status=row["status"],
        output=row["output"],
        model=row["model"],
        seconds=row["seconds"],
        error=row["error"],
        hint=row["hint"],
        metadata=json.loads(row["metadata"]) if row["metadata"] else {},
    )


# --- interactive first ------------------------------------------------------------------------------------------


class BackgroundCache:
    """The SessionCache as a job sees it: the same loaded models and the same inference slots, but a job asks
    for a slot only while no interactive request is waiting for one.

    With fewer job workers than MAX_CONCURRENT_INFERENCES an interactive request normally finds a free slot at
    once; when slots run short (MAX_CONCURRENT_INFERENCES=1, or several doors busy) it waits at most for the one
    forward pass a job already started, and the job then steps aside until nobody is waiting.

    Job threads run at a lower CPU priority (`lower_thread_priority`). Threads inherit it from the thread that
    creates them, so models are loaded on `loader`, a thread at normal priority: an engine's thread pool built
    during a load must not be slowed down for the interactive requests that share it.
    """

    def __init__(
        self, cache: SessionCache, stopping: threading.Event, pause: float = 0.02, loader: ThreadPoolExecutor | None = None
    ) -> None:
        self._cache = cache
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


# --- the runner --------------------------------------------------------------------------------------------------


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
        self.job_cache = BackgroundCache(cache, self._stopping)

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
        self.job_cache = BackgroundCache(self.cache, self._stopping, loader=self._loader)
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
            pending = self.store.pending_items(job.id)
            if self.settings.job_executor == "ray":
                self._run_on_ray(job, options, pending, bg_image)
            else:  # the next file is read and the last result written while this one runs (batch.prefetch)
                run_in_order(
                    [BatchInput(item.filename, path=self.store.input_path(job.id, item.index)) for item in pending],
                    BatchInput.in_memory,
                    lambda number, source: process_item(
                        source,
                        options,
                        settings=self.settings,
                        cache=self.job_cache,  # type: ignore[arg-type]
                        index=pending[number].index,
                        output=pending[number].planned,
                        bg_image=bg_image,
                    ),
                    lambda result: self._commit(job.id, result),
                    lambda: self._should_continue(job.id),
                )
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
            write_durably(target, result.data)
            written = len(result.data)
        result.release()
        if not self.store.commit_item(job_id, result, written) and self.store.status_of(job_id) is None:
            shutil.rmtree(self.store.job_dir(job_id), ignore_errors=True)  # deleted while this item ran

    # -- Ray

    def _run_on_ray(self, job: Job, options: RemovalOptions, pending: list[JobItem], bg_image: bytes | None) -> None:
        """Items as Ray tasks over the same `process_item`, a few in flight per cluster CPU; committed here."""
        ray = ray_module(self.settings)
        task = ray.remote(max_retries=1)(ray_process_item)
        window = max(1, int(ray.cluster_resources().get("CPU", 1)))
        queue = iter(pending)
        in_flight: dict[Any, JobItem] = {}
        while True:
            while len(in_flight) < window and self._should_continue(job.id):
                item = next(queue, None)
                if item is None:
                    break
                data = self.store.input_path(job.id, item.index).read_bytes()
                in_flight[task.remote(self.settings, options, item.filename, data, item.index, item.planned, bg_image)] = item
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
                        item.filename,
                        "failed",
                        model=job.model,
                        error=f"{item.filename} failed on the Ray cluster ({type(exc).__name__}).",
                        hint="Retry the job; check the Ray cluster's logs if it happens again.",
                    )
                self._commit(job.id, result)
            if not self._should_continue(job.id):
                for ref in in_flight:
                    ray.cancel(ref)
                return

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
                status = self._post_json(job.callback_url, job.callback_payload())
                log.info("Job %s: callback answered %d", job.id, status)
            except BgRemoveError as exc:
                log.warning("Job %s: callback to its URL failed: %s", job.id, exc.message)

    def _post_json(self, url: str, payload: dict[str, Any]) -> int:
        from bgremove.core.fetch import post_json

        return post_json(url, payload, callback_policy(self.settings))


def callback_policy(settings: Settings) -> Any:
    """The SSRF guard's limits for job callbacks: the image-URL rules (URL_ALLOW_PRIVATE_NETWORKS included)."""
    from bgremove.core.fetch import FetchPolicy

    return FetchPolicy(
        max_bytes=0,
        timeout_seconds=settings.url_fetch_timeout_seconds,
        max_redirects=0,
        allow_private_networks=settings.url_allow_private_networks,
    )


def check_callback_url(url: str, settings: Settings) -> str:
    """Vet a callback URL at submit with the same guard that will post to it (UrlRefused / UrlFetchFailed)."""
    from bgremove.core.fetch import check_url

    url = url.strip()
    check_url(url, callback_policy(settings))
    return url


def check_model(options: RemovalOptions, settings: Settings) -> None:
    """Refuse an unknown model at submit (InvalidOption) rather than failing every file of the job."""
    model_store.resolve_name(options.model, settings)


# --- Ray ---------------------------------------------------------------------------------------------------------

_ray_lock = threading.Lock()


def ray_module(settings: Settings) -> ModuleType:
    """Ray, imported and connected once (RAY_ADDRESS, or a local Ray when unset)."""
    with _ray_lock:
        try:
            import ray
        except ImportError as exc:
            raise BgRemoveError("JOB_EXECUTOR=ray needs Ray.", hint="pip install -r requirements-ray.txt") from exc
        if not ray.is_initialized():
            ray.init(address=settings.ray_address, ignore_reinit_error=True, log_to_driver=False)
        return ray


@lru_cache(maxsize=2)
def _worker_cache(settings: Settings) -> SessionCache:
    """One SessionCache per Ray worker process (the model loads once per worker, not per item)."""
    return SessionCache(settings)


def ray_process_item(
    settings: Settings, options: RemovalOptions, name: str, data: bytes, index: int, output: str, bg_image: bytes | None
) -> ItemResult:
    """The Ray task: one item through `process_item` on a worker; the bytes come back in the result."""
    return process_item(
        BatchInput(name, data=data),
        options,
        settings=settings,
        cache=_worker_cache(settings),
        index=index,
        output=output,
        bg_image=bg_image,
    )
