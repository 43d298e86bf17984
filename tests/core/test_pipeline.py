"""The one pipeline on a tiny brightness model: formats, modes, orientation, options, metadata and typed errors."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from bgremove.core.compose import output_size, resize_premultiplied
from bgremove.core.errors import CorruptImage, ImageTooLarge, InvalidOption, UnsupportedFormat
from bgremove.core.options import RemovalOptions, parse_options
from bgremove.core.pipeline import METADATA_KEYS, Result, remove_background, working_size
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from tests.conftest import build_brightness_model, decode_png, encode, square_photo


def run(data: bytes, settings: Settings, cache: SessionCache, name: str | None = "photo.png", **options: Any) -> Result:
    return remove_background(data, name, parse_options(options), settings=settings, cache=cache)


def alpha_of(png: bytes) -> np.ndarray:
    image = decode_png(png)
    assert image.mode == "RGBA"
    return np.asarray(image)[..., 3]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_cutout_keeps_bright_centre_and_clears_corners(fmt: str, settings: Settings, cache: SessionCache) -> None:
    result = run(encode(square_photo((200, 120)), fmt), settings, cache, f"photo.{fmt.lower()}")
    alpha = alpha_of(result.data)
    assert alpha.shape == (120, 200) and (result.width, result.height) == (200, 120)
    assert alpha[50:70, 80:120].min() > 230  # (the real model's interior is exactly 255: tests/test_real_model.py)
    assert max(alpha[0, 0], alpha[0, -1], alpha[-1, 0], alpha[-1, -1]) == 0
    assert result.output_name == "photo.png" and result.media_type == "image/png"
    assert result.metadata()["model"] == "tiny-u2net.onnx"


def test_metadata_has_the_shared_keys_and_the_subject_box(settings: Settings, cache: SessionCache) -> None:
    result = run(encode(square_photo((200, 120)), "PNG"), settings, cache)
    metadata = result.metadata()
    assert set(metadata) <= set(METADATA_KEYS)
    alpha = alpha_of(result.data)
    rows, cols = np.nonzero(alpha > 25)
    assert (metadata["foreground_left"], metadata["foreground_top"]) == (cols.min(), rows.min())
    assert metadata["foreground_width"] == cols.max() - cols.min() + 1
    assert metadata["format"] == "png" and metadata["foreground_found"] is True


def test_without_decontamination_visible_pixels_keep_the_photo_colour(settings: Settings, cache: SessionCache) -> None:
    """decontaminate=false gives today's pixels: the photo's colour wherever alpha > 0, none where it is 0."""
    image = square_photo((100, 100))
    out = np.asarray(decode_png(run(encode(image, "PNG"), settings, cache, decontaminate=False).data))
    visible, clear = out[..., 3] > 0, out[..., 3] == 0
    assert visible.any() and clear.any()
    assert np.array_equal(out[..., :3][visible], np.asarray(image)[visible])
    assert not out[..., :3][clear].any()


def test_decontamination_changes_only_see_through_pixels(settings: Settings, cache: SessionCache) -> None:
    """A soft edge (the subject's border blurred into the dark background) gets the subject's colour back."""
    image = cv2.GaussianBlur(np.asarray(square_photo((200, 200))), (0, 0), 4)
    out = np.asarray(decode_png(run(encode(Image.fromarray(image), "PNG"), settings, cache).data))
    opaque, see_through = out[..., 3] == 255, (out[..., 3] > 0) & (out[..., 3] < 255)
    changed = (out[..., :3] != image).any(axis=2) & (out[..., 3] > 0)
    assert not changed[opaque].any()
    assert see_through.sum() > 1000 and changed[see_through].mean() > 0.9  # the edge pixels did change ...
    subject = 235  # ... towards the subject's colour, away from the dark background mixed into them
    before, after = (np.abs(pixels[see_through].astype(int) - subject).mean() for pixels in (image, out[..., :3]))
    assert after < 0.7 * before


def test_channels_alpha_and_the_only_mask_alias_give_the_same_grey_mask(settings: Settings, cache: SessionCache) -> None:
    data = encode(square_photo(), "PNG")
    masks = [decode_png(run(data, settings, cache, **opts).data) for opts in ({"channels": "alpha"}, {"only_mask": True})]
    assert all(mask.mode == "L" for mask in masks)
    assert np.array_equal(np.asarray(masks[0]), np.asarray(masks[1]))
    assert np.asarray(masks[0])[60, 100] > 230 and np.asarray(masks[0])[0, 0] == 0


def test_background_colour_fills_the_removed_area(settings: Settings, cache: SessionCache) -> None:
    out = np.asarray(decode_png(run(encode(square_photo(), "PNG"), settings, cache, bg_color="#ff0000").data))
    assert tuple(out[0, 0][:3]) == (255, 0, 0)
    assert out[60, 100][1] > 200


def test_jpg_output_on_a_colour(settings: Settings, cache: SessionCache) -> None:
    result = run(encode(square_photo(), "PNG"), settings, cache, format="jpg", bg_color="0000ff", quality=95)
    image = Image.open(io.BytesIO(result.data))
    assert image.format == "JPEG" and result.media_type == "image/jpeg" and result.output_name == "photo.jpg"
    corner = np.asarray(image)[2, 2].astype(int)
    assert corner[2] > 230 and corner[0] < 25


@pytest.mark.parametrize(
    ("options", "shrinks"),
    [
        ({"size": "preview"}, True),
        ({"size": "medium", "roi": "10% 0% 90% 100%", "bg_color": "red", "add_shadow": True}, True),
        ({"size": "full"}, False),
        ({"size": "preview", "crop": True}, False),  # the output size depends on the subject's box
        ({"size": "preview", "scale": "80%"}, False),
        ({"size": "preview", "position": "center"}, False),
        ({"size": "preview", "roi": "10 0 190 120"}, False),  # px of the input
        ({"size": "preview", "alpha_matting": True}, False),  # erode size in px of the input
        ({"size": "preview", "post_process_mask": True}, False),  # kernel in px of the input
    ],
)
def test_a_size_budget_alone_moves_the_work_to_the_output_size(options: dict[str, Any], shrinks: bool) -> None:
    full = (4000, 3000)
    assert working_size(*full, parse_options(options)) == (output_size(*full, options["size"]) if shrinks else full)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_working_at_the_output_size_gives_the_full_size_result_shrunk(mode: str, settings: Settings, cache: SessionCache) -> None:
    """size=preview computed at preview size matches the full-size cutout shrunk (premultiplied) to that size."""
    photo = square_photo((1200, 800)).convert(mode)
    if mode == "RGBA":
        photo.putalpha(Image.linear_gradient("L").resize(photo.size))  # the input's own transparency, top to bottom
    data = encode(photo, "PNG")
    small = np.asarray(decode_png(run(data, settings, cache, size="preview").data)).astype(float)
    big = np.asarray(decode_png(run(data, settings, cache).data))
    colour, alpha = resize_premultiplied(big[..., :3], big[..., 3] / np.float32(255), (small.shape[1], small.shape[0]))
    assert small.shape[:2] == output_size(1200, 800, "preview")[::-1]
    alpha_error = np.abs(small[..., 3] - alpha * 255)
    assert alpha_error.mean() < 0.5 and alpha_error.max() < 32  # the same cutout; edges resampled once, not twice
    seen = (small[..., 3] > 128) & (alpha * 255 > 128)
    assert np.abs(small[..., :3] - colour)[seen].mean() < 1.0


def test_post_process_mask_keeps_soft_edges(settings: Settings, cache: SessionCache) -> None:
    """Smoothing removes specks but a soft edge stays soft (rembg's version made the mask binary)."""
    gradient = np.tile(np.linspace(0, 255, 200, dtype=np.float32), (120, 1))
    photo = Image.fromarray(np.dstack([gradient] * 3).astype(np.uint8))
    plain = np.asarray(decode_png(run(encode(photo, "PNG"), settings, cache, channels="alpha").data))
    smooth = np.asarray(decode_png(run(encode(photo, "PNG"), settings, cache, channels="alpha", post_process_mask=True).data))
    partial = (smooth > 0) & (smooth < 255)
    assert partial.sum() > 0.2 * partial.size
    assert np.abs(smooth.astype(int) - plain.astype(int)).mean() < 10


def test_post_process_mask_drops_specks(settings: Settings, cache: SessionCache) -> None:
    pixels = np.asarray(square_photo((200, 120))).copy()
    pixels[5:7, 5:7] = 255  # a 2x2 bright speck in the background
    smooth = np.asarray(
        decode_png(run(encode(Image.fromarray(pixels), "PNG"), settings, cache, channels="alpha", post_process_mask=True).data)
    )
    assert smooth[5:7, 5:7].max() < 40 and smooth[60, 100] > 230
    assert smooth[2:10, 2:10].max() < 40


def test_alpha_matting_runs_and_keeps_size(settings: Settings, cache: SessionCache) -> None:
    result = run(encode(square_photo((64, 48)), "PNG"), settings, cache, alpha_matting=True, alpha_matting_erode_size=2)
    alpha = alpha_of(result.data)
    assert alpha.shape == (48, 64) and alpha[24, 32] > 200 and alpha[0, 0] < 30


@pytest.mark.parametrize(("orientation", "white_side"), [(1, "left"), (3, "right"), (6, "top"), (8, "bottom")])
def test_exif_orientation_is_applied(orientation: int, white_side: str, settings: Settings, cache: SessionCache) -> None:
    stored = np.zeros((40, 80, 3), dtype=np.uint8)
    stored[:, :40] = 255
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    result = run(encode(image, "JPEG", exif=exif.tobytes(), quality=95), settings, cache, "r.jpg", channels="alpha")
    mask = np.asarray(decode_png(result.data)).astype(int)
    assert mask.shape == ((80, 40) if orientation in (6, 8) else (40, 80))
    h, w = mask.shape
    halves = {
        "left": (mask[:, : w // 2], mask[:, w // 2 :]),
        "right": (mask[:, w // 2 :], mask[:, : w // 2]),
        "top": (mask[: h // 2], mask[h // 2 :]),
        "bottom": (mask[h // 2 :], mask[: h // 2]),
    }[white_side]
    assert halves[0].mean() > 200 and halves[1].mean() < 50


def test_odd_modes_are_normalised(settings: Settings, cache: SessionCache) -> None:
    base = square_photo((60, 40))
    palette = base.convert("P")
    grey16 = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)
    assert grey16.mode == "I;16"
    frames = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    cases = {
        "cmyk.jpg": encode(base.convert("CMYK"), "JPEG"),
        "palette.png": encode(palette, "PNG", transparency=0),
        "la.png": encode(base.convert("LA"), "PNG"),
        "grey16.png": encode(grey16, "PNG"),
        "animated.webp": encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100),
        "bw.png": encode(base.convert("1"), "PNG"),
    }
    for name, data in cases.items():
        alpha = alpha_of(run(data, settings, cache, name).data)
        assert alpha.shape == (40, 60), name
        assert alpha[20, 30] > 150 and alpha[0, 0] < 60, name


def test_input_transparency_is_kept(settings: Settings, cache: SessionCache) -> None:
    pixels = np.asarray(square_photo((60, 40), "RGBA")).copy()
    pixels[:, 40:, 3] = 0  # the right of the bright square is transparent in the input
    alpha = alpha_of(run(encode(Image.fromarray(pixels), "PNG"), settings, cache).data)
    assert alpha[20, 25] > 200 and alpha[20, 42] == 0


def test_an_rgb_profile_stays_with_rgb_output_but_never_with_a_mask(settings: Settings, cache: SessionCache) -> None:
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(square_photo(), "JPEG", icc_profile=profile)
    assert decode_png(run(data, settings, cache).data).info.get("icc_profile") == profile
    assert decode_png(run(data, settings, cache, channels="alpha").data).info.get("icc_profile") is None


def test_gps_exif_is_never_copied(settings: Settings, cache: SessionCache) -> None:
    image = square_photo()
    exif = image.getexif()
    exif[0x8825] = {2: (1.0, 2.0, 3.0)}  # GPSInfo
    exif[0x010F] = "Camera maker"
    for fmt in ("png", "jpg", "webp"):
        out = Image.open(io.BytesIO(run(encode(image, "JPEG", exif=exif.tobytes()), settings, cache, format=fmt).data))
        assert not dict(out.getexif()), fmt


def test_roi_keeps_foreground_inside_only(settings: Settings, cache: SessionCache) -> None:
    mask = np.asarray(
        decode_png(run(encode(square_photo((200, 120)), "PNG"), settings, cache, channels="alpha", roi="0% 0% 50% 100%").data)
    )
    assert mask[60, 60] > 230 and mask[:, 101:].max() == 0


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
def test_unsupported_format_says_what_was_received(data: bytes, says: str, settings: Settings, cache: SessionCache) -> None:
    with pytest.raises(UnsupportedFormat) as caught:
        run(data, settings, cache, "upload.png")
    assert says in caught.value.message and "png, jpg, jpeg, webp" in caught.value.message


def test_allowed_extensions_setting_is_enforced(make_settings: Any, cache: SessionCache) -> None:
    with pytest.raises(UnsupportedFormat, match="JPEG"):
        run(encode(square_photo(), "JPEG"), make_settings(ALLOWED_EXTENSIONS="png"), cache)


def test_content_wins_over_the_extension(settings: Settings, cache: SessionCache) -> None:
    assert run(encode(square_photo(), "PNG"), settings, cache, "actually-png.jpg").output_name == "actually-png.png"


def test_file_over_size_limit(make_settings: Any, cache: SessionCache) -> None:
    with pytest.raises(ImageTooLarge, match=r"limit is 0\.01 MB"):
        run(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20_000, make_settings(MAX_IMAGE_SIZE_MB="0.01"), cache)


def test_decompression_bomb_is_refused_before_decoding(make_settings: Any, cache: SessionCache) -> None:
    bomb = encode(Image.new("L", (4000, 4000)), "PNG")  # 16 MP, a few KB
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLarge, match="4000x4000"):
        run(bomb, make_settings(MAX_IMAGE_PIXELS="1000000"), cache, "bomb.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_image_is_corrupt(fmt: str, settings: Settings, cache: SessionCache) -> None:
    data = encode(square_photo((300, 300)), fmt)
    with pytest.raises(CorruptImage, match="cannot be decoded"):
        run(data[: len(data) // 2], settings, cache, "cut." + fmt.lower())


def test_empty_file_is_corrupt(settings: Settings, cache: SessionCache) -> None:
    with pytest.raises(CorruptImage, match="empty"):
        run(b"", settings, cache, "empty.png")


def test_unknown_model_lists_valid_names(settings: Settings, cache: SessionCache) -> None:
    with pytest.raises(InvalidOption) as caught:
        run(encode(square_photo(), "PNG"), settings, cache, model="nope")
    assert "Unknown model 'nope'" in caught.value.message and "u2net" in caught.value.hint


def test_requests_cannot_name_other_onnx_files(settings: Settings, cache: SessionCache, tmp_path: Path) -> None:
    other = build_brightness_model(tmp_path / "other.onnx")
    with pytest.raises(InvalidOption, match="REMBG_MODEL_NAME"):
        run(encode(square_photo(), "PNG"), settings, cache, model=str(other))


def test_sam_needs_a_prompt_so_it_is_not_offered() -> None:
    from bgremove.core.registry import CATALOG

    assert "sam" not in CATALOG
    assert RemovalOptions().model is None
