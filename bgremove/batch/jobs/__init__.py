"""Durable batch jobs: submit now, poll, fetch later; survive `kill -9` without losing or duplicating a file.

State lives in DATA_DIR: `jobs.sqlite3` (stdlib sqlite3, WAL) holds jobs and items; `jobs/<id>/in/<index>` holds
each input (written and fsync'd before the job is queued) and `jobs/<id>/out/<output name>` each output.
One concept a module:
- `models`: the SQL schema, the rows (`Job`, `JobItem`), their states and the jobs' errors;
- `store`: `JobStore`, SQLite plus the files, owners as keyed hashes of API keys, and the crash rule (output
  written atomically, THEN its item marked done), recovery after a restart, retention, quota;
- `background`: `BackgroundCache`, interactive requests first on the shared inference slots;
- `runner`: `JobRunner`, worker threads over an executor (`bgremove.batch.executors`: this process or Ray)
  and the janitor;
- `callbacks`: the POST when a job ends, under the image URLs' SSRF rules.

The names below are the package's API (web/jobs.py, the UI and the tests import them from here).
"""

from bgremove.batch.jobs.background import BackgroundCache, lower_thread_priority
from bgremove.batch.jobs.callbacks import callback_policy, check_callback_url, post_callback
from bgremove.batch.jobs.models import (
    ACTIVE_STATUSES,
    CANCELLED_HINT,
    FINAL_STATUSES,
    ItemStatus,
    Job,
    JobItem,
    JobNotFinished,
    JobNotFound,
    JobQueueFull,
    JobStatus,
)
from bgremove.batch.jobs.runner import JobRunner
from bgremove.batch.jobs.store import JobStore, check_model, storage_error

__all__ = [
    "ACTIVE_STATUSES",
    "CANCELLED_HINT",
    "FINAL_STATUSES",
    "BackgroundCache",
    "ItemStatus",
    "Job",
    "JobItem",
    "JobNotFinished",
    "JobNotFound",
    "JobQueueFull",
    "JobRunner",
    "JobStatus",
    "JobStore",
    "callback_policy",
    "check_callback_url",
    "check_model",
    "lower_thread_priority",
    "post_callback",
    "storage_error",
]
