"""Shared fixtures: tiny ONNX models built here (no weights), settings pointing at them, test images."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from bgremove.config import Settings, load_settings
from bgremove.sessions import SessionCache


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


def decode_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image
