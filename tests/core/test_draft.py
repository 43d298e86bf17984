"""A big JPEG is decoded at reduced size (libjpeg's DCT scaling) when the output size allows it, and only then.

The tiny model is a custom .onnx, so the floor is the largest input side any model reads (1024): a photo needs at
least 2048 px on both axes before a 1/2 draft keeps the model's input from being upscaled.
"""

from __future__ import annotations

import io
from functools import cache
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageCms

from bgremove.core.compose import output_size
from bgremove.core.errors import ImageTooLarge
from bgremove.core.options import parse_options
from bgremove.core.pipeline import FULL_SIZE_OPTIONS, Result, decode, decode_floor, remove_background
from bgremove.core.predictions import photo_key
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from tests.conftest import decode_png, encode

BIG = (2400, 2100)  # 5 MP: at size=preview a 1/2 draft (1200x1050) still covers the 1024 px model input


def photo(size: tuple[int, int] = BIG) -> Image.Image:
    """A bright subject with a slanted edge on a dark, slightly textured background (a fresh copy)."""
    return _photo(size).copy()


@cache
def _photo(size: tuple[int, int]) -> Image.Image:
    width, height = size
    y, x = np.ogrid[0:height, 0:width]
    subject = (np.abs(x - width / 2) < width / 4) & (np.abs(y - height / 2) < height / 4 + (x - width / 2) / 8)
    pixels = np.where(subject, 225, 20 + (x // 7 + y // 5) % 9).astype(np.uint8)
    return Image.fromarray(np.dstack([pixels, pixels, (pixels * 0.9).astype(np.uint8)]))


def jpeg(image: Image.Image, **params: Any) -> bytes:
    return encode(image, "JPEG", quality=92, **params)


def as_png(data: bytes) -> bytes:
    """The same pixels a full JPEG decode gives, as a PNG (never drafted): the full-decode reference."""
    return encode(Image.open(io.BytesIO(data)).convert("RGB"), "PNG", compress_level=1)


def run(data: bytes, settings: Settings, cache: SessionCache, name: str = "photo.jpg", **options: Any) -> Result:
    return remove_background(data, name, parse_options(options), settings=settings, cache=cache)


def decoded_size(data: bytes, settings: Settings, **options: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """(the size the pixels were decoded at, the photo's size)."""
    decoded = decode(data, "photo.jpg", parse_options(options), settings)
    return decoded.image.size, decoded.size


def assert_same_cutout(drafted: Result, full: Result) -> None:
    """Same size and metadata to the pixel, an alpha within a small tolerance of the full decode's."""
    assert (drafted.width, drafted.height) == (full.width, full.height)
    small, reference = (np.asarray(decode_png(r.data).getchannel("A")).astype(float) for r in (drafted, full))
    assert small.shape == reference.shape
    error = np.abs(small - reference)
    assert error.mean() < 1.0 and np.quantile(error, 0.99) < 32  # edges differ a little: one resample fewer
    assert drafted.foreground is not None and full.foreground is not None
    for mine, theirs in zip(drafted.foreground.__dict__.values(), full.foreground.__dict__.values(), strict=True):
        assert abs(mine - theirs) <= 2
    assert drafted.foreground_found == full.foreground_found


def test_a_big_jpeg_for_a_preview_is_decoded_at_half_size(settings: Settings, cache: SessionCache) -> None:
    data = jpeg(photo())
    assert decoded_size(data, settings, size="preview") == ((1200, 1050), BIG)
    drafted = run(data, settings, cache, size="preview")
    assert (drafted.width, drafted.height) == output_size(*BIG, "preview")
    assert_same_cutout(drafted, run(as_png(data), settings, cache, "photo.png", size="preview"))


def test_the_draft_scale_is_the_smallest_that_covers_model_and_output(settings: Settings) -> None:
    """4800x4400 for a preview: 1/4 (1200x1100) covers 1024 on both axes, 1/8 (600x550) would not."""
    assert decoded_size(jpeg(Image.new("RGB", (4800, 4400), "gray")), settings, size="preview") == ((1200, 1100), (4800, 4400))
    # medium (1.5 MP) of a 5 MP photo asks for 1309x1145: 1/2 would give 1200x1050, too small: full size
    assert decoded_size(jpeg(photo()), settings, size="medium") == (BIG, BIG)


@pytest.mark.parametrize(("mode", "progressive"), [("RGB", True), ("L", False)], ids=["progressive", "greyscale"])
def test_progressive_and_greyscale_jpegs_are_drafted_too(
    mode: str, progressive: bool, settings: Settings, cache: SessionCache
) -> None:
    data = jpeg(photo().convert(mode), progressive=progressive)
    assert decoded_size(data, settings, size="preview") == ((1200, 1050), BIG)
    assert_same_cutout(run(data, settings, cache, size="preview"), run(as_png(data), settings, cache, "p.png", size="preview"))


def test_a_turned_photo_is_drafted_along_its_upright_axes(settings: Settings, cache: SessionCache) -> None:
    """Stored 4200x2100, EXIF orientation 6 (upright 2100x4200). size=medium asks for 865x1731 upright, so at least
    1024x1731; in stored axes 1731x1024, which 1/2 covers (2100x1050). Read unturned it would be 1024x1731, which
    1050 rows cannot cover: the draft must swap the axes to be taken."""
    stored = photo((4200, 2100))
    exif = stored.getexif()
    exif[0x0112] = 6
    data = jpeg(stored, exif=exif.tobytes())
    assert decoded_size(data, settings, size="medium") == ((1050, 2100), (2100, 4200))
    upright = encode(Image.open(io.BytesIO(data)).transpose(Image.Transpose.ROTATE_270).convert("RGB"), "PNG", compress_level=1)
    options = {"size": "medium", "decontaminate": False}
    drafted = run(data, settings, cache, **options)
    assert (drafted.width, drafted.height) == output_size(2100, 4200, "medium")
    assert_same_cutout(drafted, run(upright, settings, cache, "upright.png", **options))


def test_a_multi_picture_jpeg_is_drafted_on_its_first_picture(settings: Settings) -> None:
    """Phones write MPO files (a JPEG with more pictures after it): the photo is the first one."""
    buffer = io.BytesIO()
    Image.new("RGB", BIG, "red").save(buffer, "MPO", save_all=True, append_images=[Image.new("RGB", BIG, "blue")])
    decoded = decode(buffer.getvalue(), "phone.jpg", parse_options({"size": "preview"}), settings)
    assert (decoded.image.size, decoded.size) == ((1200, 1050), BIG)
    red, green, blue = decoded.image.getpixel((600, 500))  # type: ignore[misc]
    assert red > 240 and green < 15 and blue < 15


IN_EFFECT: dict[str, Any] = {
    "crop": True,
    "crop_margin": "20px",
    "scale": "80%",
    "position": "center",
    "roi": "10 0 190 120",
    "post_process_mask": True,
    "alpha_matting": True,
}


def test_every_full_size_option_is_covered_below() -> None:
    assert set(IN_EFFECT) == set(FULL_SIZE_OPTIONS)


@pytest.mark.parametrize("name", sorted(IN_EFFECT))
def test_an_option_that_needs_the_full_photo_keeps_the_full_decode(name: str, settings: Settings) -> None:
    assert decode_floor(*BIG, parse_options({"size": "preview", name: IN_EFFECT[name]}), 1024) is None
    assert decoded_size(jpeg(photo()), settings, size="preview", **{name: IN_EFFECT[name]}) == (BIG, BIG)


def cmyk_jpeg() -> bytes:
    return jpeg(photo().convert("CMYK"))


@pytest.mark.parametrize(
    ("make", "options"),
    [
        (lambda: jpeg(photo()), {}),  # a full-size output
        (lambda: jpeg(photo()), {"size": "full"}),
        (lambda: encode(photo(), "PNG"), {"size": "preview"}),  # only JPEG has DCT scaling
        (lambda: encode(photo(), "WEBP", quality=80), {"size": "preview"}),
        (cmyk_jpeg, {"size": "preview"}),
        (lambda: jpeg(photo((2000, 2400))), {"size": "preview"}),  # 1/2 would be 1000 px wide: under the model's 1024
    ],
    ids=["default", "size-full", "png", "webp", "cmyk", "too-small"],
)
def test_these_are_decoded_at_full_size(make: Any, options: dict[str, Any], settings: Settings) -> None:
    decoded, size = decoded_size(make(), settings, **options)
    assert decoded == size


def test_a_cmyk_jpeg_keeps_its_colours_and_size(settings: Settings, cache: SessionCache) -> None:
    result = run(cmyk_jpeg(), settings, cache, size="preview")
    assert (result.width, result.height) == output_size(*BIG, "preview") and result.foreground_found


def test_an_rgb_profile_stays_with_a_drafted_photo(settings: Settings, cache: SessionCache) -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = jpeg(photo(), icc_profile=profile)
    decoded = decode(data, "photo.jpg", parse_options({"size": "preview"}), settings)
    assert decoded.image.size == (1200, 1050) and decoded.icc_profile == profile
    assert decode_png(run(data, settings, cache, size="preview").data).info.get("icc_profile") == profile


def test_too_large_is_refused_from_the_real_size_with_the_same_message(make_settings: Any, cache: SessionCache) -> None:
    settings = make_settings(MAX_IMAGE_PIXELS="4000000")
    data = jpeg(photo())
    messages = []
    for options in ({"size": "preview"}, {}):
        with pytest.raises(ImageTooLarge, match=r"2400x2100 \(5\.0 MP\); the limit is 4 MP\.") as refused:
            run(data, settings, cache, **options)
        messages.append((refused.value.message, refused.value.hint))
    assert messages[0] == messages[1]


def test_a_draft_prediction_is_never_served_for_a_full_decode(make_settings: Any, tiny_model: Any) -> None:
    """Both orders: the full-size output after a preview is the one a fresh cache gives, and each is reused."""
    settings = make_settings()
    data = jpeg(photo())
    mask = {"channels": "alpha", "decontaminate": False}  # the cheapest full-size output: the key is what is tested
    fresh = run(data, settings, SessionCache(settings), **mask)
    cache = SessionCache(settings)
    assert not run(data, settings, cache, size="preview", **mask).prediction_reused
    after_preview = run(data, settings, cache, **mask)
    assert not after_preview.prediction_reused and after_preview.data == fresh.data
    assert run(data, settings, cache, **mask).prediction_reused
    assert run(data, settings, cache, size="preview").prediction_reused  # same draft, other output
    assert len(cache.predictions) == 2


def test_the_draft_prediction_has_a_key_of_its_own() -> None:
    full = photo_key(b"photo", "isnet-general-use", "cpu")
    assert photo_key(b"photo", "isnet-general-use", "cpu", (1200, 1050)) not in (
        full,
        photo_key(b"photo", "isnet-general-use", "cpu", (600, 525)),
    )
