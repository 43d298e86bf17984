"""Fixtures for the remove.bg door: apps built by `create_app` on the tiny brightness model with the door wired in,
driven in-process (TestClient); a loopback listener that records connections for the SSRF tests; one real uvicorn
server on 127.0.0.1 for the published clients."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings, load_settings
from bgremove.web.app import create_app
from tests.conftest import encode, square_photo
from tests.web.conftest import live, running

SettingsFactory = Callable[..., Settings]
KEY = "removebg-test-key-0123456789"


def build_app(settings: Settings, cache: SessionCache | None = None) -> FastAPI:
    """The app as `create_app` builds it (REST and the remove.bg door, no Gradio)."""
    return create_app(settings, cache=cache, ui=False)


@pytest.fixture(scope="module")
def removebg_settings(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> SettingsFactory:
    """Settings on the tiny model with a model home of this module's own; override any variable."""
    home = tmp_path_factory.mktemp("rembg-home")

    def build(**env: str) -> Settings:
        return load_settings({"REMBG_SESSION_PATH": str(home), "REMBG_MODEL_NAME": str(tiny_model), **env})

    return build


@pytest.fixture(scope="module")
def client(removebg_settings: SettingsFactory) -> Iterator[TestClient]:
    """The door without API keys and with a 1 MB upload limit."""
    with running(build_app(removebg_settings(MAX_IMAGE_SIZE_MB="1"))) as test_client:
        yield test_client


def photo(size: tuple[int, int] = (400, 300)) -> bytes:
    """A dark PNG with a bright centred rectangle: the tiny model's subject is the middle half on each side."""
    return encode(square_photo(size), "PNG")


def blank(size: tuple[int, int] = (400, 300)) -> bytes:
    """No subject at all (the no-subject signal's case)."""
    return encode(Image.new("RGB", size, (0, 0, 0)), "PNG")


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (400, 300)) -> bytes:
    return encode(Image.new("RGB", size, colour), "PNG")


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def error_of(response: Any, status: int) -> dict[str, Any]:
    """The one error of a remove.bg error answer, after checking its shape: {"errors": [{title, code, detail?}]}."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"errors"} and len(body["errors"]) == 1, body
    error: dict[str, Any] = body["errors"][0]
    assert set(error) <= {"title", "code", "detail"} and error["title"] and error["code"], error
    return error


def alpha_of(image: Image.Image) -> np.ndarray:
    return np.asarray(image.getchannel("A"))


# --- a loopback listener that records connections --------------------------------------------------------------


@dataclass
class Listener:
    """An HTTP server on 127.0.0.1 serving a few images; `connections` counts every TCP connection it accepted."""

    url: str
    files: dict[str, bytes]
    connections: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.connections.clear()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    files = {"/photo.png": photo(), "/green.png": solid((0, 200, 0), (64, 64))}
    record: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    class RecordingServer(ThreadingHTTPServer):
        daemon_threads = True

        def verify_request(self, request: Any, client_address: Any) -> bool:
            record.append(str(client_address))
            return True

    server = RecordingServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="removebg-listener", daemon=True)
    thread.start()
    try:
        yield Listener(f"http://127.0.0.1:{server.server_address[1]}", files, record)
    finally:
        server.shutdown()
        server.server_close()


# --- one real server for the published clients -----------------------------------------------------------------


@pytest.fixture(scope="session")
def removebg_server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[str]:
    """uvicorn on 127.0.0.1 (a thread of this process) with API keys on: the base URL, e.g. http://127.0.0.1:PORT."""
    home = tmp_path_factory.mktemp("removebg-server-home")
    settings = load_settings({"REMBG_SESSION_PATH": str(home), "REMBG_MODEL_NAME": str(tiny_model), "API_KEYS": KEY})
    with live(build_app(settings)) as url:
        yield url
