"""A job's rows and states: the SQL schema, `Job` and `JobItem` as the API shows them, and the jobs' own errors."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from bgremove.batch.engine import ItemResult
from bgremove.core.errors import BgRemoveError
from bgremove.core.options import RemovalOptions

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
ItemStatus = Literal["pending", "completed", "failed", "cancelled"]
FINAL_STATUSES = ("done", "failed", "cancelled")
ACTIVE_STATUSES = ("receiving", "queued", "running")  # count against MAX_QUEUE_SIZE
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


JOB_SELECT = """
SELECT j.*, SUM(i.status = 'completed') AS completed, SUM(i.status = 'failed') AS failed
FROM jobs AS j LEFT JOIN items AS i ON i.job_id = j.id
"""


def job_from_row(row: sqlite3.Row, items: tuple[JobItem, ...]) -> Job:
    """A `JOB_SELECT` row as a Job."""
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


def item_from_row(row: sqlite3.Row) -> JobItem:
    """An `items` row as a JobItem."""
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
