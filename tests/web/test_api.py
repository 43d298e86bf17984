"""The native REST API in-process: routes and their order, the options of issue 13, every error code, zip input
hazards, /api/models and /api/health. The tiny model makes results predictable: bright pixels are foreground."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bgremove.core.fetch import PRIVATE_HINT
from bgremove.core.options import field_extra
from bgremove.web.app import create_app
from tests.conftest import REAL_MODEL_HOME, decode_png, encode, square_photo, zip_of
from tests.web.conftest import (
    FlakyCache,
    FlakyModel,
    HttpClient,
    HttpResponse,
    SettingsFactory,
    decode,
    read_zip,
    running,
    wait_ready,
)

FOREGROUND_KEYS = ("foreground_top", "foreground_left", "foreground_width", "foreground_height")


def post_image(client: HttpClient, data: bytes, name: str = "photo.png", **fields: str) -> HttpResponse:
    return client.post("/api/remove", files={"file": (name, data)}, data=fields)


def png_photo(size: tuple[int, int] = (200, 120)) -> bytes:
    """Dark with a bright centred rectangle (the subject): at 200x120 it is 100x60 at (50, 30)."""
    return encode(square_photo(size), "PNG")


# --- routes ---------------------------------------------------------------------------------------


def test_api_routes_are_not_shadowed_by_the_gradio_mount(module_settings: SettingsFactory) -> None:
    with running(create_app(module_settings())) as client:
        health = client.get("/api/health")
        assert health.headers["content-type"] == "application/json"
        body = health.json()
        assert body["ready"] is True and body["provider"]
        assert body["loaded_models"] == [body["default_model"]]
        assert "<html" in client.get("/").text.lower()  # Gradio at /
        assert client.get("/docs").status_code == 200 and client.get("/redoc").status_code == 200
        paths = set(client.get("/openapi.json").json()["paths"])
        assert {"/api/remove", "/api/remove/batch", "/api/models", "/api/health"} <= paths
        assert post_image(client, png_photo()).headers["content-type"] == "image/png"
        missing = client.get("/api/no-such-endpoint")  # would reach Gradio's app without the /api fallback
        assert missing.status_code == 404 and set(missing.json()) == {"detail", "hint"}


def test_models_lists_the_catalog_with_disk_state_licence_source_and_checksum(api: TestClient) -> None:
    body = api.get("/api/models").json()
    names = {row["name"]: row for row in body["models"]}
    assert "isnet-general-use" in names and "u2net" in names
    assert names["u2netp"]["on_disk"] is False and names["u2netp"]["size_mb"] > 0
    assert names["u2netp"]["sha256"] is None  # nothing on disk to hash
    for row in names.values():
        assert row["license"] and row["source"]


def test_health_reports_the_default_models_licence_source_and_checksum(
    module_settings: SettingsFactory, tiny_model: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    weights = home / "models" / "u2netp" / "u2netp.onnx"
    weights.parent.mkdir(parents=True)
    shutil.copyfile(tiny_model, weights)  # a catalog name, with weights bgremove does not recognise
    with running(create_app(module_settings(REMBG_SESSION_PATH=str(home), REMBG_MODEL_NAME="u2netp"), ui=False)) as client:
        health = client.get("/api/health").json()
        listed = {row["name"]: row for row in client.get("/api/models").json()["models"]}["u2netp"]
    info = health["default_model_info"]
    assert info["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest() == listed["sha256"]
    assert info["license"] == listed["license"] and info["source"] == listed["source"]
    assert health["status"] == "ready" and health["message"] and health["loaded_models"] == ["u2netp"]


def test_health_says_what_start_up_is_doing_before_the_model_is_ready(module_settings: SettingsFactory) -> None:
    client = TestClient(create_app(module_settings(), ui=False))  # no `with`: the lifespan (warm-up) never starts
    health = client.get("/api/health").json()
    assert health["ready"] is False and health["status"] == "starting" and health["message"]
    assert health["default_model_info"]["name"] == "tiny-u2net.onnx"
    assert health["loaded_models"] == []


# --- /api/remove: the image and its metadata --------------------------------------------------------


def test_remove_returns_png_with_metadata_headers(api: TestClient) -> None:
    response = post_image(api, encode(square_photo((160, 90)), "JPEG"), "My Photo.JPG")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert 'filename="My Photo.png"' in response.headers["content-disposition"]
    assert response.headers["x-image-width"] == "160" and response.headers["x-image-height"] == "90"
    assert response.headers["x-model"] == "tiny-u2net.onnx" and response.headers["x-format"] == "png"
    assert float(response.headers["x-processing-seconds"]) > 0
    assert 0.0 <= float(response.headers["x-confidence"]) <= 1.0 and response.headers["x-foreground-found"] == "true"
    box = [int(response.headers[f"x-foreground-{side}"]) for side in ("left", "top", "width", "height")]
    assert np.allclose(box, [40, 22, 80, 46], atol=2), box
    alpha = np.asarray(decode_png(response.content))[..., 3]
    assert alpha[45, 80] > 200 and alpha[0, 0] < 20


def test_a_photo_without_a_subject_says_so_and_sends_no_box(api: TestClient) -> None:
    response = post_image(api, encode(Image.new("RGB", (80, 60)), "PNG"), "dark.png")
    assert response.status_code == 200 and response.headers["x-foreground-found"] == "false"
    assert not any(f"x-{key.replace('_', '-')}" in response.headers for key in FOREGROUND_KEYS)


def test_mask_and_colour_options_are_applied(api: TestClient) -> None:
    mask = post_image(api, png_photo(), only_mask="true")
    assert decode_png(mask.content).mode == "L"
    assert decode_png(post_image(api, png_photo(), channels="alpha").content).mode == "L"
    filled = post_image(api, png_photo(), bg_color="#00ff00")
    assert tuple(np.asarray(decode_png(filled.content).convert("RGBA"))[0, 0]) == (0, 255, 0, 255)
    rgb = post_image(api, png_photo(), bg_color="10,20,30,40")
    assert tuple(np.asarray(decode_png(rgb.content))[0, 0]) == (10, 20, 30, 40)


def test_format_jpg_fills_the_background_colour(api: TestClient) -> None:
    response = post_image(api, png_photo(), "shoe.png", format="jpg", bg_color="ff0000")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert 'filename="shoe.jpg"' in response.headers["content-disposition"] and response.headers["x-format"] == "jpg"
    pixels = np.asarray(decode(response.content).convert("RGB")).astype(int)
    for corner in (pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]):
        assert np.abs(corner - (255, 0, 0)).max() <= 8, corner
    white = np.asarray(decode(post_image(api, png_photo(), format="jpg").content).convert("RGB")).astype(int)
    assert np.abs(white[0, 0] - 255).max() <= 8  # a JPG without a background gets a white one


def test_format_webp_keeps_alpha(api: TestClient) -> None:
    response = post_image(api, png_photo(), format="webp")
    assert response.status_code == 200 and response.headers["content-type"] == "image/webp"
    image = decode(response.content)
    assert image.format == "WEBP" and image.mode == "RGBA"
    alpha = np.asarray(image)[..., 3]
    assert alpha[0, 0] == 0 and alpha[60, 100] > 200


def test_format_zip_holds_colour_and_alpha_of_the_same_size(api: TestClient) -> None:
    response = post_image(api, png_photo(), "pair.png", format="zip")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert set(archive.namelist()) == {"color.jpg", "alpha.png"}
        color, alpha = decode(archive.read("color.jpg")), decode(archive.read("alpha.png"))
    assert color.size == alpha.size == (200, 120) and color.mode == "RGB" and alpha.mode == "L"
    cutout = np.asarray(decode(post_image(api, png_photo(), "pair.png").content))
    assert np.array_equal(np.asarray(alpha), cutout[..., 3])  # the cutout's own alpha, not an opaque square
    assert np.asarray(alpha)[0, 0] == 0 and np.asarray(alpha)[60, 100] == 255
    assert np.asarray(color)[0, 0].min() > 245 and np.asarray(color)[60, 100].max() < 245  # on white: the photo shows


def test_size_preview_stays_under_a_quarter_megapixel(api: TestClient) -> None:
    response = post_image(api, png_photo((1000, 800)), size="preview")
    image = decode(response.content)
    assert image.width * image.height <= 250_000 and abs(image.width / image.height - 1.25) < 0.01
    assert (response.headers["x-image-width"], response.headers["x-image-height"]) == (str(image.width), str(image.height))


def test_crop_gives_the_subject_box_plus_the_margin(api: TestClient) -> None:
    response = post_image(api, png_photo(), crop="true", crop_margin="10px")
    image = decode(response.content)
    assert image.size == (100 + 20, 60 + 20)
    box = {side: int(response.headers[f"x-foreground-{side}"]) for side in ("left", "top", "width", "height")}
    assert box == {"left": 10, "top": 10, "width": 100, "height": 60}
    rows, cols = np.nonzero(np.asarray(image)[..., 3] > 25)
    assert (cols.min(), rows.min(), cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min()) == (10, 10, 100, 60)


def test_bg_image_is_laid_behind_the_subject(api: TestClient) -> None:
    blue = encode(Image.new("RGB", (40, 30), (0, 0, 255)), "PNG")
    response = api.post("/api/remove", files={"file": ("p.png", png_photo()), "bg_image": ("bg.png", blue)})
    pixels = np.asarray(decode(response.content).convert("RGBA"))
    assert tuple(pixels[0, 0]) == (0, 0, 255, 255) and pixels[60, 100, 0] > 200  # the grey subject stays on top


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", "huge"),
        ("crop_margin", "80%"),
        ("bg_color", "notacolour"),
        ("scale", "0%"),
        ("quality", "101"),
        ("position", "left"),
    ],
)
def test_bad_option_values_are_422_with_the_schemas_hint(api: TestClient, field: str, value: str) -> None:
    response = post_image(api, png_photo(), **{field: value})
    assert response.status_code == 422, response.text
    assert response.json()["hint"] == field_extra(field)["hint"]
    assert response.json()["detail"].startswith(f"{field}={value!r} is not valid")


# --- /api/remove: where the image comes from ------------------------------------------------------


@pytest.fixture(scope="module")
def image_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A web server on 127.0.0.1 serving photo.png (and a 404 for anything else)."""
    root = tmp_path_factory.mktemp("site")
    (root / "photo.png").write_bytes(png_photo())

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_image_url_on_a_private_network_is_refused_with_the_setting_to_change(api: TestClient, image_site: str) -> None:
    response = api.post("/api/remove", data={"image_url": f"{image_site}/photo.png"})
    assert response.status_code == 400  # issue 14: a refused URL is a 400 that says why
    assert "loopback" in response.json()["detail"] and response.json()["hint"] == PRIVATE_HINT


def test_image_url_is_fetched_when_private_networks_are_allowed(module_settings: SettingsFactory, image_site: str) -> None:
    with running(create_app(module_settings(URL_ALLOW_PRIVATE_NETWORKS="true"), ui=False)) as client:
        response = client.post("/api/remove", data={"image_url": f"{image_site}/photo.png?v=2", "format": "webp"})
        missing = client.post("/api/remove", data={"image_url": f"{image_site}/gone.png"})
    assert response.status_code == 200, response.text
    assert 'filename="photo.webp"' in response.headers["content-disposition"]
    assert decode(response.content).size == (200, 120)
    assert missing.status_code == 400 and "404" in missing.json()["detail"] and missing.json()["hint"]


@pytest.mark.parametrize("fields", [{}, {"image_url": "https://example.com/a.png"}])
def test_exactly_one_of_file_and_image_url(api: TestClient, fields: dict[str, str]) -> None:
    files = {"file": ("p.png", png_photo())} if fields else None
    response = api.post("/api/remove", files=files, data=fields or {"size": "full"})
    assert response.status_code == 422
    assert "image_url" in response.json()["hint"] and "file" in response.json()["hint"]


# --- /api/remove: refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "says"),
    [
        (b"GIF89a" + b"\x00" * 64, "anim.gif", "GIF"),
        (b"hello, I am text", "notes.png", "not an image format"),
        (b"", "empty.png", "empty"),
    ],
)
def test_not_an_image_is_400_with_what_was_received(api: TestClient, data: bytes, name: str, says: str) -> None:
    response = post_image(api, data, name)
    assert response.status_code == 400
    assert says in response.json()["detail"] and name in response.json()["detail"]
    assert response.json()["hint"]


def test_corrupt_image_is_400(api: TestClient) -> None:
    data = encode(square_photo((300, 300)), "PNG")
    response = post_image(api, data[: len(data) // 2], "half.png")
    assert response.status_code == 400 and "cannot be decoded" in response.json()["detail"]


def test_zip_sent_to_single_endpoint_points_to_batch(api: TestClient) -> None:
    response = post_image(api, zip_of({"a.png": b"x"}), "photos.zip")
    assert response.status_code == 400 and "/api/remove/batch" in response.json()["hint"]


def test_file_over_limit_is_413(api: TestClient) -> None:
    response = post_image(api, b"\x89PNG\r\n\x1a\n" + bytes(int(1.5 * 1024 * 1024)), "big.png")
    assert response.status_code == 413
    assert "limit" in response.json()["detail"] and response.json()["hint"]


def test_body_over_limit_without_a_length_is_refused_as_it_arrives(api: TestClient) -> None:
    """No Content-Length (chunked): the limit is enforced on the bytes received, not the declared size."""
    boundary = "bgremove-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(6):
            yield bytes(1024 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = api.post("/api/remove", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413 and set(response.json()) == {"detail", "hint"}


def test_decompression_bomb_is_413(api: TestClient) -> None:
    bomb = encode(Image.new("L", (3000, 3000)), "PNG")  # 9 MP > the 4 MP limit, ~10 KB on the wire
    response = post_image(api, bomb, "bomb.png")
    assert response.status_code == 413 and "3000x3000" in response.json()["detail"]


@pytest.mark.parametrize(
    "fields",
    [
        {"alpha_matting_foreground_threshold": "300"},
        {"alpha_matting_erode_size": "-2"},
        {"bg_color": "purplish"},
        {"model": "no-such-model"},
        {"model": "/etc/passwd.onnx"},
        {"only_mask": "maybe"},
        {"bg_colour": "white"},
        {"alpha_matting_foreground_threshold": "10", "alpha_matting_background_threshold": "20"},
    ],
)
def test_invalid_options_are_422_with_a_hint(api: TestClient, fields: dict[str, str]) -> None:
    response = post_image(api, png_photo(), **fields)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] and response.json()["hint"]


def test_model_that_cannot_be_had_is_503_with_where_to_get_it(
    api: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A download that fails will not succeed in 30 s: no Retry-After. The client is told where the file comes from
    and what the operator can run, never the server's folders; the server log keeps the operator's hint."""
    for variable in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # nothing listens there: every download fails at once
    monkeypatch.setenv("NO_PROXY", "")
    home = str(api.app.state.settings.session_path)  # type: ignore[attr-defined]
    with caplog.at_level("WARNING", logger="bgremove.web.errors"):
        response = post_image(api, png_photo(), model="u2netp")
    assert response.status_code == 503
    assert "u2netp" in response.json()["detail"] and "u2netp.onnx" in response.json()["hint"]
    assert "models pull u2netp" in response.json()["hint"]
    assert "retry-after" not in response.headers
    assert home not in response.text and "/models/" not in response.json()["hint"].replace("/api/models", "")
    assert home in caplog.text  # the operator still learns where the file goes
    assert api.get("/api/health").json()["ready"] is True  # the default model keeps serving


# --- /api/remove/batch --------------------------------------------------------------------------------


def test_batch_of_a_zip_keeps_folders_and_reports_failures(api: TestClient) -> None:
    archive = zip_of(
        {
            "shoes/red.jpg": encode(square_photo((40, 30)), "JPEG"),
            "shoes/blue.webp": encode(square_photo((50, 30)), "WEBP"),
            "notes.txt": b"not an image",
            "inner.zip": zip_of({"x.png": png_photo()}),
            "__MACOSX/._red.jpg": b"junk",
        }
    )
    response = api.post("/api/remove/batch", files={"files": ("images.zip", archive, "application/zip")})
    files, manifest = read_zip(response)
    assert set(files) == {"shoes/red.png", "shoes/blue.png"}
    assert decode_png(files["shoes/blue.png"]).size == (50, 30)
    assert (manifest["count"], manifest["completed"], manifest["failed"]) == (4, 2, 2)
    by_name = {item["filename"]: item for item in manifest["items"]}
    assert by_name["inner.zip"]["status"] == "failed" and "nested" in by_name["inner.zip"]["error"]
    assert by_name["notes.txt"]["status"] == "failed" and by_name["notes.txt"]["hint"]
    assert by_name["shoes/red.jpg"]["output"] == "shoes/red.png" and by_name["shoes/red.jpg"]["width"] == 40
    assert response.headers["x-batch-failed"] == "2" and manifest["model"] == "tiny-u2net.onnx"


def test_batch_options_apply_to_every_file_and_the_manifest_has_the_shared_keys(api: TestClient) -> None:
    parts = [("files", ("front.png", png_photo())), ("files", ("side.jpg", encode(square_photo((120, 90)), "JPEG")))]
    files, manifest = read_zip(
        api.post("/api/remove/batch", files=parts, data={"format": "jpg", "bg_color": "white", "crop": "true"})
    )
    assert set(files) == {"front.jpg", "side.jpg"}
    assert decode(files["front.jpg"]).format == "JPEG" and decode(files["front.jpg"]).size == (100, 60)
    for item in manifest["items"]:
        assert item["status"] == "completed" and item["format"] == "jpg"
        assert {
            "filename",
            "output",
            "width",
            "height",
            "model",
            "seconds",
            "confidence",
            "foreground_found",
            *FOREGROUND_KEYS,
        } <= set(item)
    assert manifest["items"][0]["foreground_width"] == 100


def test_batch_bg_image_goes_behind_every_file(api: TestClient) -> None:
    blue = encode(Image.new("RGB", (8, 8), (0, 0, 255)), "PNG")
    parts = [("files", ("a.png", png_photo())), ("files", ("b.png", png_photo((90, 70)))), ("bg_image", ("bg.png", blue))]
    files, manifest = read_zip(api.post("/api/remove/batch", files=parts))
    assert manifest["completed"] == 2
    for data in files.values():
        assert tuple(np.asarray(decode(data).convert("RGBA"))[0, 0]) == (0, 0, 255, 255)


def test_batch_never_answers_500_when_the_model_fails_on_one_file(module_settings: SettingsFactory) -> None:
    settings = module_settings()
    odd = encode(square_photo(FlakyModel.fail_size), "PNG")  # the model raises RuntimeError for this size
    parts = [("files", ("good.png", png_photo())), ("files", ("odd.png", odd)), ("files", ("also-good.png", png_photo()))]
    with running(create_app(settings, cache=FlakyCache(settings), ui=False)) as client:
        response = client.post("/api/remove/batch", files=parts)
        files, manifest = read_zip(response)
    assert set(files) == {"good.png", "also-good.png"}
    odd_item = next(item for item in manifest["items"] if item["filename"] == "odd.png")
    assert odd_item["status"] == "failed" and "RuntimeError" in odd_item["error"] and odd_item["hint"]
    assert "/secret/server/path" not in response.content.decode("latin-1")
    assert response.headers["x-batch-failed"] == "1"


def test_batch_of_several_parts_makes_unique_names(api: TestClient) -> None:
    parts = [
        ("files", ("a.png", png_photo())),
        ("files", ("a.jpg", encode(square_photo(), "JPEG"))),
        ("files", ("bad.webp", b"RIFF0000WEBPjunk")),
    ]
    files, manifest = read_zip(api.post("/api/remove/batch", files=parts))
    assert set(files) == {"a.png", "a-2.png"}
    assert manifest["failed"] == 1 and manifest["items"][2]["filename"] == "bad.webp"


def test_zip_slip_names_stay_inside(api: TestClient) -> None:
    archive = zip_of({"../../etc/evil.png": png_photo(), "/abs/x.png": png_photo()})
    files, _ = read_zip(api.post("/api/remove/batch", files={"files": ("slip.zip", archive)}))
    assert set(files) == {"etc/evil.png", "abs/x.png"}


def test_zip_bomb_by_size_is_413(api: TestClient) -> None:
    bomb = zip_of({"zeros.png": bytes(5 * 1024 * 1024)})  # 5 MB of zeros, a few KB compressed; limit 4 MB
    assert len(bomb) < 50_000
    response = api.post("/api/remove/batch", files={"files": ("bomb.zip", bomb)})
    assert response.status_code == 413 and "expands to" in response.json()["detail"]


def test_zip_bomb_by_entry_count_is_413(api: TestClient) -> None:
    archive = zip_of({f"{i}.png": b"x" for i in range(7)})  # limit 6
    response = api.post("/api/remove/batch", files={"files": ("many.zip", archive)})
    assert response.status_code == 413 and "7 files" in response.json()["detail"]


def test_empty_zip_is_400(api: TestClient) -> None:
    response = api.post("/api/remove/batch", files={"files": ("empty.zip", zip_of({}))})
    assert response.status_code == 400 and "empty" in response.json()["detail"]


def test_batch_without_files_is_422_naming_the_field(api: TestClient) -> None:
    response = api.post("/api/remove/batch", data={"model": "u2net"})
    assert response.status_code == 422 and "files" in response.json()["detail"]
    assert "-F files=@" in response.json()["hint"]


def test_refused_inputs_leave_the_server_healthy_and_serving(api: TestClient) -> None:
    refused = [
        post_image(api, b"not an image at all", "junk.png"),
        post_image(api, bytes(2 * 1024 * 1024), "big.png"),  # over MAX_IMAGE_SIZE_MB=1
        post_image(api, png_photo(), crop_margin="80%"),
        api.post("/api/remove/batch", files={"files": ("bomb.zip", zip_of({"zeros.png": bytes(5 * 1024 * 1024)}))}),
        api.post("/api/remove/batch", files={"files": ("empty.zip", zip_of({}))}),
    ]
    assert [response.status_code for response in refused] == [400, 413, 422, 413, 400]
    assert wait_ready(api)["ready"] is True
    served = post_image(api, png_photo())
    assert served.status_code == 200 and np.asarray(decode(served.content))[60, 100, 3] == 255


# --- end to end: `python app.py` as users start it, the README's curl commands, the real model ------------


@pytest.mark.slow
@pytest.mark.real_model
def test_readme_curl_commands_against_python_app_py(tmp_path: Path) -> None:
    import json
    import subprocess

    from skimage import data as skdata

    from scripts.server import start_server, stop_server

    astronaut = skdata.astronaut()  # type: ignore[no-untyped-call]
    Image.fromarray(astronaut).save(tmp_path / "image.jpg")
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as archive:
        archive.write(tmp_path / "image.jpg", "image.jpg")
        coffee = skdata.coffee()  # type: ignore[no-untyped-call]
        archive.writestr("coffee.jpg", encode(Image.fromarray(coffee), "JPEG"))
    server = start_server(tmp_path / "server", REMBG_SESSION_PATH=str(REAL_MODEL_HOME))
    try:

        def curl(*args: str) -> None:
            done = subprocess.run(
                ["curl", "-sS", "--fail-with-body", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, done.stdout + done.stderr

        curl("-X", "POST", "-F", "file=@image.jpg", f"{server.url}/api/remove", "-o", "output.png")
        curl("-X", "POST", "-F", "files=@images.zip", f"{server.url}/api/remove/batch", "-o", "results.zip")
        curl(
            "-F",
            "file=@image.jpg",
            "-F",
            "format=jpg",
            "-F",
            "bg_color=#ffffff",
            "-F",
            "crop=true",
            f"{server.url}/api/remove",
            "-o",
            "product.jpg",
        )
    finally:
        stop_server(server)
    cutout = decode_png((tmp_path / "output.png").read_bytes())
    assert cutout.mode == "RGBA" and cutout.size == (512, 512)
    alpha = np.asarray(cutout)[..., 3]
    assert alpha[0, 0] == 0 and alpha[200, 250] == 255  # background gone, the astronaut's face kept
    with zipfile.ZipFile(tmp_path / "results.zip") as archive:
        assert set(archive.namelist()) == {"image.png", "coffee.png", "manifest.json"}
        assert json.loads(archive.read("manifest.json"))["completed"] == 2
    product = decode((tmp_path / "product.jpg").read_bytes())
    assert product.format == "JPEG" and product.width * product.height < 512 * 512  # cropped to the subject
