"""`python -m bgremove jobs ...`'s client functions against the jobs app (in-process, through TestClient)."""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path

from fastapi.testclient import TestClient

from bgremove.jobs_client import add_jobs_commands, run_jobs_command
from tests.conftest import zip_of
from tests.jobs.conftest import ClientFactory, photo, wait_for

SERVER = "http://testserver"


def run(client: TestClient, *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="bgremove")
    add_jobs_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["jobs", *argv, "--server", SERVER, "--quiet", *(["--poll", "0.05"] if argv[0] == "submit" else [])])
    out, err = io.StringIO(), io.StringIO()
    code = run_jobs_command(args, client=client, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_submit_a_folder_wait_and_unpack(jobs_client: ClientFactory, tmp_path: Path) -> None:
    client = jobs_client()
    folder = tmp_path / "photos"
    (folder / "shop").mkdir(parents=True)
    (folder / "a.png").write_bytes(photo(1))
    (folder / "shop" / "b.png").write_bytes(photo(2))
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(photo(3))
    out = tmp_path / "out"

    code, stdout, stderr = run(client, "submit", str(folder), "--wait", "-o", str(out), "--format", "webp", "--crop")
    assert code == 0, stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a.webp",
        "manifest.json",
        "shop/b.webp",
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [entry["filename"] for entry in manifest["items"]] == ["a.png", "shop/b.png"]
    assert "done, 2/2 done, 0 failed" in stdout
    assert not list(out.glob(".*.partial"))


def test_submit_then_status_fetch_cancel(jobs_client: ClientFactory, tmp_path: Path) -> None:
    client = jobs_client()
    archive = tmp_path / "shots.zip"
    archive.write_bytes(zip_of({"x.png": photo(1), "broken.png": b"\x89PNG\r\n\x1a\n not really"}))
    code, stdout, _ = run(client, "submit", str(archive))
    assert code == 0
    job_id = stdout.strip()
    wait_for(client, job_id)

    code, stdout, _ = run(client, "status", job_id)
    assert code == 1  # a file failed
    assert f"{job_id}: done, 2/2 done, 1 failed" in stdout and "broken.png:" in stdout

    code, stdout, _ = run(client, "status", job_id, "--json")
    assert json.loads(stdout)["items"][1]["status"] == "failed"

    target = tmp_path / "result.zip"
    code, _, stderr = run(client, "fetch", job_id, "-o", str(target))
    assert code == 0, stderr
    with zipfile.ZipFile(target) as result:
        assert result.namelist() == ["x.png", "manifest.json"]

    code, stdout, _ = run(client, "list")
    assert job_id in stdout
    code, stdout, _ = run(client, "cancel", job_id)  # finished: deleted
    assert (code, stdout.strip()) == (0, f"{job_id}: deleted")


def test_refusals_are_reported_with_their_hint(jobs_client: ClientFactory, tmp_path: Path) -> None:
    client = jobs_client()
    image = tmp_path / "a.png"
    image.write_bytes(photo(1))
    code, _, stderr = run(client, "submit", str(image), "--quality", "500")
    assert code == 2 and "quality" in stderr and "Use a whole number from 1 to 100." in stderr
    assert client.get("/api/jobs").json() == {"jobs": []}, "a refused option must not upload anything"

    code, _, stderr = run(client, "status", "0" * 32)
    assert code == 2 and stderr.startswith("error: There is no job") and "GET /api/jobs" in stderr
    code, _, stderr = run(client, "submit", str(tmp_path / "missing"))
    assert code == 2 and "does not exist" in stderr
