"""codecs: sniffing, decoding under limits, colour profiles (issue 12 item 9), EXIF stripping, the encoders, names.

The colour profiles are built here, byte by byte (ICC v2): LittleCMS cannot create Gray or CMYK profiles through
Pillow, and no profile files ship on the machine. Each is made so a test can tell whether it was applied.
"""

from __future__ import annotations

import io
import itertools
import struct
import zipfile

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms
from skimage import data as photos
from skimage.color import rgb2lab

from bgremove.core import codecs
from bgremove.core.compose import Composition, compose
from bgremove.core.errors import CorruptImage, ImageTooLarge, UnsupportedFormat
from bgremove.core.options import parse_options
from bgremove.core.settings import Settings, load_settings
from tests.conftest import encode

# --- hand-built ICC profiles ----------------------------------------------------------------------------------

D50 = (0.9642, 1.0, 0.8249)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def _curve(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))


def _description(text: str) -> bytes:
    ascii_text = text.encode() + b"\0"
    return b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text + b"\0" * 78


def icc_profile(space: str, tags: dict[str, bytes], pcs: str = "XYZ ", device: str = "mntr") -> bytes:
    """A minimal ICC v2 profile: header, tag table, 4-byte aligned tags."""
    tags = {"desc": _description(f"test {space.strip()}"), "wtpt": _xyz(*D50), **tags, "cprt": b"text\0\0\0\0none\0"}
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags.items():
        data += b"\0" * (-len(data) % 4)
        table += struct.pack(">4sII", signature.encode(), offset + len(body), len(data))
        body += data
    header = (
        struct.pack(">I4sI4s4s4s", offset + len(body), b"\0" * 4, 0x02100000, device.encode(), space.encode(), pcs.encode())
        + b"\0" * 12 + b"acsp" + b"\0" * 28 + _s15(D50[0]) + _s15(D50[1]) + _s15(D50[2]) + b"\0" * 48
    )  # fmt: skip
    return header + struct.pack(">I", len(tags)) + table + body


# Linear grey: stored 128 means 50% light, which sRGB writes as 188 (a naive L -> RGB copy keeps 128).
LINEAR_GRAY = icc_profile("GRAY", {"kTRC": _curve(1.0)})
# Adobe RGB (1998)'s primaries (D50-adapted) and gamma: an RGB profile that is not sRGB.
WIDE_RGB = icc_profile(
    "RGB ",
    {
        "rXYZ": _xyz(0.6097, 0.3111, 0.0195),
        "gXYZ": _xyz(0.2053, 0.6257, 0.0609),
        "bXYZ": _xyz(0.1492, 0.0632, 0.7446),
        **dict.fromkeys(("rTRC", "gTRC", "bTRC"), _curve(563 / 256)),
    },
)


def _swapped_cmyk() -> bytes:
    """A CMYK profile (lut8 A2B0, Lab PCS) whose cyan ink prints magenta: a naive conversion gives cyan."""
    clut = b""
    for c, m, y, k in itertools.product((0, 1), repeat=4):
        rgb = np.array([[[(1 - y) * (1 - k), (1 - c) * (1 - k), (1 - m) * (1 - k)]]], float)
        lightness, a, b = rgb2lab(rgb, illuminant="D50")[0, 0]
        clut += bytes([round(lightness / 100 * 255), round(a) + 128, round(b) + 128])
    ramp = bytes(range(256))
    identity = b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    lut = b"mft1\0\0\0\0" + bytes([4, 3, 2, 0]) + identity + ramp * 4 + clut + ramp * 3
    return icc_profile("CMYK", {"A2B0": lut}, pcs="Lab ", device="prtr")


SWAPPED_CMYK = _swapped_cmyk()


@pytest.fixture(scope="module")
def limits() -> Settings:
    return load_settings({})


def profile_space(icc: bytes) -> str:
    return str(ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space).strip()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def cutout(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The decoded pixels with a centred rectangular subject."""
    rgb = np.asarray(image.convert("RGB"))
    alpha = np.zeros(rgb.shape[:2], np.float32)
    h, w = alpha.shape
    alpha[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1.0
    return rgb, alpha


def encoded(composition: Composition, icc: bytes | None = None, **options: object) -> codecs.Encoded:
    return codecs.encode(composition, parse_options(options), png_compress_level=1, icc_profile=icc)


# --- sniffing and limits --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "PNG"),
        (b"\xff\xd8\xff\xe0", "JPEG"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "WEBP"),
        (b"GIF89a", "a GIF image"),
        (b"PK\x03\x04", "a zip archive"),
        (b"\0\0\0\x18ftypheic", "a HEIC/AVIF image"),
        (b"hello", "not an image format we recognise"),
    ],
)
def test_sniff_format(data: bytes, name: str) -> None:
    assert codecs.sniff_format(data) == name


def test_looks_like_zip() -> None:
    assert codecs.looks_like_zip(b"PK\x03\x04rest") and codecs.looks_like_zip(b"PK\x05\x06")
    assert not codecs.looks_like_zip(b"\x89PNG")


def test_refusals_name_the_file_and_say_what_to_do(limits: Settings) -> None:
    with pytest.raises(UnsupportedFormat, match=r"cat\.gif is not a supported image: it is a GIF image"):
        codecs.decode_image(encode(Image.new("RGB", (4, 4)), "GIF"), "cat.gif", limits)
    with pytest.raises(CorruptImage, match="empty"):
        codecs.decode_image(b"", "x.png", limits)
    with pytest.raises(CorruptImage, match="looks like JPEG but cannot be decoded"):
        codecs.decode_image(encode(Image.new("RGB", (64, 64)), "JPEG")[:40], "x.jpg", limits)
    with pytest.raises(ImageTooLarge, match=r"the limit is 0\.0001 MP") as caught:
        codecs.decode_image(encode(Image.new("RGB", (20, 20)), "PNG"), "x.png", load_settings({"MAX_IMAGE_PIXELS": "100"}))
    assert "MAX_IMAGE_PIXELS" in caught.value.hint


def test_png_only_server_refuses_jpeg(limits: Settings) -> None:
    only_png = load_settings({"ALLOWED_EXTENSIONS": "png"})
    with pytest.raises(UnsupportedFormat, match="Accepted: png"):
        codecs.decode_image(encode(Image.new("RGB", (4, 4)), "JPEG"), "x.jpg", only_png)


# --- modes ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "mode"),
    [
        (Image.new("L", (8, 8), 90), "RGB"),
        (Image.new("LA", (8, 8), (90, 40)), "RGBA"),
        (Image.new("P", (8, 8)), "RGB"),
        (Image.fromarray(np.full((8, 8), 40000, np.uint16)), "RGB"),
        (Image.new("RGBA", (8, 8)), "RGBA"),
    ],
)
def test_every_png_mode_becomes_rgb_or_rgba(limits: Settings, image: Image.Image, mode: str) -> None:
    assert codecs.decode_image(encode(image, "PNG"), "x.png", limits).image.mode == mode


def test_rgb_png_with_a_transparent_colour_keeps_its_transparency(limits: Settings) -> None:
    image = Image.new("RGB", (8, 8), (1, 2, 3))
    image.putpixel((0, 0), (9, 9, 9))
    decoded = codecs.decode_image(encode(image, "PNG", transparency=(1, 2, 3)), "x.png", limits).image
    assert decoded.mode == "RGBA"
    assert decoded.getpixel((1, 1))[3] == 0 and decoded.getpixel((0, 0))[3] == 255


def test_sixteen_bit_grey_is_scaled_not_clipped(limits: Settings) -> None:
    grey = Image.fromarray(np.full((4, 4), 32768, np.uint16))
    assert codecs.decode_image(encode(grey, "PNG"), "x.png", limits).image.getpixel((0, 0)) == (128, 128, 128)


# --- EXIF -----------------------------------------------------------------------------------------------------


def photo_with_gps() -> bytes:
    """Chelsea stored rotated, with an EXIF orientation tag, a camera make and a GPS position."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # shown rotated 90 degrees clockwise
    exif[ExifTags.Base.Make] = "Camera"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 22.0, 1.5)
    return encode(Image.fromarray(photos.chelsea()), "JPEG", exif=exif, quality=90)


def test_exif_orientation_is_applied_and_no_exif_is_kept(limits: Settings) -> None:
    decoded = codecs.decode_image(photo_with_gps(), "cat.jpg", limits)
    height, width = photos.chelsea().shape[:2]
    assert decoded.image.size == (height, width)  # turned upright
    assert decoded.image.info == {}


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp", "zip"])
def test_outputs_carry_no_exif_or_gps(limits: Settings, fmt: str) -> None:
    decoded = codecs.decode_image(photo_with_gps(), "cat.jpg", limits)
    options = parse_options(format=fmt)
    result = codecs.encode(compose(*cutout(decoded.image), options), options, png_compress_level=1, icc_profile=None)
    files = [result.data]
    if fmt == "zip":
        with zipfile.ZipFile(io.BytesIO(result.data)) as archive:
            files = [archive.read(name) for name in archive.namelist()]
    for data in files:
        image = opened(data)
        assert "exif" not in image.info and not image.getexif()
        assert b"Exif" not in data and b"Camera" not in data


# --- colour profiles ------------------------------------------------------------------------------------------


def test_grey_jpeg_with_a_gray_profile_is_converted_to_srgb(limits: Settings) -> None:
    data = encode(Image.new("L", (16, 16), 128), "JPEG", icc_profile=LINEAR_GRAY, quality=100)
    assert profile_space(opened(data).info["icc_profile"]) == "GRAY"
    decoded = codecs.decode_image(data, "grey.jpg", limits)
    assert decoded.icc_profile is None
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((8, 8)) == (188, 188, 188)  # linear 50% in sRGB; a plain copy would say 128
    png = encoded(compose(*cutout(decoded.image), parse_options()), decoded.icc_profile)
    assert "icc_profile" not in opened(png.data).info  # no Gray profile on an RGBA output (issue 12 item 9)


def test_grey_png_with_alpha_and_a_gray_profile_keeps_its_alpha(limits: Settings) -> None:
    data = encode(Image.new("LA", (8, 8), (128, 77)), "PNG", icc_profile=LINEAR_GRAY)
    decoded = codecs.decode_image(data, "grey.png", limits)
    assert decoded.image.getpixel((0, 0)) == (188, 188, 188, 77) and decoded.icc_profile is None


def test_cmyk_jpeg_is_converted_through_its_profile(limits: Settings) -> None:
    data = encode(Image.new("CMYK", (16, 16), (255, 0, 0, 0)), "JPEG", icc_profile=SWAPPED_CMYK, quality=100)
    assert opened(data).convert("RGB").getpixel((8, 8)) == (0, 255, 255)  # what ignoring the profile gives
    decoded = codecs.decode_image(data, "print.jpg", limits)
    red, green, blue = decoded.image.getpixel((8, 8))
    assert red > 200 and green < 60 and blue > 200  # the profile's magenta
    assert decoded.icc_profile is None


def test_cmyk_jpeg_without_profile_and_mismatched_profiles_fall_back_to_plain_conversion(limits: Settings) -> None:
    plain = codecs.decode_image(encode(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), "JPEG", quality=100), "c.jpg", limits)
    assert plain.image.mode == "RGB" and plain.icc_profile is None
    assert plain.image.getpixel((4, 4)) == (0, 255, 255)
    rgb_tagged_gray = encode(Image.new("RGB", (8, 8), (10, 20, 30)), "PNG", icc_profile=LINEAR_GRAY)
    decoded = codecs.decode_image(rgb_tagged_gray, "odd.png", limits)
    assert decoded.icc_profile is None and decoded.image.getpixel((0, 0)) == (10, 20, 30)


def test_unreadable_profile_is_ignored(limits: Settings) -> None:
    data = encode(Image.new("L", (8, 8), 90), "PNG", icc_profile=b"not a profile at all" * 10)
    decoded = codecs.decode_image(data, "x.png", limits)
    assert decoded.icc_profile is None and decoded.image.getpixel((0, 0)) == (90, 90, 90)


def test_wide_gamut_rgb_keeps_its_pixels_and_profile_on_colour_outputs(limits: Settings) -> None:
    photo = Image.fromarray(photos.coffee()).resize((120, 80))
    data = encode(photo, "PNG", icc_profile=WIDE_RGB)
    decoded = codecs.decode_image(data, "coffee.png", limits)
    assert decoded.icc_profile == WIDE_RGB
    assert np.array_equal(np.asarray(decoded.image), np.asarray(photo))
    rgb, alpha = cutout(decoded.image)
    for fmt in ("png", "jpg", "webp"):
        options = parse_options(format=fmt)
        result = codecs.encode(compose(rgb, alpha, options), options, png_compress_level=1, icc_profile=WIDE_RGB)
        assert opened(result.data).info.get("icc_profile") == WIDE_RGB, fmt
    options = parse_options(format="zip")
    with zipfile.ZipFile(io.BytesIO(codecs.encode(compose(rgb, alpha, options), options, png_compress_level=1,
                                                  icc_profile=WIDE_RGB).data)) as archive:  # fmt: skip
        assert opened(archive.read("color.jpg")).info.get("icc_profile") == WIDE_RGB
        assert "icc_profile" not in opened(archive.read("alpha.png")).info


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_masks_never_carry_a_profile(fmt: str) -> None:
    rgb, alpha = cutout(Image.fromarray(photos.coffee()).resize((64, 48)))
    options = parse_options(channels="alpha", format=fmt)
    result = codecs.encode(compose(rgb, alpha, options), options, png_compress_level=1, icc_profile=WIDE_RGB)
    assert "icc_profile" not in opened(result.data).info


def test_background_is_converted_to_srgb_or_to_the_photo_space(limits: Settings) -> None:
    green = encode(Image.new("RGB", (8, 8), (0, 200, 0)), "PNG", icc_profile=WIDE_RGB)
    in_srgb = codecs.decode_background(green, "bg_image", limits)
    red, green_value, _ = in_srgb.getpixel((0, 0))
    assert green_value > 200 and red == 0  # wide-gamut green is more saturated than sRGB can show
    kept = codecs.decode_background(green, "bg_image", limits, target_profile=WIDE_RGB)
    assert kept.getpixel((0, 0)) == (0, 200, 0)
    plain = codecs.decode_background(encode(Image.new("RGB", (8, 8), (0, 200, 0)), "PNG"), "bg_image", limits)
    assert plain.getpixel((0, 0)) == (0, 200, 0)


# --- encoders -------------------------------------------------------------------------------------------------


def test_auto_is_png_while_transparent_and_jpg_once_opaque() -> None:
    rgb, alpha = cutout(Image.fromarray(photos.astronaut()).resize((64, 64)))
    transparent = encoded(compose(rgb, alpha, parse_options(format="auto")), format="auto")
    assert (transparent.format, transparent.media_type, opened(transparent.data).mode) == ("png", "image/png", "RGBA")
    filled = encoded(compose(rgb, alpha, parse_options(format="auto", bg_color="00ff00")), format="auto", bg_color="0f0")
    assert (filled.format, filled.extension, filled.media_type) == ("jpg", "jpg", "image/jpeg")
    mask = encoded(compose(rgb, alpha, parse_options(format="auto", channels="alpha")), format="auto")
    assert mask.format == "png" and opened(mask.data).mode == "L"


def test_png_compress_level_is_used() -> None:
    rgb, alpha = cutout(Image.fromarray(photos.astronaut()).resize((256, 256)))
    composition = compose(rgb, alpha, parse_options())
    fast = codecs.encode(composition, parse_options(), png_compress_level=0, icc_profile=None)
    small = codecs.encode(composition, parse_options(), png_compress_level=9, icc_profile=None)
    assert len(fast.data) > len(small.data)
    assert np.array_equal(np.asarray(opened(fast.data)), np.asarray(opened(small.data)))


def test_jpeg_is_baseline_and_quality_matters() -> None:
    rgb, alpha = cutout(Image.fromarray(photos.astronaut()).resize((256, 256)))
    low = encoded(compose(rgb, alpha, parse_options(format="jpg")), format="jpg", quality=20)
    high = encoded(compose(rgb, alpha, parse_options(format="jpg")), format="jpg", quality=95)
    assert len(low.data) < len(high.data)
    assert "progressive" not in opened(high.data).info


def test_jpeg_of_an_rgba_composition_is_flattened_on_white() -> None:
    rgb, alpha = cutout(Image.fromarray(photos.astronaut()).resize((64, 64)))
    transparent = compose(rgb, alpha, parse_options())  # made for png, then asked as jpg
    pixels = np.asarray(opened(encoded(transparent, format="jpg").data)).astype(int)
    assert np.abs(pixels[0, 0] - 255).max() <= 3


@pytest.mark.parametrize(
    ("name", "extension", "suffix", "expected"),
    [
        ("holiday photo.JPG", "png", "", "holiday photo.png"),
        ("holiday photo.JPG", "png", "-nobg", "holiday photo-nobg.png"),
        ("a/b/Holiday.JPG", "webp", "", "Holiday.webp"),
        ("..\\..\\evil.webp", "png", "", "evil.png"),
        (None, "zip", "", "image.zip"),
        ("x\x00y.png", "jpg", "", "x_y.jpg"),
        ("...", "png", "", "image.png"),
    ],
)
def test_output_name(name: str | None, extension: str, suffix: str, expected: str) -> None:
    assert codecs.output_name(name, extension, suffix) == expected


# --- oversized images: our words, whatever the size ---------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height (8-bit grey) and holds one compressed row: a few dozen bytes."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("width", "height", "words"),
    [
        (10000, 8000, "is 10000x8000 (80.0 MP); the limit is 64 MP."),
        (30000, 30000, "is 30000x30000 (900.0 MP); the limit is 64 MP."),  # past Pillow's own 179 MP refusal
        (65535, 65535, "is 65535x65535 (4294.8 MP); the limit is 64 MP."),
    ],
)
def test_every_oversized_image_gets_our_message(width: int, height: int, words: str) -> None:
    settings = load_settings({})
    with pytest.raises(ImageTooLarge) as caught:
        codecs.decode_image(png_header(width, height), "big.png", settings)
    assert caught.value.message == f"big.png {words}"
    assert caught.value.hint == "Downscale the image or raise MAX_IMAGE_PIXELS."
    assert "bomb" not in str(caught.value)


def test_a_raised_pixel_limit_is_the_limit(make_settings) -> None:
    """MAX_IMAGE_PIXELS above Pillow's 179 MP: the header passes our check, and decoding is tried (then fails on
    the one-row body) instead of Pillow refusing the size on its own."""
    with pytest.raises(CorruptImage, match="looks like PNG but cannot be decoded"):
        codecs.decode_image(png_header(20000, 10000), "big.png", make_settings(MAX_IMAGE_PIXELS="300000000"))
