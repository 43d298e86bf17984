"""Hardening on live servers: API keys, CORS, overload, faults, privacy, metrics, request ids and logs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.conftest import build_slow_model, decode_png, encode, square_photo, start_server, stop_server, zip_of

KEYS = ("k3y-0123456789abcdef", "k3y-fedcba9876543210")


def photo_png(size: tuple[int, int] = (120, 80)) -> bytes:
    return encode(square_photo(size), "PNG")


def files_under(*folders: Path) -> set[Path]:
    return {path for folder in folders if folder.exists() for path in folder.rglob("*") if path.is_file()}


# --- API keys -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, tiny_model):
    workdir = tmp_path_factory.mktemp("keyed")
    server = start_server(workdir, REMBG_MODEL_NAME=str(tiny_model), REMBG_SESSION_PATH=str(workdir / "home"),
                          API_KEYS=",".join(KEYS), LOG_FORMAT="json", CORS_ORIGINS="https://shop.example")
    yield server
    stop_server(server)


def test_rest_requires_a_key_when_keys_are_set(keyed_server):
    url = f"{keyed_server.url}/api/remove"
    files = {"file": ("p.png", photo_png())}
    missing = httpx.post(url, files=files)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "API key" in missing.json()["detail"]
    assert httpx.post(url, files=files, headers={"X-API-Key": "k3y-not-the-right-one"}).status_code == 401
    assert httpx.post(url, files=files, headers={"X-API-Key": KEYS[0]}).status_code == 200
    assert httpx.post(url, files=files, headers={"Authorization": f"Bearer {KEYS[1]}"}).status_code == 200
    assert httpx.get(f"{keyed_server.url}/api/models").status_code == 401
    assert httpx.get(f"{keyed_server.url}/api/health").status_code == 200  # load balancers need no key


def test_unauthenticated_upload_is_refused_before_the_body_is_read(keyed_server):
    started = time.perf_counter()

    def endless():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(200):
            yield bytes(1 << 20)

    response = httpx.post(f"{keyed_server.url}/api/remove", content=endless(),
                          headers={"content-type": "multipart/form-data; boundary=b"}, timeout=30)
    assert response.status_code == 401 and time.perf_counter() - started < 10


def test_gradio_app_requires_login(keyed_server, tmp_path):
    with pytest.raises(Exception):
        Client(keyed_server.url, verbose=False)
    client = Client(keyed_server.url, auth=("anyone", KEYS[0]), verbose=False)
    (tmp_path / "p.png").write_bytes(photo_png())
    assert decode_png(Path(client.predict(handle_file(str(tmp_path / "p.png")), api_name="/remove")).read_bytes()).mode == "RGBA"


def test_metrics_need_a_key_and_count_requests(keyed_server):
    assert httpx.get(f"{keyed_server.url}/metrics").status_code == 401
    text = httpx.get(f"{keyed_server.url}/metrics", headers={"X-API-Key": KEYS[0]}).text
    assert 'bgremove_requests_total{code="401",method="POST",route="/api/remove"}' in text
    assert 'bgremove_requests_total{code="200",method="POST",route="/api/remove"}' in text
    assert "bgremove_inference_seconds_bucket" in text and 'model="tiny-u2net.onnx"' in text
    assert "bgremove_waiting_for_inference" in text and "bgremove_loaded_models 1.0" in text


def test_cors_allows_only_the_configured_origin(keyed_server):
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(f"{keyed_server.url}/api/remove", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"})

    assert preflight("https://shop.example").headers.get("access-control-allow-origin") == "https://shop.example"
    assert "access-control-allow-origin" not in preflight("https://evil.example").headers


def test_request_ids_in_responses_and_json_logs_and_no_keys_in_logs(keyed_server):
    response = httpx.post(f"{keyed_server.url}/api/remove", files={"file": ("p.png", photo_png())},
                          headers={"X-API-Key": KEYS[0], "X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"
    generated = httpx.get(f"{keyed_server.url}/api/health").headers["x-request-id"]
    assert len(generated) == 16
    time.sleep(0.5)
    log = keyed_server.log()
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert entries and all({"time", "level", "logger", "request_id", "message"} <= set(e) for e in entries)
    assert any(e["request_id"] == "trace-42" and "/api/remove" in e["message"] for e in entries)
    assert all(key not in log for key in KEYS)
    assert "k3y-not-the-right-one" not in log


def test_default_cors_is_not_open(tiny_server):
    response = httpx.options(f"{tiny_server.url}/api/remove", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in httpx.get(f"{tiny_server.url}/api/health",
                                                          headers={"Origin": "https://evil.example"}).headers


# --- Gradio's file routes and URLs ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/gradio_api/file=/etc/passwd", "/gradio_api/file=../../../../etc/passwd",
                                  "/gradio_api/file=%2Fetc%2Fpasswd", "/file=/etc/passwd"])
def test_gradio_file_routes_do_not_serve_other_files(tiny_server, path):
    response = httpx.get(tiny_server.url + path)
    assert response.status_code in (403, 404, 405) and "root:" not in response.text


def test_gradio_does_not_fetch_private_urls(tiny_server):
    """A FileData that points at a loopback URL is refused, not fetched (server-side request forgery)."""
    target = f"{tiny_server.url}/api/models"
    payload = {"data": [{"path": target, "url": target, "meta": {"_type": "gradio.FileData"}}, "", False, 240, 10, 10,
                        False, False, ""]}
    started = httpx.post(f"{tiny_server.url}/gradio_api/call/remove", json=payload)
    assert started.status_code == 200
    stream = httpx.get(f"{tiny_server.url}/gradio_api/call/remove/{started.json()['event_id']}", timeout=30).text
    assert "event: error" in stream and "event: complete" not in stream


# --- overload -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slow")
    model = build_slow_model(workdir / "slow.onnx")
    server = start_server(workdir, REMBG_MODEL_NAME=str(model), REMBG_SESSION_PATH=str(workdir / "home"),
                          MAX_CONCURRENT_INFERENCES="1", MAX_QUEUE_SIZE="2")
    yield server
    stop_server(server)


def test_overload_answers_503_with_retry_after(slow_server):
    photo = photo_png((160, 100))

    def call(_: int) -> httpx.Response:
        return httpx.post(f"{slow_server.url}/api/remove", files={"file": ("p.png", photo)}, timeout=120)

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(call, range(12)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and codes.count(200) >= 3 and codes.count(503) >= 1, codes
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] and "queue is full" in response.json()["detail"]
        else:
            assert decode_png(response.content).size == (160, 100)
    assert httpx.get(f"{slow_server.url}/api/health").json()["ready"] is True
    assert post_ok(slow_server)  # the queue drains: later requests are served again


def post_ok(server) -> bool:
    return httpx.post(f"{server.url}/api/remove", files={"file": ("p.png", photo_png())}, timeout=60).status_code == 200


def test_client_disconnect_mid_batch_leaves_the_server_serving(slow_server):
    archive = zip_of({f"{i}.png": photo_png() for i in range(4)})
    with socket.create_connection(("127.0.0.1", int(slow_server.url.rsplit(":", 1)[1]))) as sock:
        body = (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.zip\"\r\n\r\n" + archive + b"\r\n--b--\r\n")
        sock.sendall(b"POST /api/remove/batch HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.3)  # the batch is running; hang up
    assert post_ok(slow_server)
    assert httpx.get(f"{slow_server.url}/api/health").json()["ready"] is True


# --- faults -------------------------------------------------------------------------------------------


def test_corrupt_model_fails_alone_and_pulling_again_fixes_it(tiny_server, tiny_model):
    home = Path(tiny_server.env["REMBG_SESSION_PATH"])
    target = home / "models" / "silueta" / "silueta.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"\x08\x07 half a model")
    photo = {"file": ("p.png", photo_png())}
    broken = httpx.post(f"{tiny_server.url}/api/remove", files=photo, data={"model": "silueta"})
    assert broken.status_code == 503
    assert "corrupt or incomplete" in broken.json()["detail"]
    assert "python -m bgremove models pull silueta --force" in broken.json()["hint"]
    assert httpx.post(f"{tiny_server.url}/api/remove", files=photo).status_code == 200  # the default keeps serving
    shutil.copyfile(tiny_model, target)  # what a successful pull writes
    assert httpx.post(f"{tiny_server.url}/api/remove", files=photo, data={"model": "silueta"}).status_code == 200


@pytest.fixture()
def small_tmpfs(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_temp_directory_is_a_clear_error_without_partial_output(tmp_path, tiny_model, small_tmpfs):
    server = start_server(tmp_path, REMBG_MODEL_NAME=str(tiny_model), REMBG_SESSION_PATH=str(tmp_path / "home"),
                          TMPDIR=str(small_tmpfs))
    try:
        before = files_under(small_tmpfs)
        noise = [encode(Image.fromarray(np.random.RandomState(i).randint(0, 255, (300, 300, 3), dtype=np.uint8)), "JPEG")
                 for i in range(4)]  # each cutout is a ~300 KB PNG: the 256 KB disk fills up
        response = httpx.post(f"{server.url}/api/remove/batch",
                              files=[("files", (f"{i}.jpg", data)) for i, data in enumerate(noise)], timeout=60)
        assert response.status_code == 507, response.text
        assert "full or read-only" in response.json()["detail"] and "no partial result" in response.json()["detail"]
        assert response.headers["content-type"] == "application/json"
        assert files_under(small_tmpfs) == before  # the spool is gone
        assert httpx.post(f"{server.url}/api/remove", files={"file": ("p.png", photo_png())}).status_code == 200
    finally:
        stop_server(server)


# --- privacy ------------------------------------------------------------------------------------------


def test_rest_keeps_no_files(tiny_server):
    workdir = Path(tiny_server.env["TMPDIR"])
    watched = [workdir / "gradio", workdir / "bgremove-ui"] + [p for p in workdir.iterdir() if p.is_dir() and p.name.startswith("tmp")]
    before = files_under(workdir)
    assert httpx.post(f"{tiny_server.url}/api/remove", files={"file": ("p.png", photo_png((1200, 900)))}).status_code == 200
    archive = zip_of({"a.png": photo_png(), "b.png": photo_png()})
    assert httpx.post(f"{tiny_server.url}/api/remove/batch", files={"files": ("a.zip", archive)}).status_code == 200
    new = {p for p in files_under(workdir) - before if not p.name.endswith(".log")}
    assert new == set(), new
    assert watched  # the folders Gradio and the UI would write to were looked at


def test_gradio_results_are_deleted_after_the_ttl(tmp_path, tiny_model):
    server = start_server(tmp_path, REMBG_MODEL_NAME=str(tiny_model), REMBG_SESSION_PATH=str(tmp_path / "home"),
                          RESULT_TTL_SECONDS="2")
    try:
        (tmp_path / "in").mkdir()
        (tmp_path / "in" / "p.png").write_bytes(photo_png())
        kept = [tmp_path / "gradio", tmp_path / "bgremove-ui"]
        client = Client(server.url, verbose=False)
        baseline = files_under(*kept)  # the UI's example images, cached by Gradio at start: not user data
        assert all("example-" in path.name for path in baseline)
        result = client.predict(handle_file(str(tmp_path / "in" / "p.png")), api_name="/remove")
        assert Path(result).is_file()  # the client's downloaded copy
        assert files_under(*kept) - baseline  # upload and result exist right after the call
        deadline = time.monotonic() + 20
        while files_under(*kept) - baseline and time.monotonic() < deadline:
            time.sleep(0.5)
        assert files_under(*kept) - baseline == set()
    finally:
        stop_server(server)


def test_config_error_hides_keys(tmp_path):
    done = subprocess.run([os.sys.executable, "app.py"], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, env={**os.environ, "API_KEYS": "short-secret"}, timeout=60)
    assert done.returncode == 2 and "short-secret" not in done.stderr and "API_KEYS=<hidden>" in done.stderr


def test_load_test_script_under_overload(slow_server):
    """scripts/loadtest.py, shortened: 16 clients against a 1-slot, 2-deep queue on a slow model."""
    from scripts.loadtest import run

    report = run(slow_server.url, clients=16, seconds=8, max_requests=400, server_pid=slow_server.process.pid)
    assert report["unexpected"] == []
    assert report["by_status"].get("503", 0) > 0 and report["by_status"].get("200", 0) > 0
    assert report["health_after"] == 200
    assert report["rss_peak"] < report["rss_start"] * 1.5 + 200  # bounded: no queue growing with the load
