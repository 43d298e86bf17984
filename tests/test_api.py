"""The REST API over real HTTP: routes and their order, options, every error code, zip input hazards."""

from __future__ import annotations

import io
import json
import socket
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import decode_png, encode, square_photo, zip_of


@pytest.fixture(scope="module")
def http(tiny_server):
    with httpx.Client(base_url=tiny_server.url, timeout=60) as client:
        yield client


def post_image(http, data: bytes, name: str = "photo.png", **fields: str) -> httpx.Response:
    return http.post("/api/remove", files={"file": (name, data)}, data=fields)


def read_zip(response: httpx.Response) -> tuple[dict[str, bytes], dict]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    return files, json.loads(files.pop("manifest.json"))


# --- routes ---------------------------------------------------------------------------------------


def test_api_routes_are_not_shadowed_by_the_gradio_mount(http):
    health = http.get("/api/health")
    assert health.headers["content-type"] == "application/json"
    body = health.json()
    assert body["ready"] is True and body["provider"] in ("CPUExecutionProvider", "OpenVINO CPU bf16")
    assert body["loaded_models"] == [body["default_model"]]
    assert "<html" in http.get("/").text.lower()  # Gradio at /
    assert http.get("/docs").status_code == 200 and http.get("/redoc").status_code == 200
    assert {"/api/remove", "/api/remove/batch", "/api/models", "/api/health"} <= set(http.get("/openapi.json").json()["paths"])


def test_models_lists_the_catalog_with_disk_state(http):
    body = http.get("/api/models").json()
    names = {row["name"]: row for row in body["models"]}
    assert "isnet-general-use" in names and "u2net" in names
    assert names["u2netp"]["on_disk"] is False and names["u2netp"]["size_mb"] > 0


# --- /api/remove ----------------------------------------------------------------------------------


def test_remove_returns_png_with_metadata_headers(http):
    response = post_image(http, encode(square_photo((160, 90)), "JPEG"), "My Photo.JPG")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert 'filename="My Photo.png"' in response.headers["content-disposition"]
    assert response.headers["x-image-width"] == "160" and response.headers["x-image-height"] == "90"
    assert response.headers["x-model"] == "tiny-u2net.onnx"
    assert float(response.headers["x-processing-seconds"]) > 0
    alpha = np.asarray(decode_png(response.content))[..., 3]
    assert alpha[45, 80] > 200 and alpha[0, 0] < 20


def test_remove_options_are_applied(http):
    mask = post_image(http, encode(square_photo(), "PNG"), only_mask="true")
    assert decode_png(mask.content).mode == "L"
    filled = post_image(http, encode(square_photo(), "PNG"), bg_color="#00ff00")
    assert tuple(np.asarray(decode_png(filled.content))[0, 0]) == (0, 255, 0, 255)
    rgb = post_image(http, encode(square_photo(), "PNG"), bg_color="10,20,30,40")
    assert tuple(np.asarray(decode_png(rgb.content))[0, 0]) == (10, 20, 30, 40)


@pytest.mark.parametrize(
    ("data", "name", "says"),
    [
        (b"GIF89a" + b"\x00" * 64, "anim.gif", "GIF"),
        (b"hello, I am text", "notes.png", "not an image format"),
        (b"", "empty.png", "empty"),
    ],
)
def test_not_an_image_is_400_with_what_was_received(http, data, name, says):
    response = post_image(http, data, name)
    assert response.status_code == 400
    assert says in response.json()["detail"] and name in response.json()["detail"]
    if data:
        assert "png, jpg, jpeg, webp" in response.json()["detail"]


def test_corrupt_image_is_400(http):
    data = encode(square_photo((300, 300)), "PNG")
    response = post_image(http, data[: len(data) // 2], "half.png")
    assert response.status_code == 400 and "cannot be decoded" in response.json()["detail"]


def test_zip_sent_to_single_endpoint_points_to_batch(http):
    response = post_image(http, zip_of({"a.png": b"x"}), "photos.zip")
    assert response.status_code == 400 and "/api/remove/batch" in response.json()["hint"]


def test_file_over_limit_is_413(http):
    response = post_image(http, b"\x89PNG\r\n\x1a\n" + bytes(2 * 1024 * 1024), "big.png")
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_body_over_limit_is_refused_while_streaming(tiny_server):
    """No Content-Length (chunked): the limit is enforced on the bytes as they arrive."""
    boundary = "bgremove-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def body():
        yield head
        for _ in range(64):  # 64 MB offered; the server must stop reading long before
            yield bytes(1024 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    with httpx.Client(timeout=60) as client:
        response = client.post(f"{tiny_server.url}/api/remove", content=body(),
                               headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413


def test_decompression_bomb_is_413(http):
    bomb = encode(Image.new("L", (3000, 3000)), "PNG")  # 9 MP > the 4 MP limit, ~10 KB on the wire
    response = post_image(http, bomb, "bomb.png")
    assert response.status_code == 413 and "3000x3000" in response.json()["detail"]


@pytest.mark.parametrize(
    "fields",
    [{"alpha_matting_foreground_threshold": "300"}, {"alpha_matting_erode_size": "-2"}, {"bg_color": "purple"},
     {"model": "no-such-model"}, {"model": "/etc/passwd.onnx"}, {"only_mask": "maybe"}],
)
def test_invalid_options_are_422(http, fields):
    response = post_image(http, encode(square_photo(), "PNG"), **fields)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_missing_file_is_422(http):
    response = http.post("/api/remove", data={"model": "u2net"})
    assert response.status_code == 422


def test_model_that_cannot_be_had_is_503_with_the_pull_command(http):
    response = post_image(http, encode(square_photo(), "PNG"), model="u2netp")
    assert response.status_code == 503
    assert "python -m bgremove models pull u2netp" in response.json()["hint"]
    assert response.headers["retry-after"]
    assert http.get("/api/health").json()["ready"] is True  # the default model keeps serving


# --- /api/remove/batch ----------------------------------------------------------------------------


def test_batch_of_a_zip_keeps_folders_and_reports_failures(http):
    archive = zip_of({
        "shoes/red.jpg": encode(square_photo((40, 30)), "JPEG"),
        "shoes/blue.webp": encode(square_photo((50, 30)), "WEBP"),
        "notes.txt": b"not an image",
        "inner.zip": zip_of({"x.png": encode(square_photo(), "PNG")}),
        "__MACOSX/._red.jpg": b"junk",
    })
    response = http.post("/api/remove/batch", files={"files": ("images.zip", archive, "application/zip")})
    files, manifest = read_zip(response)
    assert set(files) == {"shoes/red.png", "shoes/blue.png"}
    assert decode_png(files["shoes/blue.png"]).size == (50, 30)
    assert (manifest["count"], manifest["completed"], manifest["failed"]) == (4, 2, 2)
    by_name = {item["filename"]: item for item in manifest["items"]}
    assert by_name["inner.zip"]["status"] == "failed" and "nested" in by_name["inner.zip"]["error"]
    assert by_name["notes.txt"]["status"] == "failed" and by_name["notes.txt"]["hint"]
    assert by_name["shoes/red.jpg"]["output"] == "shoes/red.png" and by_name["shoes/red.jpg"]["width"] == 40
    assert response.headers["x-batch-failed"] == "2"


def test_batch_of_several_parts_makes_unique_names(http):
    parts = [("files", ("a.png", encode(square_photo(), "PNG"))), ("files", ("a.jpg", encode(square_photo(), "JPEG"))),
             ("files", ("bad.webp", b"RIFF0000WEBPjunk"))]
    files, manifest = read_zip(http.post("/api/remove/batch", files=parts))
    assert set(files) == {"a.png", "a-2.png"}
    assert manifest["failed"] == 1 and manifest["items"][2]["filename"] == "bad.webp"


def test_zip_slip_names_stay_inside(http):
    archive = zip_of({"../../etc/evil.png": encode(square_photo(), "PNG"), "/abs/x.png": encode(square_photo(), "PNG")})
    files, manifest = read_zip(http.post("/api/remove/batch", files={"files": ("slip.zip", archive)}))
    assert set(files) == {"etc/evil.png", "abs/x.png"}
    assert all(not name.startswith(("/", "..")) for name in files)


def test_zip_bomb_by_size_is_413(http):
    bomb = zip_of({"zeros.png": bytes(5 * 1024 * 1024)})  # 5 MB of zeros, a few KB compressed; limit 4 MB
    assert len(bomb) < 50_000
    response = http.post("/api/remove/batch", files={"files": ("bomb.zip", bomb)})
    assert response.status_code == 413 and "expands to" in response.json()["detail"]


def test_zip_bomb_by_entry_count_is_413(http):
    archive = zip_of({f"{i}.png": b"x" for i in range(7)})  # limit 6
    response = http.post("/api/remove/batch", files={"files": ("many.zip", archive)})
    assert response.status_code == 413 and "7 files" in response.json()["detail"]


def test_empty_zip_is_400(http):
    response = http.post("/api/remove/batch", files={"files": ("empty.zip", zip_of({}))})
    assert response.status_code == 400 and "empty" in response.json()["detail"]


def test_batch_without_files_is_422(http):
    assert http.post("/api/remove/batch", data={"model": "u2net"}).status_code == 422


# --- the seed's curl commands, verbatim but for host and port, on the real model --------------------


def test_seed_curl_commands(real_server, tmp_path):
    import subprocess

    from skimage import data as skdata

    Image.fromarray(skdata.astronaut()).save(tmp_path / "image.jpg")
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as archive:
        archive.write(tmp_path / "image.jpg", "image.jpg")
        archive.writestr("coffee.jpg", encode(Image.fromarray(skdata.coffee()), "JPEG"))
    single = subprocess.run(["curl", "-sS", "-X", "POST", "-F", "file=@image.jpg", f"{real_server.url}/api/remove",
                             "-o", "output.png"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr
    cutout = decode_png((tmp_path / "output.png").read_bytes())
    assert cutout.mode == "RGBA" and cutout.size == (512, 512)
    batch = subprocess.run(["curl", "-sS", "-X", "POST", "-F", "files=@images.zip", f"{real_server.url}/api/remove/batch",
                            "-o", "results.zip"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert batch.returncode == 0, batch.stderr
    with zipfile.ZipFile(tmp_path / "results.zip") as archive:
        assert set(archive.namelist()) == {"image.png", "coffee.png", "manifest.json"}
        assert json.loads(archive.read("manifest.json"))["completed"] == 2


def test_server_survives_a_client_that_hangs_up(tiny_server, http):
    with socket.create_connection(("127.0.0.1", int(tiny_server.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"POST /api/remove HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n")
    assert post_image(http, encode(square_photo(), "PNG")).status_code == 200
