"""Fixtures for the web layer: apps built by `create_app` on the tiny brightness model, driven in-process with
FastAPI's TestClient; a uvicorn server in a thread only where a test needs a real socket."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from bgremove.core.sessions import LoadedModel, SessionCache
from bgremove.core.settings import Settings, load_settings
from bgremove.web.app import create_app

SettingsFactory = Callable[..., Settings]
HttpClient = httpx.Client | TestClient  # Starlette's TestClient is built on httpx2, not httpx
HttpResponse = Any  # httpx.Response, or httpx2.Response from the TestClient: the same interface


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> SettingsFactory:
    """Settings on the tiny model with a model home of this module's own; override any variable."""
    home = tmp_path_factory.mktemp("rembg-home")
    data = tmp_path_factory.mktemp("data")  # jobs' SQLite and files, never ~/.bgremove

    def build(**env: str) -> Settings:
        return load_settings({"REMBG_SESSION_PATH": str(home), "REMBG_MODEL_NAME": str(tiny_model), "DATA_DIR": str(data), **env})

    return build


def wait_ready(client: HttpClient, timeout: float = 60) -> dict[str, Any]:
    """Poll /api/health until the warm-up has loaded the default model (or failed)."""
    deadline = time.monotonic() + timeout
    while True:
        health: dict[str, Any] = client.get("/api/health").json()
        if health["ready"] or health["status"] == "error" or time.monotonic() > deadline:
            return health
        time.sleep(0.05)


@contextmanager
def running(app: FastAPI, **client_args: Any) -> Iterator[TestClient]:
    """The app with its lifespan (warm-up) running, once the default model is ready."""
    with TestClient(app, **client_args) as client:
        health = wait_ready(client)
        assert health["ready"], health
        yield client


@pytest.fixture(scope="module")
def api(module_settings: SettingsFactory) -> Iterator[TestClient]:
    """REST on the tiny model with small limits, for fast checks of every error path (no Gradio)."""
    settings = module_settings(
        MAX_IMAGE_SIZE_MB="1", MAX_BATCH_FILES="6", MAX_BATCH_UNCOMPRESSED_MB="4", MAX_IMAGE_PIXELS="4000000"
    )
    with running(create_app(settings, ui=False)) as client:
        yield client


@contextmanager
def live(app: FastAPI) -> Iterator[str]:
    """The app on a real socket (uvicorn in a thread of this process), for clients that need one."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            assert wait_ready(client)["ready"]
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# --- models that misbehave on purpose -----------------------------------------------------------------


@dataclass(frozen=True)
class FlakyModel(LoadedModel):
    """The real model, except that it raises RuntimeError for one image size (as a model can for an odd input)."""

    fail_size: tuple[int, int] = (13, 17)

    def predict(self, image: Image.Image) -> Any:
        if image.size == self.fail_size:
            raise RuntimeError("simulated failure inside the model at /secret/server/path")
        return super().predict(image)


class FlakyCache(SessionCache):
    """A SessionCache whose models are FlakyModel."""

    def get(self, name: str | None = None) -> LoadedModel:
        return FlakyModel(**as_fields(super().get(name)))


@dataclass(frozen=True)
class GatedModel(LoadedModel):
    """The real model, but each prediction waits until the test opens the gate (deterministic overload tests)."""

    gate: threading.Event = field(default_factory=threading.Event)
    entered: threading.Semaphore = field(default_factory=threading.Semaphore)

    def predict(self, image: Image.Image) -> Any:
        if image.size != (64, 64):  # the warm-up's blank image passes straight through
            self.entered.release()
            assert self.gate.wait(timeout=60), "the test never opened the gate"
        return super().predict(image)


class GatedCache(SessionCache):
    """A SessionCache whose predictions wait for `gate`; `entered` counts the predictions that started."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def get(self, name: str | None = None) -> LoadedModel:
        return GatedModel(**as_fields(super().get(name)), gate=self.gate, entered=self.entered)


def as_fields(loaded: LoadedModel) -> dict[str, Any]:
    return {item.name: getattr(loaded, item.name) for item in fields(LoadedModel)}


# --- reading answers ----------------------------------------------------------------------------------


def read_zip(response: HttpResponse) -> tuple[dict[str, bytes], dict[str, Any]]:
    """A batch answer: its files (manifest.json taken out) and the manifest."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    return files, json.loads(files.pop("manifest.json"))


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
