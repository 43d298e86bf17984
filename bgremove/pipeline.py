"""Bytes in, PNG + metadata out: the one path every door (REST, Gradio, CLI, batch) uses.

Steps: size check -> sniff the real format from the content -> decode under the pixel
limit -> EXIF orientation -> mode normalisation -> mask (cached rembg session) -> cutout
options -> lossless PNG. Errors are typed (see `bgremove.errors`); no web imports here.
"""

from __future__ import annotations

import io
import logging
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from bgremove.catalog import is_custom_model
from bgremove.config import Settings, get_settings
from bgremove.errors import CorruptImage, ImageTooLarge, InvalidOption, UnsupportedFormat
from bgremove.observability import INFERENCE
from bgremove.sessions import SessionCache, get_cache

log = logging.getLogger(__name__)

# Allowed formats by their signature; the extension a client sends is only used for the output name.
FORMAT_EXTENSIONS = {"PNG": ("png",), "JPEG": ("jpg", "jpeg"), "WEBP": ("webp",)}
MAX_ICC_BYTES = 1 << 20  # keep colour profiles (Display P3 photos) but not absurd ones


@dataclass(frozen=True)
class RemovalOptions:
    """What the caller may ask for; defaults match rembg's."""

    model: str | None = None
    alpha_matting: bool = False
    alpha_matting_foreground_threshold: int = 240
    alpha_matting_background_threshold: int = 10
    alpha_matting_erode_size: int = 10
    post_process_mask: bool = False
    only_mask: bool = False
    bg_color: tuple[int, int, int, int] | None = None

    def validate(self) -> RemovalOptions:
        for label, value, high in (
            ("alpha_matting_foreground_threshold", self.alpha_matting_foreground_threshold, 255),
            ("alpha_matting_background_threshold", self.alpha_matting_background_threshold, 255),
            ("alpha_matting_erode_size", self.alpha_matting_erode_size, 100),
        ):
            if not 0 <= int(value) <= high:
                raise InvalidOption(f"{label}={value} is out of range.", hint=f"Use a whole number from 0 to {high}.")
        if self.alpha_matting_background_threshold >= self.alpha_matting_foreground_threshold:
            raise InvalidOption(
                "alpha_matting_background_threshold must be below alpha_matting_foreground_threshold.",
                hint="Typical values: foreground 240, background 10.",
            )
        return self


@dataclass(frozen=True)
class RemovalResult:
    """A finished cutout: the PNG bytes and what the edges report about it."""

    png: bytes
    filename: str
    output_name: str
    width: int
    height: int
    model: str
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "output": self.output_name,
            "width": self.width,
            "height": self.height,
            "model": self.model,
            "seconds": round(self.seconds, 4),
            "stages": {name: round(value, 4) for name, value in self.stages.items()},
        }


def parse_color(text: str) -> tuple[int, int, int, int]:
    """`#rrggbb`, `#rrggbbaa`, `r,g,b` or `r,g,b,a` (0-255) to an RGBA tuple."""
    value = text.strip()
    hex_match = re.fullmatch(r"#?([0-9a-fA-F]{6})([0-9a-fA-F]{2})?", value)
    if hex_match:
        rgb = bytes.fromhex(hex_match.group(1))
        alpha = int(hex_match.group(2), 16) if hex_match.group(2) else 255
        return rgb[0], rgb[1], rgb[2], alpha
    parts = [p.strip() for p in value.split(",")]
    if len(parts) in (3, 4) and all(p.isdigit() and int(p) <= 255 for p in parts):
        numbers = [int(p) for p in parts] + ([255] if len(parts) == 3 else [])
        return numbers[0], numbers[1], numbers[2], numbers[3]
    raise InvalidOption(f"bg_color {text!r} is not a colour.", hint="Use #rrggbb, #rrggbbaa, r,g,b or r,g,b,a (0-255).")


def output_name_for(filename: str | None) -> str:
    """`holiday photo.JPG` -> `holiday photo.png`; path parts and odd characters are dropped."""
    stem = PurePath((filename or "").replace("\\", "/")).stem if filename else ""
    stem = re.sub(r"[\x00-\x1f/\\:*?\"<>|]+", "_", stem).strip(" .") or "image"
    return f"{stem[:150]}.png"


def looks_like_zip(head: bytes) -> bool:
    """A zip with entries (local header) or an empty zip (end-of-directory record)."""
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def sniff_format(data: bytes) -> str:
    """The format the bytes really are, by signature: PNG, JPEG, WEBP, or a name for the error message."""
    head = data[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "a GIF image"
    if head[:2] == b"BM":
        return "a BMP image"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "a TIFF image"
    if head[4:8] == b"ftyp":
        return "a HEIC/AVIF image" if head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"hevc") else "an MP4/QuickTime file"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if looks_like_zip(head):
        return "a zip archive"
    if b"<svg" in data[:2048].lower():
        return "an SVG drawing"
    return "not an image format we recognise"


def remove_background(
    data: bytes,
    filename: str | None = None,
    options: RemovalOptions | None = None,
    *,
    settings: Settings | None = None,
    cache: SessionCache | None = None,
) -> RemovalResult:
    """Remove the background of one image. Raises UnsupportedFormat, ImageTooLarge, CorruptImage,
    InvalidOption or ModelUnavailable with a message a person can act on."""
    settings = settings or get_settings()
    cache = cache or get_cache()
    options = (options or RemovalOptions()).validate()
    label = filename or "the upload"
    started = time.perf_counter()
    stages: dict[str, float] = {}

    image = decode_image(data, label, settings)
    stages["decode"] = time.perf_counter() - started

    mark = time.perf_counter()
    loaded = cache.get(options.model)
    stages["load"] = time.perf_counter() - mark

    mark = time.perf_counter()
    with cache.inference_slot():
        mask = loaded.session.predict(image)[0].convert("L")
    stages["mask"] = time.perf_counter() - mark
    INFERENCE.labels(PurePath(loaded.name).name).observe(stages["mask"])

    mark = time.perf_counter()
    cutout = apply_cutout(image, mask, options)
    stages["cutout"] = time.perf_counter() - mark

    mark = time.perf_counter()
    png = encode_png(cutout, image.info.get("icc_profile"), settings.png_compress_level)
    stages["encode"] = time.perf_counter() - mark

    model_label = loaded.name if not is_custom_model(loaded.name) else PurePath(loaded.name).name
    return RemovalResult(
        png=png,
        filename=filename or "image",
        output_name=output_name_for(filename),
        width=cutout.width,
        height=cutout.height,
        model=model_label,
        seconds=time.perf_counter() - started,
        stages=stages,
    )


def decode_image(data: bytes, label: str, settings: Settings) -> Image.Image:
    """Check size and format, decode under the pixel limit, honour EXIF orientation, normalise the mode."""
    if len(data) > settings.max_image_bytes:
        raise ImageTooLarge(
            f"{label} is {len(data) / 1e6:.1f} MB; the limit is {settings.max_image_size_mb:g} MB.",
            hint="Send a smaller file or raise MAX_IMAGE_SIZE_MB.",
        )
    if not data:
        raise CorruptImage(f"{label} is empty (0 bytes).", hint="Choose the file again; the upload had no content.")
    fmt = sniff_format(data)
    accepted = ", ".join(settings.allowed_extensions)
    allowed = {fmt_name for fmt_name, exts in FORMAT_EXTENSIONS.items() if set(exts) & set(settings.allowed_extensions)}
    if fmt not in allowed:
        kind = f"a {fmt} image" if fmt in FORMAT_EXTENSIONS else fmt
        raise UnsupportedFormat(
            f"{label} is not a supported image: it is {kind} ({len(data)} bytes). Accepted: {accepted}.",
            hint=f"Convert it to one of: {accepted}." + (" Send zips to /api/remove/batch." if fmt == "a zip archive" else ""),
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])
            pixels = image.width * image.height
            if pixels > settings.max_image_pixels:
                raise ImageTooLarge(
                    f"{label} is {image.width}x{image.height} ({pixels / 1e6:.1f} MP); "
                    f"the limit is {settings.max_image_pixels / 1e6:g} MP.",
                    hint="Downscale the image or raise MAX_IMAGE_PIXELS.",
                )
            image.seek(0)  # animated WebP/PNG: the first frame
            image.load()
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{label} decodes to too many pixels ({exc}).", hint="Downscale the image.") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow's decode errors
        raise CorruptImage(f"{label} looks like {fmt} but cannot be decoded ({exc}).") from exc
    icc = image.info.get("icc_profile")
    image = _apply_exif_orientation(image, label)
    image = normalise_mode(image)
    if icc and len(icc) <= MAX_ICC_BYTES:
        image.info["icc_profile"] = icc
    return image


def _apply_exif_orientation(image: Image.Image, label: str) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError) as exc:
        # A damaged EXIF block should not cost the user the photo: keep the stored orientation.
        log.warning("Ignoring unreadable EXIF orientation of %s: %s", label, exc)
        return image


def normalise_mode(image: Image.Image) -> Image.Image:
    """Every input becomes RGB or RGBA: palette (with transparency), LA, CMYK, 16-bit and float grey."""
    mode = image.mode
    if mode in ("RGB", "RGBA"):
        return image
    if mode in ("P", "PA", "L", "1") and ("transparency" in image.info or mode == "PA"):
        return image.convert("RGBA")
    if mode in ("LA", "La", "RGBa"):
        return image.convert("RGBA")
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if (mode.startswith("I;16") or values.max(initial=0) > 255) else 255.0
        grey = np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return image.convert("RGB")


def apply_cutout(image: Image.Image, mask: Image.Image, options: RemovalOptions) -> Image.Image:
    """Mask -> output image, with rembg's helpers for post-processing, matting and background colour."""
    # rembg.bg is imported only when an option needs it: importing it costs ~1.3 s (pymatting, numba).
    if mask.size != image.size:
        mask = mask.resize(image.size, Image.Resampling.LANCZOS)
    if options.post_process_mask:
        from rembg.bg import post_process

        mask = Image.fromarray(post_process(np.asarray(mask)))
    if options.only_mask:
        return mask
    if options.alpha_matting:
        from rembg.bg import alpha_matting_cutout, decontaminate_cutout

        try:
            cutout = alpha_matting_cutout(
                image, mask,
                options.alpha_matting_foreground_threshold,
                options.alpha_matting_background_threshold,
                options.alpha_matting_erode_size,
            )
        except ValueError:  # pymatting fails on trimaps with no unknown region; rembg falls back the same way
            cutout = decontaminate_cutout(image, mask)
    else:
        # Straight (unpremultiplied) alpha: colours stay true; an input's own transparency is kept.
        cutout = image.convert("RGBA")
        alpha = mask if image.mode != "RGBA" else Image.fromarray(
            (np.asarray(mask, dtype=np.uint16) * np.asarray(image.getchannel("A"), dtype=np.uint16) // 255).astype(np.uint8)
        )
        cutout.putalpha(alpha)
        cutout = clear_transparent(cutout)
    if options.bg_color is not None:
        cutout = Image.alpha_composite(Image.new("RGBA", cutout.size, options.bg_color), cutout)  # rembg's apply_background_color
    return cutout


def clear_transparent(image: Image.Image) -> Image.Image:
    """Zero the colour of fully transparent pixels (as rembg's cutout does): invisible, and it halves the PNG."""
    pixels = np.array(image)
    pixels[pixels[..., 3] == 0] = 0
    return Image.fromarray(pixels, mode="RGBA")


def encode_png(image: Image.Image, icc_profile: bytes | None = None, compress_level: int = 1) -> bytes:
    """Lossless PNG. Level 1 is ~3x faster than Pillow's default 6 and, with cleared transparent pixels,
    still about half the size of rembg's output (measured on a 1024x1024 cutout: 0.10 s vs 0.30 s)."""
    buffer = io.BytesIO()
    extra = {"icc_profile": icc_profile} if icc_profile and len(icc_profile) <= MAX_ICC_BYTES else {}
    image.save(buffer, format="PNG", compress_level=compress_level, **extra)
    return buffer.getvalue()
