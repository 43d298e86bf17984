"""The remove.bg door, in-process: every parameter with remove.bg's meaning, both answer formats, the headers,
the three input encodings, and every error in remove.bg's shape (issue 14)."""

from __future__ import annotations

import base64
import io
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from PIL import Image

from bgremove.core.errors import InvalidOption
from bgremove.core.options import RemovalOptions, parse_options
from bgremove.web.removebg import UNLIMITED, RemoveBgRequest, problem_for, translate, wants_json
from tests.conftest import encode, square_photo
from tests.removebg.conftest import KEY, SettingsFactory, alpha_of, blank, build_app, decode, error_of, photo, solid
from tests.web.conftest import GatedCache, running

PHOTO = photo()  # 400 x 300, subject at left 100, top 75, 200 x 150


def photo_of(index: int) -> bytes:
    """A photo of its own per index (the same one twice would share a forward pass)."""
    return encode(square_photo((120, 80 + index)), "PNG")


BOX = {"x-foreground-left": "100", "x-foreground-top": "75", "x-foreground-width": "200", "x-foreground-height": "150"}


def post(client: TestClient, **fields: Any) -> Any:
    """A multipart request with the photo as image_file and `fields` as text parts."""
    return client.post("/v1.0/removebg", files={"image_file": ("photo.png", PHOTO)}, data=fields)


# --- inputs and answers ----------------------------------------------------------------------------------------


def test_multipart_upload_answers_the_image_with_remove_bg_headers(client: TestClient) -> None:
    response = post(client)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"  # format=auto with transparency -> PNG
    assert response.headers["x-width"] == "400" and response.headers["x-height"] == "300"
    assert response.headers["x-credits-charged"] == "0" and response.headers["x-type"] == "other"
    assert {name: response.headers[name] for name in BOX} == BOX
    image = decode(response.content)
    assert image.mode == "RGBA" and image.size == (400, 300)
    assert alpha_of(image)[0, 0] == 0 and alpha_of(image)[150, 200] > 250


def test_json_body_base64_json_booleans_and_a_json_answer(client: TestClient) -> None:
    body = {
        "image_file_b64": base64.b64encode(PHOTO).decode(),
        "crop": True,
        "add_shadow": False,
        "semitransparency": False,
        "type": "person",
        "type_level": 2,
        "size": "full",
        "format": "png",
    }
    response = client.post("/v1.0/removebg", json=body, headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    data = response.json()["data"]
    assert set(data) == {"result_b64", "foreground_top", "foreground_left", "foreground_width", "foreground_height"}
    image = decode(base64.b64decode(data["result_b64"]))
    assert image.size == (200, 150)  # crop=true (a JSON boolean) cropped to the subject
    assert (data["foreground_left"], data["foreground_top"], data["foreground_width"], data["foreground_height"]) == (
        0,
        0,
        200,
        150,
    )
    assert response.headers["x-width"] == "200" and response.headers["x-foreground-width"] == "200"
    assert response.headers["x-type"] == "person"


def test_form_booleans_arrive_as_strings(client: TestClient) -> None:
    assert decode(post(client, crop="true").content).size == (200, 150)
    assert decode(post(client, crop="false").content).size == (400, 300)


def test_base64_in_a_form_with_a_data_url_prefix_and_line_breaks(client: TestClient) -> None:
    encoded = base64.encodebytes(PHOTO).decode()  # 76-character lines, as many tools write it
    response = client.post("/v1.0/removebg", data={"image_file_b64": "data:image/png;base64," + encoded})
    assert response.status_code == 200, response.text
    assert decode(response.content).size == (400, 300)


def test_urlencoded_form_is_accepted(client: TestClient) -> None:
    response = client.post(
        "/v1.0/removebg",
        content=f"image_file_b64={base64.urlsafe_b64encode(PHOTO).decode()}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("accept", "json_answer"),
    [
        ("application/json", True),
        ("application/json, */*;q=0.5", True),
        ("application/json, text/plain, */*", False),  # axios's default: remove.bg's axios example expects the image
        ("image/*", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_accept_decides_between_json_and_image(accept: str, json_answer: bool) -> None:
    assert wants_json(accept) is json_answer


# --- every parameter, with remove.bg's meaning ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (None, "preview"),
        ("preview", "preview"),
        ("small", "preview"),
        ("regular", "preview"),
        ("medium", "medium"),
        ("hd", "hd"),
        ("full", "full"),
        ("4k", "full"),
        ("50MP", "full"),
        ("50mp", "full"),
        ("auto", "full"),
        ("HD", "hd"),
    ],
)
def test_size_names_translate_to_the_schema(size: str | None, expected: str) -> None:
    """remove.bg's default is preview; small/regular are preview; 4k/50MP/auto are the input resolution here."""
    fields = {"image_url": "https://example.invalid/p.png"} | ({"size": size} if size else {})
    assert translate(RemoveBgRequest(fields, {})).options.size == expected


MIDDLE = encode(square_photo((800, 600)), "PNG")  # 0.48 MP: above preview's 0.25 MP


@pytest.mark.parametrize(("size", "megapixels"), [(None, 0.25), ("4k", 0.48)])
def test_size_reaches_the_pipeline(client: TestClient, size: str | None, megapixels: float) -> None:
    fields = {"size": size} if size else {}
    response = client.post("/v1.0/removebg", files={"image_file": ("middle.png", MIDDLE)}, data=fields)
    assert response.status_code == 200, response.text
    width, height = decode(response.content).size
    assert (width, height) == (int(response.headers["x-width"]), int(response.headers["x-height"]))
    assert megapixels * 0.97 <= width * height / 1_000_000 <= megapixels * 1.001  # the largest under the budget
    assert abs(width / height - 4 / 3) < 0.01


def test_format_jpg_is_opaque_on_white(client: TestClient) -> None:
    response = post(client, format="jpg")
    assert response.headers["content-type"] == "image/jpeg"
    image = decode(response.content)
    assert image.mode == "RGB" and min(image.getpixel((0, 0))) >= 250  # type: ignore[arg-type]


def test_format_auto_is_jpg_when_a_background_makes_it_opaque(client: TestClient) -> None:
    assert post(client, bg_color="81d4fa").headers["content-type"] == "image/jpeg"
    assert post(client).headers["content-type"] == "image/png"


def test_format_webp_keeps_alpha(client: TestClient) -> None:
    response = post(client, format="webp")
    assert response.headers["content-type"] == "image/webp"
    image = decode(response.content)
    assert image.mode == "RGBA" and alpha_of(image)[0, 0] == 0 and alpha_of(image)[150, 200] > 250


def test_format_zip_has_colour_and_alpha_of_the_same_size(client: TestClient) -> None:
    response = post(client, format="zip")
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        colour, alpha = (decode(archive.read(name)) for name in ("color.jpg", "alpha.png"))
    assert colour.size == alpha.size == (400, 300)


def test_channels_alpha_is_the_mask(client: TestClient) -> None:
    image = decode(post(client, channels="alpha", format="png").content)
    assert image.mode == "L" and image.getpixel((0, 0)) == 0 and image.getpixel((200, 150)) > 250  # type: ignore[operator]


def test_bg_color_fills_the_background(client: TestClient) -> None:
    image = decode(post(client, bg_color="#ff0000", format="png").content).convert("RGBA")
    assert image.getpixel((0, 0)) == (255, 0, 0, 255)


def test_bg_image_file_lies_behind_the_subject(client: TestClient) -> None:
    files = {"image_file": ("photo.png", PHOTO), "bg_image_file": ("bg.png", solid((0, 200, 0), (50, 50)))}
    response = client.post("/v1.0/removebg", files=files, data={"format": "png"})
    assert response.status_code == 200, response.text
    image = decode(response.content).convert("RGB")
    assert image.getpixel((0, 0)) == (0, 200, 0)
    assert np.abs(np.asarray(image)[150, 200].astype(int) - 235).max() <= 3  # the subject stays in front


def test_roi_limits_the_foreground(client: TestClient) -> None:
    response = post(client, roi="0% 0% 50% 100%")
    assert int(response.headers["x-foreground-left"]) + int(response.headers["x-foreground-width"]) <= 200
    assert alpha_of(decode(response.content))[150, 250] == 0


def test_crop_margin_adds_around_the_subject(client: TestClient) -> None:
    response = post(client, crop="true", crop_margin="10px")
    assert decode(response.content).size == (220, 170)
    assert (response.headers["x-foreground-left"], response.headers["x-foreground-top"]) == ("10", "10")


def test_scale_centres_the_subject_unless_a_position_is_given(client: TestClient) -> None:
    """remove.bg: scaling implies position=center; 80% of the canvas along the limiting side."""
    centred = post(client, scale="80%")
    left, width = int(centred.headers["x-foreground-left"]), int(centred.headers["x-foreground-width"])
    assert abs(width - 320) <= 2 and abs(left - 40) <= 2
    corner = post(client, scale="50%", position="0% 0%")
    assert (corner.headers["x-foreground-left"], corner.headers["x-foreground-top"]) == ("0", "0")


def test_position_alone_moves_the_subject(client: TestClient) -> None:
    response = post(client, position="100% 100%")
    assert int(response.headers["x-foreground-left"]) + int(response.headers["x-foreground-width"]) == 400
    assert int(response.headers["x-foreground-top"]) + int(response.headers["x-foreground-height"]) == 300


def test_add_shadow_darkens_only_below_the_subject(client: TestClient) -> None:
    plain, shadowed = (alpha_of(decode(post(client, add_shadow=flag).content)) for flag in ("false", "true"))
    assert shadowed[228:240, 110:290].astype(int).sum() > plain[228:240, 110:290].astype(int).sum()
    assert int(shadowed[:70].sum()) == int(plain[:70].sum()) == 0


@pytest.mark.parametrize(
    ("sent", "x_type"),
    [
        ({}, "other"),
        ({"type": "product"}, "product"),
        ({"type": "car", "type_level": "latest"}, "car"),
        ({"type": "person", "type_level": "none"}, None),
    ],
)
def test_type_is_reported_back_and_type_level_none_drops_it(client: TestClient, sent: dict[str, str], x_type: str | None) -> None:
    response = post(client, **sent)
    assert response.status_code == 200
    assert response.headers.get("x-type") == x_type


def test_semitransparency_is_accepted_and_changes_nothing(client: TestClient) -> None:
    answers = [post(client, semitransparency=value) for value in ("true", "false")]
    assert [answer.status_code for answer in answers] == [200, 200]
    assert answers[0].content == answers[1].content


def test_unknown_parameters_are_ignored_and_listed(client: TestClient) -> None:
    response = post(client, shadow_type="drop", image_filename="x.png")
    assert response.status_code == 200
    assert response.headers["x-ignored-parameters"] == "image_filename,shadow_type"
    assert "x-ignored-parameters" not in post(client).headers


def test_every_schema_option_is_accepted_not_ignored(client: TestClient) -> None:
    """Driven from THE schema: every option (its default, as a form sends it) goes through /v1.0, none is dropped."""
    defaults = {
        name: str(spec.default).lower() if isinstance(spec.default, bool) else str(spec.default)
        for name, spec in RemovalOptions.model_fields.items()
        if spec.default is not None
    }
    response = post(client, **defaults)
    assert response.status_code == 200, response.text
    assert "x-ignored-parameters" not in response.headers


def test_quality_extension_reaches_the_encoder(client: TestClient) -> None:
    low, high = (len(post(client, format="jpg", quality=q).content) for q in ("20", "95"))
    assert low < high


# --- errors, in remove.bg's shape ---------------------------------------------------------------------------------


BAD_VALUES = {
    "size": "huge",
    "format": "gif",
    "channels": "rgb",
    "crop": "maybe",
    "crop_margin": "80%",
    "scale": "0%",
    "position": "left",
    "roi": "1 2 3",
    "bg_color": "notacolour",
    "add_shadow": "sometimes",
    "quality": "101",
    "decontaminate": "perhaps",
}


@pytest.mark.parametrize(("name", "value"), sorted(BAD_VALUES.items()))
def test_bad_values_get_the_schema_wording_and_remove_bg_codes(client: TestClient, name: str, value: str) -> None:
    """The same message as every other door (parse_options), under remove.bg's `invalid_<name>` code."""
    with pytest.raises(InvalidOption) as expected:
        parse_options({name: value})
    error = error_of(post(client, **{name: value}), 400)
    assert error["code"] == f"invalid_{name}"
    assert error["title"] == expected.value.message
    assert error["detail"] == expected.value.hint or (name == "size" and "4k" in error["detail"])


@pytest.mark.parametrize(("name", "value"), [("type", "spaceship"), ("type_level", "3"), ("semitransparency", "kinda")])
def test_bad_remove_bg_only_values(client: TestClient, name: str, value: str) -> None:
    error = error_of(post(client, **{name: value}), 400)
    assert error["code"] == f"invalid_{name}" and value in error["title"] and error["detail"]


def test_missing_image(client: TestClient) -> None:
    for response in (
        client.post("/v1.0/removebg", data={"size": "hd"}),
        client.post("/v1.0/removebg", json={}),
        client.post("/v1.0/removebg"),
    ):
        error = error_of(response, 400)
        assert error["code"] == "missing_source" and "image_file_b64" in error["detail"]


def test_two_image_sources_and_two_backgrounds_are_refused(client: TestClient) -> None:
    error = error_of(post(client, image_url="https://example.invalid/a.png"), 400)
    assert error["code"] == "multiple_sources"
    error = error_of(
        client.post(
            "/v1.0/removebg", files={"image_file": ("p.png", PHOTO), "bg_image_file": ("b.png", PHOTO)}, data={"bg_color": "fff"}
        ),
        400,
    )
    assert error["code"] == "multiple_bg_sources"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"this is not an image at all", "invalid_file_type"),
        (PHOTO[: len(PHOTO) // 2], "failed_to_read_image"),
    ],
)
def test_unreadable_images(client: TestClient, data: bytes, code: str) -> None:
    response = client.post("/v1.0/removebg", files={"image_file": ("photo.png", data)})
    assert error_of(response, 400)["code"] == code


def test_bad_base64(client: TestClient) -> None:
    assert error_of(client.post("/v1.0/removebg", json={"image_file_b64": "!!not base64!!"}), 400)["code"] == (
        "failed_to_read_image"
    )


def test_image_file_as_text_is_refused(client: TestClient) -> None:
    error = error_of(client.post("/v1.0/removebg", data={"image_file": "photo.png"}), 400)
    assert error["code"] == "invalid_image_file" and "file upload" in error["title"]


@pytest.mark.parametrize(
    ("content", "content_type"), [(b"{not json", "application/json"), (b"[1, 2]", "application/json"), (b"<xml/>", "text/xml")]
)
def test_unreadable_bodies(client: TestClient, content: bytes, content_type: str) -> None:
    error = error_of(client.post("/v1.0/removebg", content=content, headers={"Content-Type": content_type}), 400)
    assert error["code"] == "invalid_request"


def test_no_subject_is_unknown_foreground(client: TestClient) -> None:
    """The pipeline's no-subject signal (foreground_found=false) is remove.bg's unknown_foreground."""
    error = error_of(client.post("/v1.0/removebg", files={"image_file": ("wall.png", blank())}), 400)
    assert error["code"] == "unknown_foreground" and "foreground" in error["title"]


def test_unknown_model_extension_is_a_400(client: TestClient) -> None:
    error = error_of(post(client, model="no-such-model"), 400)
    assert "no-such-model" in error["title"] and error["detail"]


def test_file_too_large(client: TestClient) -> None:
    """MAX_IMAGE_SIZE_MB=1: a 1.2 MB upload is read and refused; a body past the door's limit is never read."""
    noise = np.random.default_rng(0).integers(0, 255, (700, 700, 3), dtype=np.uint8)
    large = encode(Image.fromarray(noise), "PNG")
    assert 1_048_576 < len(large) < 2_000_000
    assert error_of(client.post("/v1.0/removebg", files={"image_file": ("big.png", large)}), 400)["code"] == "file_too_large"
    huge = b"x" * 4_000_000
    error = error_of(client.post("/v1.0/removebg", content=huge, headers={"Content-Type": "application/json"}), 400)
    assert error["code"] == "file_too_large"


def test_404_and_405_have_remove_bg_shape(client: TestClient) -> None:
    assert error_of(client.get("/v1.0/nothing-here"), 404)["code"] == "not_found"
    response = client.get("/v1.0/removebg")
    assert error_of(response, 405)["code"] == "method_not_allowed" and response.headers["allow"] == "POST"


def test_fastapi_validation_errors_map_to_remove_bg_shape() -> None:
    """The route class answers FastAPI's own validation errors too (none reach the native handlers)."""
    error = {"type": "literal_error", "loc": ("body", "size"), "msg": "Input should be 'preview'", "input": "huge"}
    problem = problem_for(RequestValidationError([error]))
    assert problem.status == 400 and problem.code == "invalid_parameter" and "size='huge'" in problem.title


# --- account, auth, admission, OpenAPI ---------------------------------------------------------------------------


def test_account_has_remove_bg_shape_with_unlimited_credits(client: TestClient) -> None:
    attributes = client.get("/v1.0/account").json()["data"]["attributes"]
    assert attributes["credits"] == {"total": UNLIMITED, "subscription": 0, "payg": 0, "enterprise": UNLIMITED}
    assert attributes["api"] == {"free_calls": UNLIMITED, "sizes": "all"}


def test_api_keys_answer_403_auth_failed(removebg_settings: SettingsFactory) -> None:
    with running(build_app(removebg_settings(API_KEYS=KEY))) as keyed:
        missing = error_of(keyed.post("/v1.0/removebg", files={"image_file": ("p.png", PHOTO)}), 403)
        assert missing["code"] == "auth_failed" and missing["title"] == "Missing API Key"
        wrong = error_of(keyed.get("/v1.0/account", headers={"X-Api-Key": "not-the-key-at-all"}), 403)
        assert wrong["code"] == "auth_failed" and wrong["title"] == "Invalid API Key"
        assert error_of(keyed.get("/v1.0/nothing"), 403)["code"] == "auth_failed"
        for headers in ({"X-Api-Key": KEY}, {"x-api-key": KEY}, {"Authorization": f"Bearer {KEY}"}):
            assert keyed.post("/v1.0/removebg", files={"image_file": ("p.png", PHOTO)}, headers=headers).status_code == 200
            assert keyed.get("/v1.0/account", headers=headers).status_code == 200
        native = keyed.post("/api/remove", files={"file": ("p.png", PHOTO)})
        assert native.status_code == 401 and set(native.json()) == {"detail", "hint"}  # /api keeps its own shape


def test_full_queue_answers_429_with_retry_after_and_drains(removebg_settings: SettingsFactory) -> None:
    """One inference slot and a queue of one: with two requests held inside, the third is refused at once."""
    settings = removebg_settings(MAX_CONCURRENT_INFERENCES="1", MAX_QUEUE_SIZE="1")
    cache = GatedCache(settings)
    with running(build_app(settings, cache)) as gated, ThreadPoolExecutor(2) as pool:
        # two different photos: requests for one photo share a single forward pass (the prediction cache)
        held = [pool.submit(gated.post, "/v1.0/removebg", files={"image_file": ("p.png", photo_of(i))}) for i in range(2)]
        assert cache.entered.acquire(timeout=30)  # one request is inside the model ...
        while cache.waiting < 1:  # ... and one waits for the slot
            threading.Event().wait(0.01)
        refused = post(gated)
        error = error_of(refused, 429)
        assert error["code"] == "rate_limit_exceeded" and refused.headers["retry-after"] == "5"
        assert gated.get("/v1.0/account").status_code == 200  # the account is never queued
        cache.gate.set()
        assert [future.result().status_code for future in held] == [200, 200]
        assert post(gated).status_code == 200


def test_openapi_documents_both_endpoints_under_their_own_tag(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    removebg, account = spec["paths"]["/v1.0/removebg"]["post"], spec["paths"]["/v1.0/account"]["get"]
    assert removebg["tags"] == account["tags"] == ["remove.bg compatible"]
    content = removebg["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/x-www-form-urlencoded", "application/json"}
    multipart = content["multipart/form-data"]["schema"]["properties"]
    assert {
        "image_file",
        "image_file_b64",
        "image_url",
        "bg_image_file",
        "bg_image_url",
        "size",
        "type",
        "type_level",
        "semitransparency",
    } <= set(multipart)
    assert set(RemovalOptions.model_fields) <= set(multipart)
    assert "4k" in multipart["size"]["enum"] and multipart["size"]["default"] == "preview"
    assert multipart["format"]["default"] == "auto"
    assert {"400", "403", "429"} <= set(removebg["responses"])
    assert "image_file" not in content["application/json"]["schema"]["properties"]
