"""JOB_EXECUTOR=ray: a job's items run as Ray tasks over the same process_item (a local Ray, started here)."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bgremove.batch.engine import BatchInput
from bgremove.batch.jobs import JobRunner
from bgremove.core.options import RemovalOptions
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from tests.batch.test_ray import assert_the_package_is_shipped
from tests.jobs.conftest import photo

pytestmark = pytest.mark.slow


def test_a_job_runs_on_ray(jobs_settings: Callable[..., Settings], tmp_path: Path) -> None:
    import ray  # requirements-dev installs requirements-ray.txt: CI always has it

    settings = jobs_settings(JOB_EXECUTOR="ray")
    runner = JobRunner(settings, SessionCache(settings), poll_seconds=0.2)
    inputs = [BatchInput(f"p{number}.png", data=photo(number)) for number in range(3)]
    inputs.insert(1, BatchInput("broken.png", data=b"\x89PNG\r\n\x1a\nbroken"))
    job = runner.store.submit(inputs, RemovalOptions(format="webp"))
    runner.start()
    try:
        deadline = time.monotonic() + 300
        while (status := runner.store.status_of(job.id)) not in ("done", "failed", "cancelled"):
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert status == "done"
        buffer = io.BytesIO()
        manifest = runner.store.write_result(job.id, "", buffer)
        assert_the_package_is_shipped()  # the Ray the runner joined: the CLI's recipe (tests/batch/test_ray.py)
    finally:
        runner.close()
        ray.shutdown()
    with zipfile.ZipFile(buffer) as archive:
        assert archive.namelist() == ["p0.webp", "p1.webp", "p2.webp", "manifest.json"]
    assert [entry["status"] for entry in manifest["items"]] == ["completed", "failed", "completed", "completed"]
    assert manifest["items"][1]["hint"]
