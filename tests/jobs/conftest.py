"""Fixtures for the jobs tests: an app with the jobs router on the tiny model and a DATA_DIR in tmp_path."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from tests.conftest import encode, square_photo
from tests.jobs.server import build_app

FINAL = ("done", "failed", "cancelled")
ClientFactory = Callable[..., Any]


def photo(number: int, size: tuple[int, int] = (96, 64)) -> bytes:
    """A small PNG the tiny model finds a subject in; `number` makes each file's bytes distinct."""
    image = square_photo(size)
    image.putpixel((0, 0), (number % 256, 0, 0))
    return encode(image, "PNG")


def image_parts(count: int, prefix: str = "img") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"{prefix}{number:02d}.png", photo(number), "image/png")) for number in range(count)]


def wait_for(
    client: httpx.Client,
    job_id: str,
    statuses: tuple[str, ...] = FINAL,
    timeout: float = 60,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll the job until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}", headers=headers).json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout} s: {job}"
        time.sleep(0.05)


def read_result(response: httpx.Response) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The result zip's files (manifest.json taken out) and its manifest."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        assert len(names) == len(set(names)), f"a name appears twice in the zip: {names}"
        files = {name: archive.read(name) for name in names}
    return files, json.loads(files.pop("manifest.json"))


def leftovers(data_dir: Path) -> list[Path]:
    """Temp files a crash or a cancel could leave behind."""
    return sorted(path for path in data_dir.rglob("*") if path.name.endswith(".partial"))


@pytest.fixture()
def jobs_settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Callable[..., Settings]:
    """Settings on the tiny model with DATA_DIR in tmp_path; override any variable."""

    def build(**env: str) -> Settings:
        return make_settings(**{"DATA_DIR": str(tmp_path / "data"), **env})

    return build


@pytest.fixture()
def jobs_client(jobs_settings: Callable[..., Settings]) -> Iterator[ClientFactory]:
    """`jobs_client(**env)` -> a TestClient of the jobs app (runner started) with those settings."""
    opened: list[TestClient] = []

    def open_client(cache: Any = None, runner_options: dict[str, Any] | None = None, **env: str) -> TestClient:
        client = TestClient(build_app(jobs_settings(**env), cache, **{"poll_seconds": 0.1, **(runner_options or {})}))
        client.__enter__()
        opened.append(client)
        return client

    yield open_client
    for client in reversed(opened):
        client.__exit__(None, None, None)


@contextmanager
def client_for(settings: Settings, **runner_options: Any) -> Iterator[TestClient]:
    with TestClient(build_app(settings, **{"poll_seconds": 0.1, **runner_options})) as client:
        yield client


class GatedCache(SessionCache):
    """The real cache, but every forward pass waits inside its inference slot until the test opens `gate`;
    `entered` counts the passes that got that far (deterministic cancel and priority tests).
    With `only_threads`, only passes on threads whose name starts with it wait."""

    only_threads = ""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    @contextmanager
    def inference_slot(self) -> Iterator[None]:
        with super().inference_slot():
            if threading.current_thread().name.startswith(self.only_threads):
                self.entered.release()
                assert self.gate.wait(timeout=60), "the test never opened the gate"
            yield
