"""/api/jobs in-process: submit, poll, fetch, cancel, delete, keys, limits, a corrupt file, early result."""

from __future__ import annotations

import concurrent.futures
import io
import json
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import zip_of
from tests.jobs.conftest import ClientFactory, GatedCache, image_parts, leftovers, photo, read_result, wait_for

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"


def test_submit_poll_fetch_round_trip(jobs_client: ClientFactory, tmp_path: Path) -> None:
    client = jobs_client()
    answer = client.post("/api/jobs", files=image_parts(3), data={"format": "webp", "crop": "true"})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert set(job) == {"id", "status", "total", "status_url", "result_url"}
    assert job["status"] == "queued" and job["total"] == 3
    assert job["status_url"].endswith(f"/api/jobs/{job['id']}")
    assert answer.headers["location"] == job["status_url"]

    final = wait_for(client, job["id"])
    assert final["status"] == "done"
    assert (final["total"], final["done"], final["failed"]) == (3, 3, 0)
    assert {"created", "updated", "items"} <= set(final)
    assert [item["filename"] for item in final["items"]] == ["img00.png", "img01.png", "img02.png"]
    assert all(item["status"] == "completed" and item["output"].endswith(".webp") for item in final["items"])

    files, manifest = read_result(client.get(job["result_url"]))
    assert sorted(files) == ["img00.webp", "img01.webp", "img02.webp"]
    assert (manifest["count"], manifest["completed"], manifest["failed"]) == (3, 3, 0)
    assert [entry["filename"] for entry in manifest["items"]] == ["img00.png", "img01.png", "img02.png"]
    for name, data in files.items():
        image = Image.open(io.BytesIO(data))
        assert image.format == "WEBP", name
        assert image.size != (96, 64), "crop=true was not applied"  # the subject is the centre half

    listed = client.get("/api/jobs").json()["jobs"]
    assert [entry["id"] for entry in listed] == [job["id"]]


def test_zip_and_folders_keep_their_paths(jobs_client: ClientFactory) -> None:
    client = jobs_client()
    archive = zip_of({"shop/a.png": photo(1), "shop/b.png": photo(2), "__MACOSX/._a.png": b"junk"})
    job = client.post("/api/jobs", files=[("files", ("photos.zip", archive, "application/zip"))]).json()
    assert job["total"] == 2
    wait_for(client, job["id"])
    files, _ = read_result(client.get(f"/api/jobs/{job['id']}/result"))
    assert sorted(files) == ["shop/a.png", "shop/b.png"]


def test_corrupt_file_fails_that_item_only(jobs_client: ClientFactory) -> None:
    client = jobs_client()
    parts = image_parts(2)
    parts.insert(1, ("files", ("broken.jpg", b"\xff\xd8\xff\xe0 this is not really a jpeg", "image/jpeg")))
    job = client.post("/api/jobs", files=parts).json()
    final = wait_for(client, job["id"])
    assert final["status"] == "done"
    assert (final["done"], final["failed"]) == (3, 1)
    broken = final["items"][1]
    assert broken["filename"] == "broken.jpg" and broken["status"] == "failed"
    assert broken["error"] and broken["hint"]
    files, manifest = read_result(client.get(f"/api/jobs/{job['id']}/result"))
    assert sorted(files) == ["img00.png", "img01.png"]
    assert [entry["status"] for entry in manifest["items"]] == ["completed", "failed", "completed"]
    assert manifest["items"][1]["hint"] == broken["hint"]


def test_result_before_the_job_ends_is_409_with_a_hint(jobs_settings: Any) -> None:
    from tests.jobs.server import build_app

    app = build_app(jobs_settings())
    with TestClient(app) as client:
        app.state.jobs.stop()  # no workers: the job stays queued, deterministically
        job = client.post("/api/jobs", files=image_parts(2)).json()
        answer = client.get(f"/api/jobs/{job['id']}/result")
        assert answer.status_code == 409
        body = answer.json()
        assert set(body) == {"detail", "hint"} and "queued" in body["detail"] and "status_url" in body["hint"]
        assert client.get(f"/api/jobs/{job['id']}").json()["items"][0]["status"] == "pending"


def test_cancel_stops_within_one_item_and_keeps_done_files(jobs_client: ClientFactory, jobs_settings: Any) -> None:
    cache = GatedCache(jobs_settings())
    client = jobs_client(cache)
    job = client.post("/api/jobs", files=image_parts(6)).json()
    assert cache.entered.acquire(timeout=30), "the job never started its first file"
    cancelled = client.delete(f"/api/jobs/{job['id']}")  # while the first file is inside the model
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["done"]) == ("cancelled", 0)
    cache.gate.set()  # from now on every file could run: only the cancel stops them
    client.app.state.jobs.stop()  # returns once the worker has left the job

    final = client.get(f"/api/jobs/{job['id']}").json()
    assert (final["status"], final["done"], final["failed"]) == ("cancelled", 1, 0)
    assert [item["status"] for item in final["items"]] == ["completed"] + ["cancelled"] * 5
    files, manifest = read_result(client.get(f"/api/jobs/{job['id']}/result"))  # the file done stays available
    assert sorted(files) == ["img00.png"]
    assert (manifest["count"], manifest["completed"], manifest["failed"]) == (6, 1, 5)
    assert "cancelled" in manifest["items"][-1]["error"] and manifest["items"][-1]["hint"]

    deleted = client.delete(f"/api/jobs/{job['id']}")  # the second DELETE deletes
    assert deleted.json() == {"id": job["id"], "status": "deleted"}
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404
    data_dir = client.app.state.settings.data_dir
    assert not (data_dir / "jobs" / job["id"]).exists()
    assert leftovers(data_dir) == []


def test_two_keys_are_isolated(jobs_client: ClientFactory) -> None:
    client = jobs_client(API_KEYS=f"{KEY_A},{KEY_B}")
    a, b = {"X-API-Key": KEY_A}, {"Authorization": f"Bearer {KEY_B}"}
    job = client.post("/api/jobs", files=image_parts(1), headers=a).json()
    wait_for(client, job["id"], headers=a)
    for method, path in [("GET", ""), ("GET", "/result"), ("DELETE", "")]:
        answer = client.request(method, f"/api/jobs/{job['id']}{path}", headers=b)
        assert answer.status_code == 404, (method, path)
        assert set(answer.json()) == {"detail", "hint"}
    assert client.get("/api/jobs", headers=b).json() == {"jobs": []}
    assert [entry["id"] for entry in client.get("/api/jobs", headers=a).json()["jobs"]] == [job["id"]]
    assert client.get("/api/jobs").status_code == 401
    assert client.get("/api/jobs", headers={"X-API-Key": "wrong-key-0123456789"}).status_code == 401
    assert client.get(f"/api/jobs/{job['id']}/result", headers=a).status_code == 200
    database = (client.app.state.settings.data_dir / "jobs.sqlite3").read_bytes()
    assert KEY_A.encode() not in database and KEY_B.encode() not in database


def test_twenty_jobs_at_once_are_accepted_or_refused_cleanly(jobs_client: ClientFactory) -> None:
    client = jobs_client(MAX_QUEUE_SIZE="6", JOB_DISK_QUOTA_MB="0.3")
    uploads = [image_parts(2, prefix=f"job{number}-") for number in range(20)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda parts: client.post("/api/jobs", files=parts), uploads))
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {202, 429, 507}, statuses
    assert 202 in statuses and statuses.count(202) <= 6
    assert {429, 507} & set(statuses), "20 jobs on a queue of 6 were all accepted"
    for answer in answers:
        if answer.status_code != 202:
            body = answer.json()
            assert set(body) == {"detail", "hint"} and body["hint"]
            assert "retry-after" in answer.headers
    for answer in answers:
        if answer.status_code == 202:
            assert wait_for(client, answer.json()["id"])["status"] == "done"


def test_disk_quota_refuses_with_507(jobs_client: ClientFactory) -> None:
    client = jobs_client(JOB_DISK_QUOTA_MB="0.001")  # 1 KB: less than 8 photos
    answer = client.post("/api/jobs", files=image_parts(8))
    assert answer.status_code == 507
    body = answer.json()
    assert "JOB_DISK_QUOTA_MB" in body["hint"]
    assert client.get("/api/jobs").json() == {"jobs": []}
    assert list((client.app.state.settings.data_dir / "jobs").iterdir()) == []


def test_bad_requests_answer_in_the_api_shape(jobs_client: ClientFactory) -> None:
    client = jobs_client()
    bad_option = client.post("/api/jobs", files=image_parts(1), data={"quality": "500"})
    assert bad_option.status_code == 422 and "quality" in bad_option.json()["detail"]
    assert bad_option.json()["hint"] == "Use a whole number from 1 to 100."
    unknown = client.post("/api/jobs", files=image_parts(1), data={"bg_colour": "red"})
    assert unknown.status_code == 422 and "bg_colour" in unknown.json()["detail"]
    model = client.post("/api/jobs", files=image_parts(1), data={"model": "no-such-model"})
    assert model.status_code == 422 and "no-such-model" in model.json()["detail"]
    callback = client.post("/api/jobs", files=image_parts(1), data={"callback_url": "http://127.0.0.1:9/hook"})
    assert callback.status_code == 400
    assert "loopback" in callback.json()["detail"] and "URL_ALLOW_PRIVATE_NETWORKS" in callback.json()["hint"]
    not_a_zip = client.post("/api/jobs", files=[("files", ("x.zip", b"PK\x03\x04broken", "application/zip"))])
    assert not_a_zip.status_code == 400 and not_a_zip.json()["hint"]
    assert client.post("/api/jobs").status_code == 422
    assert client.get("/api/jobs/not-an-id").status_code == 404
    assert client.get("/api/jobs/" + "0" * 32).json()["hint"]
    assert client.get("/api/jobs").json() == {"jobs": []}


def test_callback_is_posted_once_when_the_job_ends(jobs_client: ClientFactory) -> None:
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        client = jobs_client(URL_ALLOW_PRIVATE_NETWORKS="true", runner_options={"sweep_seconds": 0.1})
        url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
        job = client.post("/api/jobs", files=image_parts(2), data={"callback_url": url}).json()
        wait_for(client, job["id"])
        deadline = time.monotonic() + 30
        while not received:
            assert time.monotonic() < deadline, "the callback never came"
            time.sleep(0.05)
        time.sleep(0.5)  # several janitor rounds: a second post would have arrived by now
    finally:
        hook.shutdown()
    assert received == [{"id": job["id"], "status": "done", "total": 2, "done": 2, "failed": 0}]


def test_bg_image_applies_to_every_file(jobs_client: ClientFactory) -> None:
    client = jobs_client()
    background = io.BytesIO()
    Image.new("RGB", (50, 50), (0, 0, 255)).save(background, "PNG")
    job = client.post(
        "/api/jobs",
        files=[*image_parts(2), ("bg_image", ("blue.png", background.getvalue(), "image/png"))],
        data={"format": "jpg"},
    ).json()
    assert wait_for(client, job["id"])["status"] == "done"
    files, _ = read_result(client.get(f"/api/jobs/{job['id']}/result"))
    corner = Image.open(io.BytesIO(files["img00.jpg"])).convert("RGB").getpixel((2, 2))
    assert corner[2] > 200 and corner[0] < 60, corner


def test_result_zip_layout_matches_the_batch_zip(jobs_client: ClientFactory) -> None:
    client = jobs_client()
    job = client.post("/api/jobs", files=image_parts(2)).json()
    wait_for(client, job["id"])
    answer = client.get(f"/api/jobs/{job['id']}/result")
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert archive.namelist()[-1] == "manifest.json"
    assert answer.headers["x-batch-count"] == "2" and answer.headers["x-batch-completed"] == "2"
