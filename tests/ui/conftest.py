"""Fixtures for the Gradio door: the app from `create_app`, served by uvicorn in a thread where a client needs a
socket (gradio_client, MCP, Chromium), one server per test module; photos built here or taken from skimage."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings, load_settings
from bgremove.web.app import create_app
from bgremove.web.ui import option_panel
from bgremove.web.ui_controls import ControlSet
from tests.conftest import REAL_MODEL_HOME  # the real isnet-general-use weights, where the pull put them

if TYPE_CHECKING:
    from playwright.sync_api import Browser

NOT_AN_IMAGE = b"Shopping list: milk, eggs, bread.\nThis is a text file wearing a .png name.\n"


@dataclass
class LiveUi:
    url: str
    settings: Settings
    cache: SessionCache


@contextmanager
def serve(settings: Settings, cache: SessionCache | None = None) -> Iterator[LiveUi]:
    """`create_app(settings)` on 127.0.0.1 and a free port, in this process; returns once the default model is loaded."""
    cache = cache or SessionCache(settings)
    app = create_app(settings, cache=cache)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", log_config=None))
    thread = threading.Thread(target=server.run, name="ui-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        while True:
            try:
                health = httpx.get(f"{url}/api/health", timeout=2).json()
                if health["ready"]:
                    break
                assert health["status"] != "error", health
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server not ready in 120 s"
            time.sleep(0.1)
        yield LiveUi(url, settings, cache)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def ui_settings(tmp: Path, tiny_model: Path, **env: str) -> Settings:
    """The tiny model as default; the model home is the real one, so one slow test can name isnet-general-use.
    Batch jobs live in `tmp` (never the user's ~/.bgremove, whose lock another server may hold)."""
    return load_settings(
        {
            "REMBG_MODEL_NAME": str(tiny_model),
            "REMBG_SESSION_PATH": str(REAL_MODEL_HOME),
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "DATA_DIR": str(tmp / "data"),
            **env,
        }
    )


@pytest.fixture(scope="module")
def live_ui(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[LiveUi]:
    """One server per test module, on the tiny model."""
    with serve(ui_settings(tmp_path_factory.mktemp("ui"), tiny_model)) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium, launched as scripts/screenshots.py launches it; one per test module."""
    from playwright.sync_api import sync_playwright

    from scripts.screenshots import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def tab_controls(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> ControlSet:
    """One tab's option controls (prefix "t") as `option_panel` builds them on the tiny model, shared by a module's
    handler tests: they depend only on the model choices and default, handlers never change them, and each build
    costs a Gradio Blocks (two app builds inside Gradio)."""
    with gr.Blocks():
        return option_panel("t", ui_settings(tmp_path_factory.mktemp("controls"), tiny_model))


@pytest.fixture()
def ui_cache(tmp_path: Path, tiny_model: Path) -> SessionCache:
    """A session cache on the tiny model, for calling handlers without a server."""
    return SessionCache(ui_settings(tmp_path, tiny_model))


def product_photo(size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A bright box on a dark floor: the tiny model's foreground is the box, the corners are background."""
    width, height = size
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[height // 4 : 3 * height // 4, width // 3 : 2 * width // 3] = (240, 230, 220)
    return Image.fromarray(pixels)


def write_photo(path: Path, image: Image.Image | None = None, **params: Any) -> Path:
    (image or product_photo()).save(path, **params)
    return path


def upload_payload(path: Path) -> dict[str, object]:
    """What a UI event receives for an upload with preprocess=False (gr.FileData, dumped)."""
    return gr.FileData(path=str(path), orig_name=path.name).model_dump()
