"""Shared fixtures: tiny ONNX models built here (no weights), settings pointing at them, test images."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnx import TensorProto, helper
from PIL import Image

from bgremove.core.settings import Settings, load_settings
from bgremove.core.sessions import SessionCache


def build_brightness_model(path: Path, side: int = 320) -> Path:
    """A u2net/isnet-shaped graph whose 'mask' is the mean brightness: bright pixels are foreground."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["output"], axes=[1], keepdims=1)],
        "brightness",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, side, side])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def build_slow_model(path: Path, convs: int = 6, channels: int = 96) -> Path:
    """A u2net-shaped graph that takes a noticeable time per call (3x3 convs): for queueing and overload tests."""
    rng = np.random.RandomState(0)
    nodes, inits, previous, width = [], [], "input", 3
    for i in range(convs + 1):
        out_channels = 1 if i == convs else channels
        weight = (rng.rand(out_channels, width, 3, 3).astype(np.float32) - 0.5) * 0.1
        inits.append(onnx.numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("Conv", [previous, f"w{i}"], [f"c{i}" if i < convs else "output"], pads=[1, 1, 1, 1]))
        previous, width = f"c{i}", out_channels
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 320, 320])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 320, 320])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 320x320 (u2net family) custom model outside rembg's home directory."""
    return build_brightness_model(tmp_path_factory.mktemp("models") / "tiny-u2net.onnx", 320)


@pytest.fixture()
def make_settings(tmp_path: Path, tiny_model: Path) -> Callable[..., Settings]:
    """Settings with an isolated model home and the tiny model as default; override any variable."""

    def build(**env: str) -> Settings:
        base = {"REMBG_SESSION_PATH": str(tmp_path / "rembg-home"), "REMBG_MODEL_NAME": str(tiny_model)}
        base.update(env)
        return load_settings(base)

    return build


@pytest.fixture()
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture()
def cache(settings: Settings) -> SessionCache:
    return SessionCache(settings)


def square_photo(size: tuple[int, int] = (200, 120), mode: str = "RGB") -> Image.Image:
    """Dark background with a bright centred rectangle: the tiny model's foreground."""
    width, height = size
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 235
    return Image.fromarray(pixels).convert(mode)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def zip_of(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """An in-memory zip of name -> bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def decode_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


# --- live servers ---------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(workdir: Path, **env: str) -> LiveServer:
    """`python app.py` on 127.0.0.1 and a random port; returns once /api/health says ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    full_env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
                "TMPDIR": str(workdir), "GRADIO_TEMP_DIR": str(workdir / "gradio"), **env}
    log_path = workdir / f"server-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path, full_env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            health = httpx.get(f"{server.url}/api/health", timeout=2).json()
            if health["ready"]:
                return server
            if health["status"] == "error":
                raise RuntimeError(f"server could not load its model: {health['error']}")
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"server not ready in 180 s:\n{server.log()}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app as users start it: default settings, the real isnet-general-use model."""
    server = start_server(tmp_path_factory.mktemp("real-server"))
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[LiveServer]:
    """The app on the tiny model with small limits, for fast checks of every error path."""
    workdir = tmp_path_factory.mktemp("tiny-server")
    server = start_server(workdir, REMBG_MODEL_NAME=str(tiny_model), REMBG_SESSION_PATH=str(workdir / "home"),
                          MAX_IMAGE_SIZE_MB="1", MAX_BATCH_FILES="6", MAX_BATCH_UNCOMPRESSED_MB="4",
                          MAX_IMAGE_PIXELS="4000000", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1,localhost")
    yield server
    stop_server(server)
