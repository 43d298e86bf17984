"""The job store: jobs and items in SQLite, inputs and outputs under DATA_DIR/jobs, owners as keyed hashes.

The crash rule is one ordering: an output is written atomically (`core.files.write_atomically`: temp file,
fsync, rename) and only THEN is its item marked done, in one transaction. After a crash at any point an item
is either done with its output on disk, or pending and run again (its output, if any, is overwritten). The
result zip is built from the item rows, so every input appears in it exactly once. `recover` removes
`.partial` files and half-received jobs on start.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import logging
import secrets
import shutil
import sqlite3
import threading
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

from bgremove.batch.engine import MANIFEST_NAME, BatchInput, ItemResult, build_manifest, output_extension, output_names
from bgremove.batch.jobs.models import (
    ACTIVE_STATUSES,
    CANCELLED_HINT,
    FINAL_STATUSES,
    JOB_SELECT,
    SCHEMA,
    Job,
    JobItem,
    JobNotFinished,
    JobNotFound,
    JobQueueFull,
    item_from_row,
    job_from_row,
)
from bgremove.core import store as model_store
from bgremove.core.errors import BgRemoveError, ConfigError, StorageFull
from bgremove.core.files import PARTIAL_SUFFIX, write_atomically
from bgremove.core.options import IMAGE_INPUTS, RemovalOptions
from bgremove.core.settings import Settings

log = logging.getLogger(__name__)

DATABASE_NAME = "jobs.sqlite3"
DISK_HEADROOM_BYTES = 64 * 1024 * 1024  # never fill the disk to the last byte: SQLite and the OS need room too


def storage_error(exc: OSError, where: Path) -> StorageFull | None:
    """ENOSPC and friends as StorageFull (507); None for other OSErrors (the server's problem, not the disk's)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
        return StorageFull(
            f"The job folder {where} is full or not writable ({exc.strerror}).",
            hint="Free space in DATA_DIR or point DATA_DIR at a larger disk, then retry.",
        )
    return None


def check_model(options: RemovalOptions, settings: Settings) -> None:
    """Refuse an unknown model at submit (InvalidOption) rather than failing every file of the job."""
    model_store.resolve_name(options.model, settings)


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

    def photo_images(self, job_id: str) -> dict[str, bytes]:
        """A one-photo job's own image inputs (touch-up hints), stored next to its input as files of their name."""
        paths = {name: self.job_dir(job_id) / name for name, spec in IMAGE_INPUTS.items() if spec.per_photo}
        return {name: path.read_bytes() for name, path in paths.items() if path.exists()}

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
        photo_images: Mapping[str, bytes] | None = None,
    ) -> Job:
        """Store a new job: reserve its place and bytes, write the inputs durably, then queue it.

        Raises JobQueueFull (MAX_QUEUE_SIZE jobs queued or running) or StorageFull (JOB_DISK_QUOTA_MB would be
        exceeded, or the disk is nearly full). Inputs that failed early (oversized, encrypted, nested zip) are
        recorded as failed items straight away.
        """
        job_id = secrets.token_hex(16)
        model = options.model or PurePosixPath(self.settings.model_name).name
        planned = output_names([item.name for item in inputs], output_extension(options))
        photo_images = photo_images or {}
        size = sum(_input_size(item) for item in inputs) + len(bg_image or b"") + sum(map(len, photo_images.values()))
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
                    write_atomically(self.input_path(job_id, index), data)
            if bg_image is not None:
                write_atomically(self.bg_image_path(job_id), bg_image)
            for name, data in photo_images.items():
                write_atomically(self.job_dir(job_id) / name, data)
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
            f"{JOB_SELECT} WHERE j.id = ? AND j.owner = ? AND j.status != 'receiving' GROUP BY j.id", (job_id, owner)
        )
        if not rows:
            raise JobNotFound(f"There is no job {job_id!r}.")
        return job_from_row(rows[0], self.items(job_id) if items else ())

    def find(self, job_id: str) -> Job | None:
        """A job whatever its owner (for the runner)."""
        rows = self._query(f"{JOB_SELECT} WHERE j.id = ? GROUP BY j.id", (job_id,))
        return job_from_row(rows[0], ()) if rows else None

    def jobs_of(self, owner: str, limit: int = 100) -> list[Job]:
        """The owner's jobs, newest first."""
        rows = self._query(
            f"{JOB_SELECT} WHERE j.owner = ? AND j.status != 'receiving' GROUP BY j.id ORDER BY j.created DESC LIMIT ?",
            (owner, limit),
        )
        return [job_from_row(row, ()) for row in rows]

    def items(self, job_id: str) -> tuple[JobItem, ...]:
        """Every item in input order; in a cancelled or failed job the unprocessed ones say why they were not run."""
        jobs = self._query("SELECT status, error, hint FROM jobs WHERE id = ?", (job_id,))
        rows = self._query("SELECT * FROM items WHERE job_id = ? ORDER BY idx", (job_id,))
        items = [item_from_row(row) for row in rows]
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
        return [item_from_row(row) for row in rows]

    def status_of(self, job_id: str) -> str | None:
        rows = self._query("SELECT status FROM jobs WHERE id = ?", (job_id,))
        return str(rows[0]["status"]) if rows else None

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
