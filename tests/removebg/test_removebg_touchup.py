"""The remove.bg door's touch-up extension: `keep_mask_file` / `remove_mask_file` multipart parts fix the
cutout, reuse the photo's prediction, and a bad hint gets remove.bg's error shape."""

from __future__ import annotations

import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from tests.touchup_cases import LEFTOVER, MISSED, region_alpha, touchup_case


def _alpha(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).getchannel("A"))


def test_hint_parts_fix_the_cutout_without_running_the_model_again(client: TestClient) -> None:
    case = touchup_case()
    predictions = client.app.state.cache.predictions  # type: ignore[attr-defined]
    form = {"size": "full", "format": "png"}
    first = client.post("/v1.0/removebg", data=form, files={"image_file": ("p.png", case.photo, "image/png")})
    assert first.status_code == 200, first.text
    misses = predictions.misses
    touched = client.post(
        "/v1.0/removebg",
        data=form,
        files={
            "image_file": ("p.png", case.photo, "image/png"),
            "keep_mask_file": ("keep.png", case.keep_mask, "image/png"),
            "remove_mask_file": ("remove.png", case.remove_mask, "image/png"),
        },
    )
    assert touched.status_code == 200, touched.text
    assert predictions.misses == misses
    before, after = _alpha(first.content), _alpha(touched.content)
    assert region_alpha(before, MISSED) < 0.5 and region_alpha(after, MISSED) > 0.95
    assert region_alpha(before, LEFTOVER) > 0.9 and region_alpha(after, LEFTOVER) < 0.05


def test_a_bad_hint_gets_remove_bgs_error_shape(client: TestClient) -> None:
    case = touchup_case()
    response = client.post(
        "/v1.0/removebg",
        files={"image_file": ("p.png", case.photo, "image/png"), "keep_mask_file": ("k.png", b"not an image", "image/png")},
    )
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["code"] == "invalid_parameter" and "keep_mask" in error["title"] and error["detail"]


def test_a_hint_sent_as_text_is_refused(client: TestClient) -> None:
    case = touchup_case()
    response = client.post(
        "/v1.0/removebg", data={"remove_mask_file": "strokes"}, files={"image_file": ("p.png", case.photo, "image/png")}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "invalid_remove_mask_file"
