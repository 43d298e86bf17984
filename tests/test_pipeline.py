"""The pipeline on a tiny brightness model: formats, modes, orientation, options and every typed error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bgremove.core.errors import CorruptImage, ImageTooLarge, InvalidOption, UnsupportedFormat
from bgremove.core.pipeline import RemovalOptions, output_name_for, parse_color, remove_background
from tests.conftest import build_brightness_model, decode_png, encode, square_photo


def alpha_of(png: bytes) -> np.ndarray:
    image = decode_png(png)
    assert image.mode == "RGBA"
    return np.asarray(image)[..., 3]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_cutout_keeps_bright_centre_and_clears_corners(fmt, settings, cache):
    data = encode(square_photo((200, 120)), fmt)
    result = remove_background(data, f"photo.{fmt.lower()}", settings=settings, cache=cache)
    alpha = alpha_of(result.png)
    assert alpha.shape == (120, 200)
    assert (result.width, result.height) == (200, 120)
    assert alpha[50:70, 80:120].min() > 200
    assert max(alpha[0, 0], alpha[0, -1], alpha[-1, 0], alpha[-1, -1]) < 20
    assert result.output_name == "photo.png"
    assert set(result.stages) == {"decode", "load", "mask", "cutout", "encode"}
    assert result.metadata()["model"] == "tiny-u2net.onnx"


def test_colours_are_kept_unpremultiplied(settings, cache):
    image = square_photo((100, 100))
    result = remove_background(encode(image, "PNG"), "p.png", settings=settings, cache=cache)
    out = np.asarray(decode_png(result.png))
    visible = out[..., 3] > 0
    assert visible.any() and (~visible).any()
    assert np.array_equal(out[..., :3][visible], np.asarray(image)[visible])
    assert not out[..., :3][~visible].any()  # fully transparent pixels carry no colour


def test_only_mask_gives_grey_mask(settings, cache):
    result = remove_background(encode(square_photo(), "PNG"), options=RemovalOptions(only_mask=True),
                               settings=settings, cache=cache)
    mask = decode_png(result.png)
    assert mask.mode == "L"
    assert np.asarray(mask)[60, 100] > 200 and np.asarray(mask)[0, 0] < 20


def test_background_colour_fills_the_removed_area(settings, cache):
    options = RemovalOptions(bg_color=parse_color("#ff0000"))
    result = remove_background(encode(square_photo(), "PNG"), options=options, settings=settings, cache=cache)
    out = np.asarray(decode_png(result.png))
    assert tuple(out[0, 0]) == (255, 0, 0, 255)
    assert out[60, 100][1] > 200 and out[60, 100][3] == 255  # the photo's grey shows through, opaque


def test_post_process_mask_makes_the_mask_binary(settings, cache):
    result = remove_background(encode(square_photo(), "PNG"), options=RemovalOptions(post_process_mask=True, only_mask=True),
                               settings=settings, cache=cache)
    assert set(np.unique(np.asarray(decode_png(result.png)))) <= {0, 255}


def test_alpha_matting_runs_and_keeps_size(settings, cache):
    options = RemovalOptions(alpha_matting=True, alpha_matting_erode_size=2)
    result = remove_background(encode(square_photo((64, 48)), "PNG"), options=options, settings=settings, cache=cache)
    alpha = alpha_of(result.png)
    assert alpha.shape == (48, 64) and alpha[24, 32] > 200 and alpha[0, 0] < 30


# EXIF orientation: stored pixels have a white left half; viewers rotate by the tag.
@pytest.mark.parametrize(
    ("orientation", "white_side"),
    [(1, "left"), (3, "right"), (6, "top"), (8, "bottom")],
)
def test_exif_orientation_is_applied(orientation, white_side, settings, cache):
    stored = np.zeros((40, 80, 3), dtype=np.uint8)
    stored[:, :40] = 255
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    result = remove_background(encode(image, "JPEG", exif=exif.tobytes(), quality=95), "r.jpg",
                               options=RemovalOptions(only_mask=True), settings=settings, cache=cache)
    mask = np.asarray(decode_png(result.png)).astype(int)
    rotated = orientation in (6, 8)
    assert mask.shape == ((80, 40) if rotated else (40, 80))
    h, w = mask.shape
    halves = {
        "left": (mask[:, : w // 2], mask[:, w // 2 :]),
        "right": (mask[:, w // 2 :], mask[:, : w // 2]),
        "top": (mask[: h // 2], mask[h // 2 :]),
        "bottom": (mask[h // 2 :], mask[: h // 2]),
    }[white_side]
    assert halves[0].mean() > 200 and halves[1].mean() < 50


def test_odd_modes_are_normalised(settings, cache):
    base = square_photo((60, 40))
    palette = base.convert("P")
    palette.info["transparency"] = 0
    grey16 = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)
    assert grey16.mode == "I;16"
    frames = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    animated = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)
    cases = {
        "cmyk.jpg": encode(base.convert("CMYK"), "JPEG"),
        "palette.png": encode(palette, "PNG", transparency=0),
        "la.png": encode(base.convert("LA"), "PNG"),
        "grey16.png": encode(grey16, "PNG"),
        "animated.webp": animated,
        "bw.png": encode(base.convert("1"), "PNG"),
    }
    for name, data in cases.items():
        alpha = alpha_of(remove_background(data, name, settings=settings, cache=cache).png)
        assert alpha.shape == (40, 60), name
        assert alpha[20, 30] > 150 and alpha[0, 0] < 60, name


def test_input_transparency_is_kept(settings, cache):
    image = square_photo((60, 40), "RGBA")
    pixels = np.asarray(image).copy()
    pixels[:, 40:, 3] = 0  # the right of the bright square is transparent in the input
    result = remove_background(encode(Image.fromarray(pixels), "PNG"), settings=settings, cache=cache)
    alpha = alpha_of(result.png)
    assert alpha[20, 25] > 200 and alpha[20, 42] == 0


def test_icc_profile_is_carried_over(settings, cache):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    result = remove_background(encode(square_photo(), "JPEG", icc_profile=profile), settings=settings, cache=cache)
    assert decode_png(result.png).info.get("icc_profile") == profile


# --- typed errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"GIF89a" + b"\x00" * 40, "GIF"),
        (b"BM" + b"\x00" * 60, "BMP"),
        (b"II*\x00" + b"\x00" * 60, "TIFF"),
        (b"\x00\x00\x00\x18ftypheic" + b"\x00" * 40, "HEIC"),
        (b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
        (bytes(range(256)) * 4, "not an image format we recognise"),
    ],
)
def test_unsupported_format_says_what_was_received(data, says, settings, cache):
    with pytest.raises(UnsupportedFormat) as caught:
        remove_background(data, "upload.png", settings=settings, cache=cache)
    assert says in caught.value.message and "png, jpg, jpeg, webp" in caught.value.message


def test_allowed_extensions_setting_is_enforced(make_settings, cache):
    settings = make_settings(ALLOWED_EXTENSIONS="png")
    with pytest.raises(UnsupportedFormat, match="JPEG"):
        remove_background(encode(square_photo(), "JPEG"), settings=settings, cache=cache)


def test_content_wins_over_the_extension(settings, cache):
    result = remove_background(encode(square_photo(), "PNG"), "actually-png.jpg", settings=settings, cache=cache)
    assert result.output_name == "actually-png.png"


def test_file_over_size_limit(make_settings, cache):
    settings = make_settings(MAX_IMAGE_SIZE_MB="0.01")
    with pytest.raises(ImageTooLarge, match="limit is 0.01 MB"):
        remove_background(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20_000, settings=settings, cache=cache)


def test_decompression_bomb_is_refused_before_decoding(make_settings, cache):
    settings = make_settings(MAX_IMAGE_PIXELS="1000000")
    bomb = encode(Image.new("L", (4000, 4000)), "PNG")  # 16 MP, a few KB
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLarge, match="4000x4000"):
        remove_background(bomb, "bomb.png", settings=settings, cache=cache)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_image_is_corrupt(fmt, settings, cache):
    data = encode(square_photo((300, 300)), fmt)
    with pytest.raises(CorruptImage, match="cannot be decoded"):
        remove_background(data[: len(data) // 2], "cut." + fmt.lower(), settings=settings, cache=cache)


def test_empty_file_is_corrupt(settings, cache):
    with pytest.raises(CorruptImage, match="empty"):
        remove_background(b"", "empty.png", settings=settings, cache=cache)


def test_unknown_model_lists_valid_names(settings, cache):
    with pytest.raises(InvalidOption) as caught:
        remove_background(encode(square_photo(), "PNG"), options=RemovalOptions(model="nope"), settings=settings, cache=cache)
    assert "Unknown model 'nope'" in caught.value.message and "u2net" in caught.value.hint


def test_requests_cannot_name_other_onnx_files(settings, cache, tmp_path):
    other = build_brightness_model(tmp_path / "other.onnx")
    with pytest.raises(InvalidOption, match="REMBG_MODEL_NAME"):
        remove_background(encode(square_photo(), "PNG"), options=RemovalOptions(model=str(other)), settings=settings, cache=cache)


@pytest.mark.parametrize(
    "options",
    [
        RemovalOptions(alpha_matting_foreground_threshold=300),
        RemovalOptions(alpha_matting_erode_size=-1),
        RemovalOptions(alpha_matting_foreground_threshold=10, alpha_matting_background_threshold=20),
    ],
)
def test_invalid_options(options, settings, cache):
    with pytest.raises(InvalidOption):
        remove_background(encode(square_photo(), "PNG"), options=options, settings=settings, cache=cache)


@pytest.mark.parametrize(
    ("text", "rgba"),
    [("#00ff00", (0, 255, 0, 255)), ("ff000080", (255, 0, 0, 128)), ("1,2,3", (1, 2, 3, 255)), ("1, 2, 3, 4", (1, 2, 3, 4))],
)
def test_parse_color(text, rgba):
    assert parse_color(text) == rgba


@pytest.mark.parametrize("text", ["red", "#12345", "1,2", "256,0,0", "#gggggg"])
def test_parse_color_rejects(text):
    with pytest.raises(InvalidOption):
        parse_color(text)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a/b/Holiday.JPG", "Holiday.png"), ("..\\..\\evil.webp", "evil.png"), (None, "image.png"), ("x\x00y.png", "x_y.png")],
)
def test_output_name(name, expected):
    assert output_name_for(name) == expected
