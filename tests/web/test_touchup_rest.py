"""/api/remove with touch-up hints: a keep stroke brings back what the model dropped, a remove stroke takes away
what it kept, a bad hint is a 400 {detail, hint}, and a touch-up after a first request does not run the model."""

from __future__ import annotations

import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import encode
from tests.touchup_cases import LEFTOVER, MISSED, SUBJECT, region_alpha, touchup_case


def _alpha(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).getchannel("A"))


def test_strokes_fix_the_cutout_without_running_the_model_again(api: TestClient) -> None:
    case = touchup_case()
    predictions = api.app.state.cache.predictions  # type: ignore[attr-defined]
    first = api.post("/api/remove", files={"file": ("p.png", case.photo, "image/png")})
    assert first.status_code == 200, first.text
    misses = predictions.misses
    touched = api.post(
        "/api/remove",
        files={
            "file": ("p.png", case.photo, "image/png"),
            "keep_mask": ("keep.png", case.keep_mask, "image/png"),
            "remove_mask": ("remove.png", case.remove_mask, "image/png"),
        },
    )
    assert touched.status_code == 200, touched.text
    assert predictions.misses == misses  # the photo's prediction came from the cache
    before, after = _alpha(first.content), _alpha(touched.content)
    assert region_alpha(before, MISSED) < 0.5 and region_alpha(after, MISSED) > 0.95
    assert region_alpha(before, LEFTOVER) > 0.9 and region_alpha(after, LEFTOVER) < 0.05
    np.testing.assert_array_equal(after[SUBJECT], before[SUBJECT])


def test_a_keep_stroke_alone_with_other_options(api: TestClient) -> None:
    case = touchup_case()
    response = api.post(
        "/api/remove",
        data={"channels": "alpha"},
        files={"file": ("p.png", case.photo, "image/png"), "keep_mask": ("k.png", case.keep_layer, "image/png")},
    )
    assert response.status_code == 200, response.text
    mask = np.asarray(Image.open(io.BytesIO(response.content)).convert("L"))
    assert region_alpha(mask, MISSED) > 0.95 and region_alpha(mask, LEFTOVER) > 0.9


def test_a_hint_that_is_not_an_image_is_a_400_with_a_hint(api: TestClient) -> None:
    case = touchup_case()
    response = api.post(
        "/api/remove", files={"file": ("p.png", case.photo, "image/png"), "remove_mask": ("r.png", b"strokes?", "image/png")}
    )
    assert response.status_code == 400
    body = response.json()
    assert "remove_mask" in body["detail"] and body["hint"]


def test_a_hint_of_another_shape_is_a_400_that_names_both_sizes(api: TestClient) -> None:
    case = touchup_case()
    square = encode(Image.new("L", (200, 200), 255), "PNG")
    response = api.post(
        "/api/remove", files={"file": ("p.png", case.photo, "image/png"), "keep_mask": ("k.png", square, "image/png")}
    )
    assert response.status_code == 400
    body = response.json()
    assert "200x200" in body["detail"] and "300x200" in body["detail"] and "photo" in body["hint"]
