"""SIGKILL a real server in the middle of a job, restart it on the same DATA_DIR: the job completes with every
input exactly once in the zip and the manifest, and no temp file is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, build_slow_model, free_port
from tests.jobs.conftest import image_parts, leftovers, read_result, wait_for

pytestmark = pytest.mark.slow


def start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.jobs.server", str(port)], cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/api/jobs", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not start:\n" + log.read_text()
        time.sleep(0.1)


def test_sigkill_mid_job_then_restart_completes_the_job_exactly_once(tmp_path: Path) -> None:
    model = build_slow_model(tmp_path / "slow-u2net.onnx")
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "REMBG_MODEL_NAME": str(model),
        "REMBG_SESSION_PATH": str(tmp_path / "home"),
        "TMPDIR": str(tmp_path),
        "LOG_LEVEL": "warning",
        "QUANTIZE_ON_LOAD": "false",  # a background int8 build would compete with the job for the CPU
    }
    log = tmp_path / "server.log"
    names = [f"img{number:02d}.png" for number in range(8)]

    process, url = start(env, log)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            job = client.post("/api/jobs", files=image_parts(8)).json()
            deadline = time.monotonic() + 120
            while (status := client.get(f"/api/jobs/{job['id']}").json())["done"] < 2:
                assert status["status"] in ("queued", "running") and time.monotonic() < deadline, status
                time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)  # in the middle of the third file (or just between two)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = status["done"]
    assert killed_at < 8, "the job finished before the kill: make the model slower"

    process, url = start(env, log)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            final = wait_for(client, job["id"], timeout=300)
            assert (final["status"], final["done"], final["failed"]) == ("done", 8, 0), final
            files, manifest = read_result(client.get(f"/api/jobs/{job['id']}/result"))
    finally:
        process.terminate()
        process.wait(timeout=30)

    assert sorted(files) == names  # each output once (read_result also refuses a name twice in the zip)
    assert [entry["filename"] for entry in manifest["items"]] == names
    assert (manifest["count"], manifest["completed"], manifest["failed"]) == (8, 8, 0)
    assert all(data[:8] == b"\x89PNG\r\n\x1a\n" for data in files.values())
    assert leftovers(data_dir) == []
    assert sorted(path.name for path in (data_dir / "jobs").iterdir()) == [job["id"]]
