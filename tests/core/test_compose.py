"""compose(): crop + margin, scale/position, size, shadow, backgrounds, channels, JPG white fill, premultiplied resize.

Inputs are real photos (skimage.data) or images built here, with alphas whose boxes we know exactly.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image
from skimage import data as photos

from bgremove.core import codecs
from bgremove.core.compose import (
    SUBJECT_ALPHA_THRESHOLD,
    Box,
    Composition,
    apply_roi,
    compose,
    resize_premultiplied,
    shadow_of,
    stack_vertically,
    subject_box,
)
from bgremove.core.options import RemovalOptions, parse_options, parse_roi


def scene(width: int = 400, height: int = 300, box: Box = Box(150, 100, 100, 60)) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut photo (resized to width x height) with a rectangular subject whose alpha box is `box`.

    A one-pixel soft rim at alpha 0.05 (below the subject threshold) surrounds the box: it must not count.
    """
    rgb = np.asarray(Image.fromarray(photos.astronaut()).resize((width, height)))
    alpha = np.zeros((height, width), np.float32)
    alpha[box.top - 1 : box.bottom + 1, box.left - 1 : box.right + 1] = 0.05
    alpha[box.top : box.bottom, box.left : box.right] = 1.0
    alpha[box.top, box.left : box.right] = 0.5  # a soft top edge, still clearly subject
    return rgb, alpha


def alpha_of(composition: Composition) -> np.ndarray:
    return np.asarray(composition.image.getchannel("A"))


def run(rgb: np.ndarray, alpha: np.ndarray, **options: object) -> Composition:
    return compose(rgb, alpha, parse_options(options))


# --- default path ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(400, 300), (1000, 701)])  # one blending strip, then several
def test_default_is_the_cutout_with_cleared_transparent_pixels(width: int, height: int) -> None:
    rgb, alpha = scene(width, height)
    before = rgb.copy(), alpha.copy()
    result = run(rgb, alpha)
    pixels = np.asarray(result.image)
    assert result.image.mode == "RGBA" and result.image.size == (width, height) and not result.opaque
    expected_alpha = np.rint(alpha * 255).astype(np.uint8)
    assert np.array_equal(pixels[..., 3], expected_alpha)
    visible = expected_alpha > 0
    assert np.array_equal(pixels[..., :3][visible], rgb[visible])
    assert not pixels[..., :3][~visible].any()  # colour 0 under alpha 0
    assert result.foreground == Box(150, 100, 100, 60)
    assert np.array_equal(rgb, before[0]) and np.array_equal(alpha, before[1])  # inputs untouched


def test_subject_box_uses_the_threshold_for_float_and_uint8() -> None:
    alpha = np.zeros((50, 60), np.float32)
    alpha[10:20, 5:30] = SUBJECT_ALPHA_THRESHOLD + 0.01
    alpha[0:5, 0:60] = SUBJECT_ALPHA_THRESHOLD - 0.01  # haze: not the subject
    assert subject_box(alpha) == Box(5, 10, 25, 10)
    assert subject_box(np.rint(alpha * 255).astype(np.uint8)) == Box(5, 10, 25, 10)
    assert subject_box(np.zeros((5, 5), np.float32)) is None


def test_no_subject_gives_no_box_and_crop_keeps_the_image() -> None:
    rgb, _ = scene()
    result = run(rgb, np.zeros((300, 400), np.float32), crop=True)
    assert result.foreground is None and result.image.size == (400, 300)


# --- crop -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("margin", "expected"),
    [
        ("0", Box(150, 100, 100, 60)),
        ("10px", Box(140, 90, 120, 80)),
        ("10px 20px", Box(130, 90, 140, 80)),  # vertical horizontal
        ("5px 10px 15px 20px", Box(130, 95, 130, 80)),  # top right bottom left
        ("10%", Box(140, 94, 120, 72)),  # % of the subject's width (sides) and height (top/bottom)
        ("10% 20%", Box(130, 94, 140, 72)),
        ("0 0 0 50%", Box(100, 100, 150, 60)),
    ],
)
def test_crop_is_the_alpha_box_plus_the_margin(margin: str, expected: Box) -> None:
    rgb, alpha = scene()
    result = run(rgb, alpha, crop=True, crop_margin=margin)
    assert result.image.size == (expected.width, expected.height)
    cut = (slice(expected.top, expected.bottom), slice(expected.left, expected.right))
    assert np.array_equal(alpha_of(result), np.rint(alpha[cut] * 255).astype(np.uint8))
    assert result.foreground == Box(150 - expected.left, 100 - expected.top, 100, 60)


def test_crop_margin_is_clipped_at_the_image_borders() -> None:
    rgb, alpha = scene(box=Box(5, 3, 100, 60))
    result = run(rgb, alpha, crop=True, crop_margin="50px")
    assert result.image.size == (5 + 100 + 50, 3 + 60 + 50)
    assert result.foreground == Box(5, 3, 100, 60)


# --- size -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "megapixels"), [("preview", 0.25), ("medium", 1.5)])
def test_size_stays_within_its_budget_and_keeps_the_aspect_ratio(size: str, megapixels: float) -> None:
    rgb, alpha = scene(1600, 1000, Box(400, 300, 500, 400))
    result = run(rgb, alpha, size=size)
    width, height = result.image.size
    assert width * height <= megapixels * 1e6
    assert width * height > 0.98 * megapixels * 1e6
    assert abs(width / height - 1.6) < 2 / height


def test_size_never_upscales() -> None:
    rgb, alpha = scene()
    assert run(rgb, alpha, size="preview").image.size == (400, 300)


def test_premultiplied_resize_leaves_no_dark_fringe() -> None:
    """A red disc with a soft edge on transparent black: the shrunk edge stays red, not dark red."""
    size = 1200
    yy, xx = np.mgrid[:size, :size]
    distance = np.hypot(yy - size / 2, xx - size / 2)
    alpha = np.clip((400 - distance) / 3, 0, 1).astype(np.float32)  # a 3 px soft edge, shrunk 2.4x below
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[alpha > 0] = (255, 0, 0)  # colour only under the subject, black (as cleared) elsewhere
    result = run(rgb, alpha, size="preview")
    pixels = np.asarray(result.image)
    edge = (pixels[..., 3] > 10) & (pixels[..., 3] < 245)
    assert edge.sum() > 100
    assert pixels[..., 0][edge].min() >= 250 and pixels[..., 1:3][edge].max() <= 2
    # the unpremultiplied resize this replaces would darken the rim towards black
    naive = np.asarray(Image.fromarray(rgb).resize(result.image.size, Image.Resampling.BOX))
    assert naive[..., 0][edge].min() < 200


def test_resize_premultiplied_keeps_opaque_colours_exactly() -> None:
    rgb = np.asarray(Image.fromarray(photos.chelsea()).resize((200, 100)))
    alpha = np.ones((100, 200), np.float32)
    colour, coverage = resize_premultiplied(rgb, alpha, (100, 50))
    assert np.allclose(coverage, 1.0)
    reference = np.asarray(Image.fromarray(rgb).resize((100, 50), Image.Resampling.BOX)).astype(int)
    assert np.abs(colour.astype(int) - reference).max() <= 1


@pytest.mark.parametrize(("source", "target"), [((900, 401), (350, 160)), ((300, 200), (900, 601))])
def test_resize_premultiplied_matches_float_premultiplication(source: tuple[int, int], target: tuple[int, int]) -> None:
    """Shrinking and enlarging, over several strips: the same as premultiplying, resizing and dividing in float."""
    import cv2

    rgb, alpha = soft_scene(source)
    colour, coverage = resize_premultiplied(rgb, alpha, target)
    alpha8 = np.rint(alpha * 255) / 255  # the resize works on 8-bit alpha, as the PNG stores it
    shrinking = target[0] <= source[0]
    packed = np.dstack([rgb * alpha8[..., None], alpha8]).astype(np.float32)
    resized = cv2.resize(packed, target, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    assert np.abs(coverage - resized[..., 3]).max() < 1e-3
    seen = resized[..., 3] > 0.05
    expected = resized[..., :3][seen] / resized[..., 3][seen][:, None]
    assert np.abs(colour[seen].astype(float) - expected).max() <= 1.0 + 1e-3
    assert not colour[resized[..., 3] == 0].any()


# --- scale / position -----------------------------------------------------------------------------------------


def test_scale_and_center_put_the_subject_in_the_middle_at_that_scale() -> None:
    rgb, alpha = scene(box=Box(20, 30, 100, 50))
    result = run(rgb, alpha, scale="50%", position="center")
    # the limiting side (width: 100 of 400, against height 50 of 300) becomes half the canvas's width
    assert result.image.size == (400, 300)
    assert result.foreground == Box(100, 100, 200, 100)
    assert subject_box(alpha_of(result)) == result.foreground


def test_scale_without_position_centres_as_removebg() -> None:
    rgb, alpha = scene(box=Box(20, 30, 100, 50))
    assert run(rgb, alpha, scale="50%").foreground == Box(100, 100, 200, 100)


def test_position_without_scale_keeps_the_subject_size() -> None:
    rgb, alpha = scene(box=Box(150, 100, 100, 60))
    result = run(rgb, alpha, position="0% 100%")
    assert result.foreground == Box(0, 240, 100, 60)
    assert np.array_equal(np.asarray(result.image)[240:, :100, :3], rgb[100:160, 150:250])


# --- roi ------------------------------------------------------------------------------------------------------


def test_roi_zeroes_alpha_outside_the_region() -> None:
    alpha = np.ones((100, 200), np.float32)
    inside = apply_roi(alpha, parse_roi("10% 20px 150px 50%"))
    assert inside[20:50, 20:150].min() == 1.0
    assert inside.sum() == 30 * 130
    assert apply_roi(alpha, parse_roi("0% 0% 100% 100%")) is alpha
    assert apply_roi(alpha, parse_roi("0 0 200px 100px")) is alpha


# --- shadow ---------------------------------------------------------------------------------------------------


def test_shadow_darkens_only_below_the_subject() -> None:
    rgb, alpha = scene(box=Box(150, 100, 100, 60))
    plain = np.asarray(run(rgb, alpha, bg_color="ffffff").image)
    shadowed = np.asarray(run(rgb, alpha, bg_color="ffffff", add_shadow=True).image)
    assert np.array_equal(shadowed[:99], plain[:99])  # above the subject (and its soft top edge): unchanged
    assert np.array_equal(shadowed[:, :140], plain[:, :140])  # well to the side: unchanged
    below = shadowed[160:165, 160:240].astype(int)
    assert below.max() < 255 and below.min() > 100  # darker, but a soft semi-transparent shadow
    assert np.array_equal(shadowed[101:160, 150:250], plain[101:160, 150:250])  # the opaque subject covers it


def test_shadow_on_transparent_output_is_semi_transparent_dark_alpha() -> None:
    rgb, alpha = scene(box=Box(150, 100, 100, 60))
    result = run(rgb, alpha, add_shadow=True)
    pixels = np.asarray(result.image)
    assert not pixels[:99, :, 3].any()
    rim = pixels[161:163, 160:240]  # below the subject and its faint one-pixel rim
    assert rim[..., 3].min() > 0 and rim[..., 3].max() <= 128  # at most the 50% opacity
    assert not rim[..., :3].any()  # black
    assert result.foreground == Box(150, 100, 100, 60)  # the metadata is the subject's box, not the shadow's


def test_a_shadow_drawn_in_strips_is_the_blurred_alpha_scaled_up_and_moved_down() -> None:
    import cv2

    _, alpha = scene(2000, 1500, Box(400, 100, 900, 1200))  # offset 36 px: blurred at 1/2 resolution
    shadow = shadow_of(alpha, subject_box(alpha))
    assert shadow.offset == 36 and shadow.small.shape == (750, 1000)
    moved = np.zeros((1500, 2000), np.float32)
    moved[36:] = cv2.resize(shadow.small, (2000, 1500), interpolation=cv2.INTER_LINEAR)[:-36]
    full = shadow.full()
    assert np.abs(full - moved).max() < 0.01 and not full[:36].any()
    strips = np.vstack([shadow.rows(slice(a, b)) for a, b in ((0, 7), (7, 40), (40, 901), (901, 1500))])
    assert np.abs(strips - full).max() < 1e-3


# --- backgrounds, channels, formats -----------------------------------------------------------------------------


def test_bg_color_fills_and_makes_the_result_opaque() -> None:
    rgb, alpha = scene()
    result = run(rgb, alpha, bg_color="#336699")
    assert result.image.mode == "RGB" and result.opaque
    pixels = np.asarray(result.image)
    assert tuple(pixels[0, 0]) == (0x33, 0x66, 0x99)
    assert np.array_equal(pixels[120, 200], rgb[120, 200])


def test_half_transparent_bg_color_stays_rgba() -> None:
    rgb, alpha = scene()
    result = run(rgb, alpha, bg_color="255,0,0,128")
    assert result.image.mode == "RGBA" and not result.opaque
    assert tuple(np.asarray(result.image)[0, 0]) == (255, 0, 0, 128)


def test_bg_image_covers_the_canvas_and_is_centred() -> None:
    rgb, alpha = scene(400, 300)
    backdrop = np.zeros((100, 400, 3), np.uint8)  # wider than the canvas: its middle half is shown
    backdrop[:, :100] = (255, 0, 0)
    backdrop[:, 100:300] = (0, 255, 0)
    backdrop[:, 300:] = (0, 0, 255)
    result = compose(rgb, alpha, RemovalOptions(), background=Image.fromarray(backdrop))
    pixels = np.asarray(result.image).astype(int)
    assert result.opaque and result.image.size == (400, 300)
    assert np.abs(pixels[5, 5] - (0, 255, 0)).max() <= 2 and np.abs(pixels[295, 395] - (0, 255, 0)).max() <= 2


# One blending strip, and several with a shorter last one (the blending runs in strips of STRIP_PIXELS pixels)
SIZES = [(300, 200), (900, 401)]


def soft_scene(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The coffee photo with a radial alpha: every level from 0 to 1 appears, as on hair and blurred edges."""
    width, height = size
    rgb = np.asarray(Image.fromarray(photos.coffee()).resize(size))
    yy, xx = np.mgrid[0:height, 0:width]
    alpha = np.clip(1.3 - np.hypot((xx - width / 2) / (0.3 * width), (yy - 0.45 * height) / (0.3 * height)), 0, 1)
    return rgb, alpha.astype(np.float32)


def coverage(alpha: np.ndarray, shadow: bool) -> np.ndarray:
    """How much of the backdrop the subject and its shadow hide."""
    return alpha + shadow_of(alpha, subject_box(alpha)).full() * (1 - alpha) if shadow else alpha


def float_composite(rgb: np.ndarray, alpha: np.ndarray, shadow: bool, behind: np.ndarray) -> np.ndarray:
    """The textbook formula in float64: subject over its black shadow over an opaque backdrop."""
    return rgb * alpha[..., None] + behind * (1 - coverage(alpha, shadow)[..., None].astype(np.float64))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shadow", [False, True])
@pytest.mark.parametrize("backdrop", ["bg_color", "bg_image", "jpg_white"])
def test_opaque_backdrops_match_the_float_formula_to_one_level(backdrop: str, shadow: bool, size: tuple[int, int]) -> None:
    rgb, alpha = soft_scene(size)
    picture = np.asarray(Image.fromarray(photos.astronaut()).resize(size))
    behind, background, options = {
        "bg_color": (np.array([0x33, 0x66, 0x99], float), None, {"bg_color": "336699"}),
        "bg_image": (picture.astype(float), Image.fromarray(picture), {}),
        "jpg_white": (np.array([255.0, 255.0, 255.0]), None, {"format": "jpg"}),
    }[backdrop]
    result = compose(rgb, alpha, parse_options(add_shadow=shadow, **options), background=background)
    assert result.opaque and result.image.mode == "RGB"
    error = np.abs(np.asarray(result.image).astype(float) - float_composite(rgb, alpha, shadow, behind))
    # one rounding, and one more where the shadow first darkens the backdrop
    assert error.max() <= (1.0 if shadow else 0.5) + 0.01, error.max()  # + float32 arithmetic
    solid, uncovered = alpha == 1, coverage(alpha, shadow) == 0
    assert solid.any() and uncovered.any()
    assert np.array_equal(np.asarray(result.image)[solid], rgb[solid])  # exact where the subject is solid
    assert error[uncovered].max() == 0  # and the backdrop exact where nothing covers it


@pytest.mark.parametrize("size", SIZES)
def test_transparent_shadow_output_matches_the_float_formula(size: tuple[int, int]) -> None:
    rgb, alpha = soft_scene(size)
    total = alpha + shadow_of(alpha, subject_box(alpha)).full() * (1 - alpha)
    pixels = np.asarray(run(rgb, alpha, add_shadow=True).image).astype(float)
    assert np.abs(pixels[..., 3] - total * 255).max() <= 0.5 + 1e-3
    seen = pixels[..., 3] > 0
    colour = rgb * (alpha / np.where(total > 0, total, 1))[..., None]  # the shadow's black mixed in
    # blendLinear adds 1e-5 to the weights' sum: at the faintest visible alpha (1/255) that is 0.3%, under a level
    assert np.abs(pixels[..., :3] - colour)[seen].max() <= 1.5
    assert not pixels[..., :3][~seen].any()


def test_a_bg_image_with_a_hole_shows_the_bg_color_through_it() -> None:
    rgb, alpha = scene()
    backdrop = np.zeros((300, 400, 4), np.uint8)
    backdrop[..., 1] = backdrop[..., 3] = 255  # opaque green
    backdrop[:20, :20, 3] = 0  # but the top-left corner is see-through
    result = compose(rgb, alpha, parse_options(bg_color="#ff0000"), background=Image.fromarray(backdrop, "RGBA"))
    pixels = np.asarray(result.image)
    assert result.opaque and tuple(pixels[5, 5]) == (255, 0, 0) and tuple(pixels[-5, -5]) == (0, 255, 0)


def test_channels_alpha_gives_the_mask() -> None:
    rgb, alpha = scene()
    result = run(rgb, alpha, channels="alpha", bg_color="red")
    assert result.image.mode == "L"
    assert np.array_equal(np.asarray(result.image), np.rint(alpha * 255).astype(np.uint8))


@pytest.mark.parametrize(("bg", "corner"), [(None, (255, 255, 255)), ("#336699", (0x33, 0x66, 0x99))])
def test_jpg_corners_are_the_background_or_white(bg: str | None, corner: tuple[int, int, int]) -> None:
    rgb, alpha = scene()
    options = parse_options(format="jpg", bg_color=bg, quality=95)
    encoded = codecs.encode(compose(rgb, alpha, options), options, png_compress_level=1, icc_profile=None)
    image = Image.open(io.BytesIO(encoded.data))
    assert image.format == "JPEG" and encoded.media_type == "image/jpeg"
    pixels = np.asarray(image).astype(int)
    for y, x in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        assert np.abs(pixels[y, x] - corner).max() <= 3


def test_webp_keeps_alpha() -> None:
    rgb, alpha = scene()
    options = parse_options(format="webp")
    encoded = codecs.encode(compose(rgb, alpha, options), options, png_compress_level=1, icc_profile=None)
    image = Image.open(io.BytesIO(encoded.data))
    assert image.format == "WEBP" and image.mode == "RGBA" and encoded.media_type == "image/webp"
    channel = np.asarray(image.getchannel("A"))
    assert channel[0, 0] == 0 and channel[130, 200] == 255


def test_zip_color_and_alpha_line_up_with_the_png_cutout() -> None:
    rgb, alpha = scene()
    png_options, zip_options = parse_options(add_shadow=True), parse_options(format="zip", add_shadow=True)
    cutout = compose(rgb, alpha, png_options).image
    encoded = codecs.encode(compose(rgb, alpha, zip_options), zip_options, png_compress_level=1, icc_profile=None)
    assert encoded.media_type == "application/zip" and encoded.extension == "zip"
    with zipfile.ZipFile(io.BytesIO(encoded.data)) as archive:
        assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
        color = Image.open(io.BytesIO(archive.read("color.jpg")))
        matte = Image.open(io.BytesIO(archive.read("alpha.png")))
    assert color.format == "JPEG" and color.mode == "RGB" and matte.mode == "L"
    assert color.size == matte.size == cutout.size
    assert np.array_equal(np.asarray(matte), np.asarray(cutout.getchannel("A")))
    assert np.abs(np.asarray(color).astype(int)[0, 0] - 255).max() <= 3  # no background: white


@pytest.mark.parametrize(
    "options",
    [
        {"crop": True, "crop_margin": "7%"},
        {"crop": True, "size": "preview"},
        {"size": "preview", "scale": "80%", "position": "20% 70%"},
        {"scale": "35%"},
    ],
)
def test_foreground_box_matches_the_output_alpha(options: dict[str, object]) -> None:
    rgb, alpha = scene(1200, 800, Box(700, 90, 300, 500))
    result = run(rgb, alpha, **options)
    assert result.foreground is not None
    assert subject_box(alpha_of(result)) == result.foreground


def test_every_option_at_once_on_a_photo() -> None:
    rgb, alpha = scene(1000, 800, Box(300, 200, 400, 500))
    options = parse_options(
        crop=True, crop_margin="5%", size="preview", format="jpg", bg_color="lightblue", add_shadow=True, scale="90%"
    )
    result = compose(rgb, alpha, options)
    assert result.opaque and result.image.mode == "RGB"
    assert result.image.width * result.image.height <= 250_000
    encoded = codecs.encode(result, options, png_compress_level=1, icc_profile=None)
    assert Image.open(io.BytesIO(encoded.data)).size == result.image.size


def test_stack_vertically_joins_masks_and_offsets_boxes() -> None:
    rgb, alpha = scene()
    one = run(rgb, alpha)
    assert stack_vertically([one]) is one
    both = stack_vertically([one, one])
    assert both.image.size == (400, 600)
    assert both.foreground == Box(150, 100, 100, 360)


@pytest.mark.parametrize("channels", ["rgba", "alpha"])
def test_the_encoded_alpha_is_rounded_and_keeps_the_ends(channels: str) -> None:
    alpha = np.array([[0.0, 1.0, 0.5, 0.2, 1 / 255, 0.999]], np.float32)
    image = compose(np.full((1, 6, 3), 200, np.uint8), alpha, parse_options(channels=channels)).image
    assert np.asarray(image.getchannel("A") if channels == "rgba" else image).tolist() == [[0, 255, 128, 51, 1, 255]]
