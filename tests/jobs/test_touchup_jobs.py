"""POST /api/jobs with touch-up hints: a one-photo job applies the strokes (reusing a cached prediction), a job of
several photos with hints and a bad hint are refused with 400 {detail, hint}."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.jobs.conftest import ClientFactory, read_result, wait_for
from tests.touchup_cases import LEFTOVER, MISSED, region_alpha, touchup_case


def test_a_one_photo_job_applies_the_strokes_without_running_the_model_again(jobs_client: ClientFactory) -> None:
    client, case = jobs_client(), touchup_case()
    first = client.post("/api/jobs", files=[("files", ("p.png", case.photo, "image/png"))])
    assert first.status_code == 202, first.text
    assert wait_for(client, first.json()["id"])["status"] == "done"
    plain, _ = read_result(client.get(first.json()["result_url"]))
    predictions = client.app.state.cache.predictions
    misses = predictions.misses
    answer = client.post(
        "/api/jobs",
        files=[
            ("files", ("p.png", case.photo, "image/png")),
            ("keep_mask", ("keep.png", case.keep_mask, "image/png")),
            ("remove_mask", ("remove.png", case.remove_mask, "image/png")),
        ],
    )
    assert answer.status_code == 202, answer.text
    assert wait_for(client, answer.json()["id"])["status"] == "done"
    files, manifest = read_result(client.get(answer.json()["result_url"]))
    assert manifest["completed"] == 1
    assert predictions.misses == misses
    before = np.asarray(Image.open(io.BytesIO(plain["p.png"])).getchannel("A"))
    after = np.asarray(Image.open(io.BytesIO(files["p.png"])).getchannel("A"))
    assert region_alpha(before, MISSED) < 0.5 and region_alpha(after, MISSED) > 0.95
    assert region_alpha(before, LEFTOVER) > 0.9 and region_alpha(after, LEFTOVER) < 0.05


def test_hints_with_several_photos_are_refused(jobs_client: ClientFactory) -> None:
    client, case = jobs_client(), touchup_case()
    answer = client.post(
        "/api/jobs",
        files=[
            ("files", ("a.png", case.photo, "image/png")),
            ("files", ("b.png", case.photo, "image/png")),
            ("keep_mask", ("keep.png", case.keep_mask, "image/png")),
        ],
    )
    assert answer.status_code == 400
    body = answer.json()
    assert body["detail"] == "keep_mask is drawn over one photo, but the job has 2 images." and body["hint"]
    assert client.get("/api/jobs").json()["jobs"] == []


def test_a_bad_hint_fails_the_item_with_its_reason(jobs_client: ClientFactory) -> None:
    client, case = jobs_client(), touchup_case()
    answer = client.post(
        "/api/jobs",
        files=[("files", ("p.png", case.photo, "image/png")), ("remove_mask", ("r.png", b"no image", "image/png"))],
    )
    assert answer.status_code == 202, answer.text
    final = wait_for(client, answer.json()["id"])
    (item,) = final["items"]
    assert item["status"] == "failed" and "remove_mask is not a supported image" in item["error"] and item["hint"]
