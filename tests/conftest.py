"""Shared fixtures: tiny ONNX models built here (no weights), settings pointing at them, test images."""

from __future__ import annotations

import gc
import io
import os
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnx import TensorProto, helper
from PIL import Image

from bgremove.core.engines import ISA_CAP_VARIABLE
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings, load_settings
from bgremove.core.telemetry import OFF_BY_DEFAULT as TELEMETRY_OFF
from bgremove.jobs_client import API_KEY_ENV, SERVER_ENV
from scripts import server

ROOT = Path(__file__).resolve().parents[1]

# --- the shell stays out of the tests ----------------------------------------------------------------------

# Every variable the app documents (each setting's names, aliases included), the jobs client's, and those rembg
# reads for its model home and checksums: set in a developer's shell, each would change what the tests see.
SHELL_VARIABLES = frozenset(
    {
        *(
            name
            for info in Settings.model_fields.values()
            for name in getattr(info.validation_alias, "choices", [info.validation_alias])
        ),
        SERVER_ENV,
        API_KEY_ENV,
        "REMBG_HOME",
        "U2NET_HOME",
        "XDG_DATA_HOME",
        "MODEL_CHECKSUM_DISABLED",
        ISA_CAP_VARIABLE,
    }
)
_PULLED_HOME = "BGREMOVE_TESTS_REAL_MODEL_HOME"  # passes REAL_MODEL_HOME to pytest-xdist's workers

# Gradio and gradio_client phone home (version check, telemetry) from every Blocks and Client a test builds without
# analytics_enabled=False: traffic beyond loopback, and a thread and a TLS context each time. Importing bgremove
# only defaults these off; tests force them, whatever the shell says, before any conftest imports Gradio
# (huggingface_hub reads its variable at import).
os.environ.update(TELEMETRY_OFF)


def pulled_model_home() -> Path:
    """Where `python -m bgremove models pull` put the real model: the shell's REMBG_SESSION_PATH (or ./.env's),
    read as the settings read it, else the default."""
    from dotenv import dotenv_values

    value = os.environ.get("REMBG_SESSION_PATH") or dotenv_values(ROOT / ".env").get("REMBG_SESSION_PATH") or ""
    return load_settings({"REMBG_SESSION_PATH": value}).session_path


REAL_MODEL_HOME = Path(os.environ.get(_PULLED_HOME) or pulled_model_home())


def pytest_configure(config: pytest.Config) -> None:
    """Before any test module is imported (libraries such as Gradio read their variables at import): the
    documented variables leave this process and every process it starts; tests set what they need."""
    os.environ[_PULLED_HOME] = str(REAL_MODEL_HOME)
    for name in SHELL_VARIABLES:
        os.environ.pop(name, None)


# --- memory between tests (speed only: no test sees any of this) ---------------------------------------------


def pytest_collection_finish(session: pytest.Session) -> None:
    """The modules and objects imported so far live as long as the process: moved out of the garbage collector's
    sight, every full collection of the run (and pytest's five at exit) skips them."""
    gc.collect()
    gc.freeze()


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    """FastAPI keeps up to 4096 endpoint callables per classification cache (`fastapi.dependencies.models`), and
    every Gradio app adds about 80 whose closures hold the app: emptied after each test, the apps a test built
    are freed instead of piling up (a million objects for every full garbage collection to walk)."""
    models = sys.modules.get("fastapi.dependencies.models")
    for value in vars(models).values() if models else ():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()


def python_first_on_path(folder: Path) -> dict[str, str]:
    """This environment with `python` meaning the interpreter running the tests (for commands that say `python`,
    such as the Dockerfile's), whatever the shell's PATH holds."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "python").unlink(missing_ok=True)
    (folder / "python").symlink_to(sys.executable)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"}


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
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 320, 320])],
        inits,
    )
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
        base = {
            "REMBG_SESSION_PATH": str(tmp_path / "rembg-home"),
            "REMBG_MODEL_NAME": str(tiny_model),
            "DATA_DIR": str(tmp_path / "data"),
        }
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


# --- live servers (only where a client needs a socket) ----------------------------------------------------

LiveServer = server.LiveServer
free_port = server.free_port
start_server = server.start_server
stop_server = server.stop_server


@pytest.fixture(scope="session")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app as users start it (`python app.py`): default settings, the real isnet-general-use model."""
    live = start_server(tmp_path_factory.mktemp("real-server"), REMBG_SESSION_PATH=str(REAL_MODEL_HOME))
    yield live
    stop_server(live)


@pytest.fixture(scope="session")
def int8_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small u2net-shaped conv net with its int8 build done (4 calibration photos, 2 validation images: seconds)."""
    from bgremove.core import int8
    from bgremove.core.registry import U2net
    from bgremove.core.store import file_sha256

    path = build_slow_model(tmp_path_factory.mktemp("int8") / "conv-u2net.onnx", convs=3, channels=16)
    int8.build(path, U2net, file_sha256(path), calibration=4, validation=2)
    return path
