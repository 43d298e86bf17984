"""A photo where the tiny brightness model (tests/conftest.py) is wrong in two known places, and the strokes a
user would draw to fix it: shared by the core tests and every door's touch-up test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.conftest import encode

WIDTH, HEIGHT = 300, 200
SUBJECT = (slice(50, 150), slice(60, 140))  # bright grey: the model keeps it (right)
MISSED = (slice(50, 150), slice(160, 240))  # dark blue: part of the subject the model drops
LEFTOVER = (slice(10, 30), slice(250, 290))  # bright patch of background the model keeps
KEEP_STROKE = (slice(95, 105), slice(170, 230))  # a scribble across the missed block
REMOVE_STROKE = (slice(18, 22), slice(255, 285))  # a scribble across the leftover patch


@dataclass(frozen=True)
class TouchupCase:
    photo: bytes
    keep_mask: bytes  # white strokes on black
    remove_mask: bytes
    keep_layer: bytes  # the same keep strokes, painted on a transparent layer at half the photo's size


def strokes(region: tuple[slice, slice], scale: int = 1) -> np.ndarray:
    marks = np.zeros((HEIGHT // scale, WIDTH // scale), np.uint8)
    rows, cols = region
    marks[rows.start // scale : rows.stop // scale, cols.start // scale : cols.stop // scale] = 255
    return marks


def touchup_case() -> TouchupCase:
    pixels = np.full((HEIGHT, WIDTH, 3), (30, 60, 30), np.uint8)
    pixels[SUBJECT] = 235
    pixels[MISSED] = (20, 20, 200)
    pixels[LEFTOVER] = 240
    layer = np.zeros((HEIGHT // 2, WIDTH // 2, 4), np.uint8)
    layer[..., 3] = strokes(KEEP_STROKE, 2)
    layer[..., :3] = (200, 40, 40)  # a coloured brush: opacity is what counts on a transparent layer
    return TouchupCase(
        photo=encode(Image.fromarray(pixels), "PNG"),
        keep_mask=encode(Image.fromarray(strokes(KEEP_STROKE)), "PNG"),
        remove_mask=encode(Image.fromarray(strokes(REMOVE_STROKE)), "PNG"),
        keep_layer=encode(Image.fromarray(layer, "RGBA"), "PNG"),
    )


def region_alpha(alpha: np.ndarray, region: tuple[slice, slice]) -> float:
    return float(alpha[region].mean()) / 255.0
