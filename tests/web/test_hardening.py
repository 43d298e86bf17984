"""Hardening, in-process where HTTP semantics suffice and on a real socket where they do not: API keys, CORS,
admission (503), request ids and logs, metrics, faults (corrupt model, full disk), privacy, Gradio's file routes,
and the start-up warning of issue 17.7."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bgremove.core.observability import JsonFormatter
from bgremove.web.api import SPOOL_IN_MEMORY_BYTES
from bgremove.web.app import create_app
from tests.conftest import build_slow_model, decode_png, encode, square_photo, zip_of
from tests.web.conftest import GatedCache, HttpResponse, SettingsFactory, live, running, wait_ready

KEYS = ("k3y-0123456789abcdef", "k3y-fedcba9876543210")
ROOT = Path(__file__).resolve().parents[2]


def photo_png(size: tuple[int, int] = (120, 80)) -> bytes:
    return encode(square_photo(size), "PNG")


def files_under(*folders: Path) -> set[Path]:
    return {path for folder in folders if folder.exists() for path in folder.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def keyed(module_settings: SettingsFactory) -> Iterator[TestClient]:
    settings = module_settings(API_KEYS=",".join(KEYS), LOG_FORMAT="json", CORS_ORIGINS="https://shop.example")
    with TestClient(create_app(settings, ui=False)) as client:
        assert wait_ready(client)["ready"]  # /api/health needs no key
        yield client


# --- API keys -------------------------------------------------------------------------------------


def test_rest_requires_a_key_when_keys_are_set(keyed: TestClient) -> None:
    files = {"file": ("p.png", photo_png())}
    missing = keyed.post("/api/remove", files=files)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "API key" in missing.json()["detail"] and missing.json()["hint"]
    assert keyed.post("/api/remove", files=files, headers={"X-API-Key": "k3y-not-the-right-one"}).status_code == 401
    assert keyed.post("/api/remove", files=files, headers={"X-API-Key": KEYS[0]}).status_code == 200
    assert keyed.post("/api/remove", files=files, headers={"Authorization": f"Bearer {KEYS[1]}"}).status_code == 200
    assert keyed.get("/api/models").status_code == 401
    assert keyed.get("/api/no-such-endpoint").status_code == 401  # unknown paths do not reveal what exists
    assert keyed.get("/api/health").status_code == 200  # load balancers need no key


def test_unauthenticated_upload_is_refused_before_the_body_is_sent(module_settings: SettingsFactory) -> None:
    """Over a socket: the 401 arrives while the client has sent the headers and 1 KB of a declared 50 MB body."""
    with live(create_app(module_settings(API_KEYS=KEYS[0]), ui=False)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"POST /api/remove HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 52428800\r\n\r\n" + bytes(1024)
            )
            head, body = read_response(sock)
    assert head.startswith("HTTP/1.1 401"), head
    assert set(json.loads(body)) == {"detail", "hint"}


def read_response(sock: socket.socket) -> tuple[str, bytes]:
    """One HTTP/1.1 response with a Content-Length, read off a raw socket: (status line and headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head.decode("latin-1"), body


def test_metrics_need_a_key_and_count_requests(keyed: TestClient) -> None:
    keyed.post("/api/remove", files={"file": ("p.png", photo_png())})  # a 401
    keyed.post("/api/remove", files={"file": ("p.png", photo_png())}, headers={"X-API-Key": KEYS[0]})
    assert keyed.get("/metrics").status_code == 401
    text = keyed.get("/metrics", headers={"X-API-Key": KEYS[0]}).text
    assert 'bgremove_requests_total{code="401",method="POST",route="/api/remove"}' in text
    assert 'bgremove_requests_total{code="200",method="POST",route="/api/remove"}' in text
    assert "bgremove_inference_seconds_bucket" in text and 'model="tiny-u2net.onnx"' in text
    assert "bgremove_waiting_for_inference" in text and "bgremove_loaded_models 1.0" in text


# --- CORS -----------------------------------------------------------------------------------------


def preflight(client: TestClient, origin: str) -> HttpResponse:
    return client.options(
        "/api/remove",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"},
    )


def test_cors_allows_only_the_configured_origin_and_exposes_the_metadata_headers(keyed: TestClient) -> None:
    assert preflight(keyed, "https://shop.example").headers.get("access-control-allow-origin") == "https://shop.example"
    assert "access-control-allow-origin" not in preflight(keyed, "https://evil.example").headers
    response = keyed.post(
        "/api/remove", files={"file": ("p.png", photo_png())}, headers={"X-API-Key": KEYS[0], "Origin": "https://shop.example"}
    )
    exposed = {name.strip().lower() for name in response.headers["access-control-expose-headers"].split(",")}
    metadata = {name for name in response.headers if name.startswith("x-") and name != "x-request-id"}
    assert metadata and metadata <= exposed and "content-disposition" in exposed
    assert {"x-format", "x-foreground-top", "x-confidence", "x-foreground-found"} <= exposed


def test_default_cors_is_not_open(api: TestClient) -> None:
    assert "access-control-allow-origin" not in preflight(api, "https://evil.example").headers
    assert "access-control-allow-origin" not in api.get("/api/health", headers={"Origin": "https://evil.example"}).headers


# --- request ids and logs ---------------------------------------------------------------------------


def test_request_ids_in_responses_and_json_logs_and_no_keys_in_logs(module_settings: SettingsFactory) -> None:
    """On uvicorn (its access log is the line each request writes), with LOG_FORMAT=json."""
    app = create_app(module_settings(API_KEYS=",".join(KEYS), LOG_FORMAT="json"), ui=False)
    configured = [h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)]
    assert len(configured) == 1  # LOG_FORMAT=json installed one JSON handler on the root logger
    lines = io.StringIO()
    previous = configured[0].setStream(lines)  # type: ignore[attr-defined]
    try:
        with live(app) as url, httpx.Client(base_url=url, timeout=60) as client:
            response = client.post(
                "/api/remove", files={"file": ("p.png", photo_png())}, headers={"X-API-Key": KEYS[0], "X-Request-ID": "trace-42"}
            )
            client.post("/api/remove", files={"file": ("p.png", photo_png())}, headers={"X-API-Key": "k3y-not-the-right-one"})
            generated = client.get("/api/models", headers={"X-API-Key": KEYS[0]}).headers["x-request-id"]
            # uvicorn writes the access line just after the response is sent: wait for it, do not race it
            deadline = time.monotonic() + 10
            while not (f'"{generated}"' in lines.getvalue() and '"trace-42"' in lines.getvalue()) and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        configured[0].setStream(previous)  # type: ignore[attr-defined]
    assert response.headers["x-request-id"] == "trace-42" and len(generated) == 16
    log = lines.getvalue()
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert entries and all({"time", "level", "logger", "request_id", "message"} <= set(entry) for entry in entries)
    assert any(entry["request_id"] == "trace-42" and "/api/remove" in entry["message"] for entry in entries), log
    assert any(entry["request_id"] == generated and "/api/models" in entry["message"] for entry in entries)
    assert all(key not in log for key in KEYS) and "k3y-not-the-right-one" not in log


# --- overload -----------------------------------------------------------------------------------------


def test_overload_answers_503_with_retry_after_and_the_queue_drains(module_settings: SettingsFactory) -> None:
    """One inference slot and a queue of two: with three requests held inside, the fourth is refused at once."""
    settings = module_settings(MAX_CONCURRENT_INFERENCES="1", MAX_QUEUE_SIZE="2", QUANTIZE_ON_LOAD="false")
    cache = GatedCache(settings)
    with running(create_app(settings, cache=cache, ui=False)) as client, ThreadPoolExecutor(3) as pool:
        # three different photos: requests for one photo share a single forward pass (the prediction cache)
        held = [pool.submit(client.post, "/api/remove", files={"file": ("p.png", photo_png((160, 100 + i)))}) for i in range(3)]
        assert cache.entered.acquire(timeout=30)  # one request is inside the model ...
        while cache.waiting < 2:  # ... and two wait for the slot: MAX_CONCURRENT_INFERENCES + MAX_QUEUE_SIZE in flight
            threading.Event().wait(0.01)
        refused = client.post("/api/remove", files={"file": ("p.png", photo_png())})
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert "queue is full" in refused.json()["detail"] and refused.json()["hint"]
        assert client.get("/api/health").status_code == 200  # health is never queued
        cache.gate.set()
        assert [future.result().status_code for future in held] == [200, 200, 200]
        assert decode_png(held[0].result().content).size == (160, 100)
        assert client.post("/api/remove", files={"file": ("p.png", photo_png())}).status_code == 200


def test_clients_that_hang_up_mid_batch_or_mid_upload_leave_the_server_serving(module_settings: SettingsFactory) -> None:
    settings = module_settings()
    cache = GatedCache(settings)
    archive = zip_of({f"{i}.png": photo_png() for i in range(4)})
    body = b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.zip"\r\n\r\n' + archive + b"\r\n--b--\r\n"
    with live(create_app(settings, cache=cache, ui=False)) as url:
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=30) as sock:
            sock.sendall(
                b"POST /api/remove/batch HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            assert cache.entered.acquire(timeout=30)  # the batch is inside the model: hang up now
        cache.gate.set()
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=30) as sock:  # hang up mid-upload
            sock.sendall(
                b"POST /api/remove HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b'Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name="file"; '
                b'filename="a.png"\r\n\r\n'
            )
        with httpx.Client(base_url=url, timeout=60) as client:
            assert client.post("/api/remove", files={"file": ("p.png", photo_png())}).status_code == 200
            assert client.get("/api/health").json()["ready"] is True


# --- faults -------------------------------------------------------------------------------------------


def test_corrupt_model_fails_alone_and_a_good_file_fixes_it(
    module_settings: SettingsFactory, tiny_model: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    target = home / "models" / "silueta" / "silueta.onnx"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\x08\x07 half a model")
    photo = {"file": ("p.png", photo_png())}
    with running(create_app(module_settings(REMBG_SESSION_PATH=str(home)), ui=False)) as client:
        broken = client.post("/api/remove", files=photo, data={"model": "silueta"})
        assert broken.status_code == 503
        assert "corrupt or incomplete" in broken.json()["detail"]
        assert "python -m bgremove models pull silueta --force" in broken.json()["hint"]
        assert client.post("/api/remove", files=photo).status_code == 200  # the default keeps serving
        shutil.copyfile(tiny_model, target)  # what a successful pull writes
        assert client.post("/api/remove", files=photo, data={"model": "silueta"}).status_code == 200


@pytest.fixture()
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KB file system (needs root to mount; CI runs as root, where a failed mount is an error, not a skip)."""
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=False, capture_output=True)
    if mounted.returncode != 0:
        if os.geteuid() == 0:
            pytest.fail(f"mounting a tmpfs as root failed: {mounted.stderr.decode(errors='replace').strip()}")
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def noise_pngs(count: int, side: int = 600) -> list[bytes]:
    """Photos that do not compress: their cutouts (~1.4 MB each at 600 px) soon outgrow the in-memory spool."""
    return [
        encode(Image.fromarray(np.random.RandomState(i).randint(0, 255, (side, side, 3), dtype=np.uint8)), "PNG")
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def roomy(module_settings: SettingsFactory) -> Iterator[TestClient]:
    """Default limits (25 MB per image), for batches big enough to spill to TMPDIR."""
    with running(create_app(module_settings(), ui=False)) as client:
        yield client


def test_full_temp_directory_is_a_clear_507_without_partial_output(
    roomy: TestClient, small_tmpfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(small_tmpfs))
    before = files_under(small_tmpfs)
    uploads = noise_pngs(6, side=500)  # each under 1 MB (kept in memory by the form parser); their zip is ~6 MB
    assert max(map(len, uploads)) < 1024 * 1024
    response = roomy.post("/api/remove/batch", files=[("files", (f"{i}.png", data)) for i, data in enumerate(uploads)])
    assert response.status_code == 507, response.text
    assert "full or read-only" in response.json()["detail"] and "no partial result" in response.json()["detail"]
    assert response.json()["hint"] and response.headers["retry-after"]
    assert files_under(small_tmpfs) == before  # the spool is gone
    assert roomy.post("/api/remove", files={"file": ("p.png", photo_png())}).status_code == 200


def test_an_upload_that_cannot_be_stored_in_a_full_temp_directory_is_507(
    roomy: TestClient, small_tmpfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(small_tmpfs))
    big = noise_pngs(1, side=700)[0]  # over 1 MB: the form parser spools it to TMPDIR, which is full
    response = roomy.post("/api/remove", files={"file": ("big.png", big)})
    assert response.status_code == 507, response.text
    assert "upload could not be stored" in response.json()["detail"] and response.json()["hint"]


# --- privacy ------------------------------------------------------------------------------------------


def test_rest_keeps_no_files(roomy: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert roomy.post("/api/remove", files={"file": ("p.png", photo_png((1200, 800)))}).status_code == 200
    files = [("files", (f"{i}.png", data)) for i, data in enumerate(noise_pngs(4))]
    response = roomy.post("/api/remove/batch", files=files)
    assert response.status_code == 200 and len(response.content) > SPOOL_IN_MEMORY_BYTES  # went through a file
    assert files_under(tmp_path) == set()


# --- Gradio's routes ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def with_ui(module_settings: SettingsFactory) -> Iterator[TestClient]:
    with running(create_app(module_settings())) as client:
        yield client


@pytest.mark.parametrize(
    "path",
    [
        "/gradio_api/file=/etc/passwd",
        "/gradio_api/file=../../../../etc/passwd",
        "/gradio_api/file=%2Fetc%2Fpasswd",
        "/file=/etc/passwd",
    ],
)
def test_gradio_file_routes_do_not_serve_other_files(with_ui: TestClient, path: str) -> None:
    response = with_ui.get(path)
    assert response.status_code in (403, 404, 405) and "root:" not in response.text


def test_gradio_does_not_fetch_private_urls(with_ui: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FileData that points at a loopback URL is refused, not fetched (server-side request forgery)."""
    import safehttpx

    asked: list[str] = []

    async def no_public_dns(hostname: str) -> list[str]:
        # Gradio's guard (safehttpx) asks dns.google, a public address, about a name the local resolver found
        # private; a test sends traffic only to this machine, so that second opinion is "no public address".
        asked.append(hostname)
        return []

    monkeypatch.setattr(safehttpx, "async_resolve_hostname_google", no_public_dns)
    parameters = with_ui.get("/gradio_api/info").json()["named_endpoints"]["/remove"]["parameters"]
    target = "http://127.0.0.1:9/api/models"
    data = [{"path": target, "url": target, "meta": {"_type": "gradio.FileData"}}]
    data += [parameter.get("parameter_default") for parameter in parameters[1:]]
    started = with_ui.post("/gradio_api/call/remove", json={"data": data})
    assert started.status_code == 200
    stream = with_ui.get(f"/gradio_api/call/remove/{started.json()['event_id']}").text
    assert "event: error" in stream and "event: complete" not in stream
    assert asked == ["127.0.0.1"]  # refused by the guard's address check, not by a failed fetch


@pytest.mark.slow  # a live server and gradio_client
def test_gradio_app_requires_login_when_keys_are_set(module_settings: SettingsFactory, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    (tmp_path / "p.png").write_bytes(photo_png())
    with live(create_app(module_settings(API_KEYS=KEYS[0]))) as url:
        assert httpx.get(f"{url}/gradio_api/info").status_code == 401
        client = Client(url, auth=("anyone", KEYS[0]), verbose=False)
        result = client.predict(handle_file(str(tmp_path / "p.png")), api_name="/remove")
    assert decode_png(Path(result).read_bytes()).mode == "RGBA"


@pytest.mark.slow
def test_gradio_results_are_deleted_after_the_ttl(tmp_path: Path, tiny_model: Path) -> None:
    """A process of its own: the UI's work folders live under TMPDIR, which only a new process can point here."""
    from gradio_client import Client, handle_file

    from scripts.server import start_server, stop_server

    server = start_server(
        tmp_path, REMBG_MODEL_NAME=str(tiny_model), REMBG_SESSION_PATH=str(tmp_path / "home"), RESULT_TTL_SECONDS="2"
    )
    try:
        (tmp_path / "in").mkdir()
        (tmp_path / "in" / "p.png").write_bytes(photo_png())
        kept = [tmp_path / "gradio", tmp_path / "bgremove-ui"]
        baseline = files_under(*kept)  # the UI's example images, cached by Gradio at start: not user data
        assert all("example-" in path.name for path in baseline)
        result = Client(server.url, verbose=False).predict(handle_file(str(tmp_path / "in" / "p.png")), api_name="/remove")
        assert Path(result).is_file()  # the client's downloaded copy
        assert files_under(*kept) - baseline  # upload and result exist right after the call
        deadline = 40
        while files_under(*kept) - baseline and deadline > 0:
            threading.Event().wait(0.5)
            deadline -= 1
        assert files_under(*kept) - baseline == set()
    finally:
        stop_server(server)


# --- start-up -------------------------------------------------------------------------------------------


@pytest.mark.slow  # a process of its own
def test_config_error_stops_start_up_with_exit_2_and_hides_keys() -> None:
    done = subprocess.run(
        [sys.executable, "app.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "API_KEYS": "short-secret"},
    )
    assert done.returncode == 2 and "short-secret" not in done.stderr and "API_KEYS=<hidden>" in done.stderr


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize(
    ("env", "warned"),
    [
        ({"GRADIO_SERVER_NAME": "0.0.0.0"}, True),
        ({"GRADIO_SERVER_NAME": "0.0.0.0", "API_KEYS": KEYS[0]}, False),
        ({"GRADIO_SERVER_NAME": "127.0.0.1"}, False),
        ({}, False),
    ],
)
def test_listening_beyond_loopback_without_keys_logs_a_warning(
    module_settings: SettingsFactory, env: dict[str, str], warned: bool
) -> None:
    app = create_app(module_settings(**env), ui=False)
    collect = Collect()
    logging.getLogger().addHandler(collect)  # after create_app: it replaces the root handlers
    try:
        with TestClient(app):
            pass
    finally:
        logging.getLogger().removeHandler(collect)
    warnings = [r.getMessage() for r in collect.records if "without API keys" in r.getMessage()]
    assert bool(warnings) == warned, warnings
    if warned:
        assert "0.0.0.0" in warnings[0] and "API_KEYS" in warnings[0]


@pytest.mark.slow
def test_load_test_script_under_overload(module_settings: SettingsFactory, tmp_path: Path) -> None:
    """scripts/loadtest.py, shortened: 16 clients against a 1-slot, 2-deep queue on a slow model."""
    from scripts.loadtest import run

    model = build_slow_model(tmp_path / "slow.onnx")
    settings = module_settings(REMBG_MODEL_NAME=str(model), MAX_CONCURRENT_INFERENCES="1", MAX_QUEUE_SIZE="2")
    with live(create_app(settings, ui=False)) as url:
        report = run(url, clients=16, seconds=6, max_requests=300, server_pid=os.getpid())
    assert report["unexpected"] == []
    assert report["by_status"].get("503", 0) > 0 and report["by_status"].get("200", 0) > 0
    assert report["health_after"] == 200


def test_zip_answers_are_complete_archives(api: TestClient) -> None:
    response = api.post("/api/remove/batch", files={"files": ("a.zip", zip_of({"a.png": photo_png()}))})
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None and set(archive.namelist()) == {"a.png", "manifest.json"}
    assert int(response.headers["content-length"]) == len(response.content)
