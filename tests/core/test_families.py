"""Every model family x every output format through `remove_background`, the function every door calls.

Each family runs a tiny graph of its shape (tests/core/conftest.py) from a model home laid out as the pull lays
it out. The cloth family's three masks come out one above the other, in every format: zip's alpha.png holds the
three real masks, not an opaque square.
"""

from __future__ import annotations

import functools
import io
import zipfile
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from bgremove.core import store
from bgremove.core.options import parse_options
from bgremove.core.pipeline import Result, remove_background
from bgremove.core.registry import CATALOG, FAMILIES, Cloth
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import load_settings
from tests.conftest import encode
from tests.core.conftest import build_cloth_model, build_square_model

# One catalog model per family (the first in the table).
FAMILY_MODEL = {family: next(spec.name for spec in CATALOG.values() if spec.family.name == family) for family in FAMILIES}
FORMATS = ("png", "jpg", "webp", "zip", "auto")
WIDTH, HEIGHT, TOP, BOTTOM = 120, 90, 20, 70  # the photo: black band, red | green | blue stripes, grey band


@pytest.fixture(scope="module")
def family_cache(tmp_path_factory: pytest.TempPathFactory) -> SessionCache:
    """A model home holding one tiny model per family, where the pull puts them (`store.model_file`)."""
    home = tmp_path_factory.mktemp("family-home")
    settings = load_settings({"REMBG_SESSION_PATH": str(home), "DATA_DIR": str(home / "data"), "INFERENCE_ENGINE": "onnxruntime"})
    for family, name in FAMILY_MODEL.items():
        path = store.model_file(name, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        build_cloth_model(path) if family == Cloth.name else build_square_model(path, CATALOG[name].input_size)
    return SessionCache(settings)


def stripes() -> bytes:
    pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    pixels[TOP:, : WIDTH // 3] = (230, 20, 20)  # the cloth model's upper body
    pixels[TOP:, WIDTH // 3 : 2 * WIDTH // 3] = (20, 230, 20)  # lower body
    pixels[TOP:, 2 * WIDTH // 3 :] = (20, 20, 230)  # full body; black (every class score negative): background
    pixels[BOTTOM:] = (110, 100, 90)  # just below ImageNet's mean: background for every family
    return encode(Image.fromarray(pixels), "PNG")


def run(cache: SessionCache, family: str, **options: object) -> Result:
    return remove_background(
        stripes(), "stripes.png", parse_options(model=FAMILY_MODEL[family], **options), settings=cache.settings, cache=cache
    )


def open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def outputs_of(result: Result) -> dict[str, Image.Image]:
    """The images inside a result: the image itself, or a zip's color.jpg and alpha.png."""
    if result.format != "zip":
        return {"image": open_image(result.data)}
    with zipfile.ZipFile(io.BytesIO(result.data)) as archive:
        assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
        return {name: open_image(archive.read(name)) for name in archive.namelist()}


def cloth_masks() -> np.ndarray:
    """What u2net_cloth_seg's three masks must be (255 inside a stripe's class), one above the other; -1: an edge
    the refinement may soften."""
    masks = np.zeros((3, HEIGHT, WIDTH), np.int16)
    for index in range(3):
        left, right = index * WIDTH // 3, (index + 1) * WIDTH // 3
        masks[index, TOP:BOTTOM, left:right] = 255
        masks[index, TOP - 3 : TOP + 3, :] = masks[index, BOTTOM - 3 : BOTTOM + 3, :] = -1
        for edge in {left, right} - {0, WIDTH}:
            masks[index, TOP - 3 : BOTTOM + 3, edge - 3 : edge + 3] = -1
    return masks.reshape(3 * HEIGHT, WIDTH)


@pytest.fixture(scope="module")
def cutout(family_cache: SessionCache) -> Callable[[str], np.ndarray]:
    """A family's default output (a transparent PNG) as RGBA pixels, computed once per family."""
    return functools.cache(lambda family: np.asarray(open_image(run(family_cache, family).data)))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_in_every_format(
    family: str, fmt: str, family_cache: SessionCache, cutout: Callable[[str], np.ndarray]
) -> None:
    masks = len(FAMILIES[family].mask_names)
    png = cutout(family)
    assert png.shape == (HEIGHT * masks, WIDTH, 4)
    alpha = png[..., 3]
    assert (alpha == 0).any() and (alpha == 255).any()  # a subject and a background, not a blank or a square

    result = run(family_cache, family, format=fmt)
    images = outputs_of(result)
    assert result.format == ("png" if fmt == "auto" else fmt) and (result.width, result.height) == (WIDTH, HEIGHT * masks)
    assert all(image.size == (WIDTH, HEIGHT * masks) for image in images.values())
    if fmt in ("png", "auto", "webp"):
        (image,) = images.values()
        assert image.mode == "RGBA" and np.abs(np.asarray(image)[..., 3].astype(int) - alpha).max() <= 1
    elif fmt == "jpg":
        white = (png[..., :3] * (alpha[..., None] / 255) + 255 * (1 - alpha[..., None] / 255)).astype(int)
        assert images["image"].mode == "RGB" and np.abs(np.asarray(images["image"]).astype(int) - white).mean() < 3
    else:
        assert images["alpha.png"].mode == "L" and np.array_equal(np.asarray(images["alpha.png"]), alpha)
        assert images["color.jpg"].mode == "RGB"
    if family == Cloth.name:
        expected = cloth_masks()
        sure = expected >= 0
        assert np.array_equal(alpha[sure], expected[sure])  # the three real masks, in every format via `alpha`


def test_the_cloth_zip_holds_the_three_masks_not_an_opaque_square(family_cache: SessionCache) -> None:
    matte = np.asarray(outputs_of(run(family_cache, Cloth.name, format="zip"))["alpha.png"]).astype(np.int16)
    expected = cloth_masks()
    sure = expected >= 0
    assert np.array_equal(matte[sure], expected[sure])
    assert (matte[:HEIGHT] == 0).mean() > 0.5  # most of the upper-body mask is see-through
