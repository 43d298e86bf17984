"""Bytes in, a finished output out: the one path every door (REST, remove.bg layer, UI, CLI, batch, jobs) uses.

decode (limits, EXIF orientation, colour profile; a big JPEG at reduced size when the output allows it, see
`decode_floor`) -> model prediction (float, model resolution)
-> confidence / no-subject signal -> alpha at full resolution (or straight at the output size when a `size`
budget alone shrinks the photo, see `working_size`) -> touch-up strokes (keep_mask / remove_mask, see
`touchup`) -> optional smoothing / alpha matting
-> input transparency and region of interest -> foreground colour estimation (edge band only)
-> compose (crop, scale/position, size, shadow, background, channels) -> encode (png/jpg/webp/zip).
Errors are typed (see `bgremove.core.errors`); nothing here imports a web framework.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np

from bgremove.core import codecs, compose, edges, matting, touchup
from bgremove.core.observability import INFERENCE
from bgremove.core.options import RemovalOptions, Tag, in_effect, tagged
from bgremove.core.predictions import photo_key
from bgremove.core.registry import CATALOG, FAMILIES, Prediction, is_custom_model
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings

# The metadata every door reports, under the same keys (REST headers, manifest.json, the UI's JSON, the CLI's --json).
METADATA_KEYS = (
    "filename",
    "output",
    "status",
    "width",
    "height",
    "format",
    "model",
    "seconds",
    "foreground_top",
    "foreground_left",
    "foreground_width",
    "foreground_height",
    "confidence",
    "foreground_found",
    "error",
    "hint",
)

FULL_SIZE_OPTIONS = tagged(Tag.CHANGES_GEOMETRY, Tag.MEASURED_IN_INPUT_PIXELS)  # see `working_size`


@dataclass(frozen=True)
class Result:
    """A finished output: its bytes and what the doors report about it."""

    data: bytes = field(repr=False)
    media_type: str
    extension: str
    format: str
    filename: str
    output_name: str
    width: int
    height: int
    model: str
    seconds: float
    foreground: compose.Box | None
    confidence: float
    foreground_found: bool
    prediction_reused: bool = False  # the model did not run: the photo's prediction was cached
    stages: dict[str, float] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        """The shared metadata keys (see METADATA_KEYS) for this result."""
        box = self.foreground
        return {
            "filename": self.filename,
            "output": self.output_name,
            "status": "completed",
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "model": self.model,
            "seconds": round(self.seconds, 4),
            "foreground_top": box.top if box else None,
            "foreground_left": box.left if box else None,
            "foreground_width": box.width if box else None,
            "foreground_height": box.height if box else None,
            "confidence": round(self.confidence, 4),
            "foreground_found": self.foreground_found,
        }


def remove_background(
    data: bytes,
    filename: str | None,
    options: RemovalOptions,
    *,
    settings: Settings,
    cache: SessionCache,
    bg_image: bytes | None = None,
    keep_mask: bytes | None = None,
    remove_mask: bytes | None = None,
) -> Result:
    """Remove the background of one image and shape the output as `options` ask.

    `keep_mask` / `remove_mask`: touch-up strokes over the photo (see `bgremove.core.touchup`); the photo's cached
    prediction is reused, so a touch-up after a first request costs no forward pass.
    Raises UnsupportedFormat, ImageTooLarge, CorruptImage, InvalidOption (InvalidHint) or ModelUnavailable, each
    with a message and a hint a person can act on.
    """
    label = filename or "the upload"
    started = time.perf_counter()
    stages: dict[str, float] = {}

    decoded = decode(data, label, options, settings)
    background = (
        codecs.decode_background(bg_image, "bg_image", settings, target_profile=decoded.icc_profile) if bg_image else None
    )
    image = decoded.image
    hints = touchup.read_hints(keep_mask, remove_mask, decoded.size, settings)  # refused before the model runs
    rgb = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    stages["decode"] = _lap(started)

    mark = time.perf_counter()
    loaded = cache.get(options.model)
    stages["load"] = _lap(mark)

    mark = time.perf_counter()

    def forward_pass() -> Prediction:
        with cache.inference_slot():
            return loaded.predict(image if image.mode == "RGB" else image.convert("RGB"))

    # The same photo again (another background, format or crop; touch-up strokes) reuses its prediction.
    key = photo_key(data, loaded.name, loaded.provider, image.size if decoded.full_size else None)
    prediction, reused = cache.predictions.get_or_compute(key, forward_pass)
    stages["mask"] = _lap(mark)
    if not reused:
        INFERENCE.labels(PurePath(loaded.name).name).observe(stages["mask"])

    mark = time.perf_counter()
    confidence, found = edges.subject_confidence(prediction.raw)
    input_alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0 if image.mode == "RGBA" else None
    rgb, input_alpha = _at_working_size(rgb, input_alpha, working_size(*decoded.size, options))
    marks = hints.at(rgb.shape[1], rgb.shape[0]) if hints else None
    alphas = [_alpha(mask, rgb, input_alpha, options, marks) for mask in prediction.masks]
    stages["alpha"] = _lap(mark)

    mark = time.perf_counter()
    compositions = []
    for alpha in alphas:
        foreground = edges.estimate_foreground(rgb, alpha) if options.decontaminate else rgb
        compositions.append(compose.compose(foreground, alpha, options, background=background))
    composition = compose.stack_vertically(compositions)  # u2net_cloth_seg: three masks, one above the other
    stages["compose"] = _lap(mark)

    mark = time.perf_counter()
    encoded = codecs.encode(composition, options, png_compress_level=settings.png_compress_level, icc_profile=decoded.icc_profile)
    stages["encode"] = _lap(mark)

    return Result(
        data=encoded.data,
        media_type=encoded.media_type,
        extension=encoded.extension,
        format=encoded.format,
        filename=filename or "image",
        output_name=codecs.output_name(filename, encoded.extension),
        width=composition.image.width,
        height=composition.image.height,
        model=PurePath(loaded.name).name if is_custom_model(loaded.name) else loaded.name,
        seconds=time.perf_counter() - started,
        foreground=composition.foreground,
        confidence=confidence,
        foreground_found=found,
        prediction_reused=reused,
        stages=stages,
    )


def working_size(width: int, height: int, options: RemovalOptions) -> tuple[int, int]:
    """The size the alpha, the colours and the composite are computed at.

    A `size` budget on the whole photo fixes the output size before that work, so it runs at the output size
    instead of at full size followed by a shrink: for size=preview on a 12 MP photo, a fiftieth of the pixels (and a
    big JPEG is decoded smaller, see `decode_floor`). An option tagged as changing the geometry (the output then
    depends on the subject's box) or as measured in input pixels (matting's erode size, the smoothing kernel, a roi
    in px) keeps the full size while it is in effect, so it means what it says.
    """
    if any(in_effect(options, name) for name in FULL_SIZE_OPTIONS):
        return width, height
    return compose.output_size(width, height, options.size)


def decode(data: bytes, label: str, options: RemovalOptions, settings: Settings) -> codecs.DecodedImage:
    """The photo, decoded at the smallest size `options` allow (see `decode_floor`) under every usual check."""
    side = model_side(options.model, settings)
    return codecs.decode_image(data, label, settings, floor=lambda width, height: decode_floor(width, height, options, side))


def decode_floor(width: int, height: int, options: RemovalOptions, side: int) -> tuple[int, int] | None:
    """The smallest size a photo of (width, height) may be decoded at for `options`; None: its full size.

    A big JPEG decoded smaller (libjpeg's DCT scaling, see `codecs._draft`) saves most of the decode and every
    full-size array after it, and changes nothing asked for as long as no consumer of its pixels is upscaled from
    it: the model, which squashes the photo to its square input of `side` px, and the alpha / colour / compose
    work at `working_size`. So only below the full size (a `size` budget, no option that needs the full photo) and
    never under `side` on either axis. The output size is still computed from the photo's real size.
    """
    work = working_size(width, height, options)
    if work == (width, height):
        return None
    return max(work[0], side), max(work[1], side)


def model_side(name: str | None, settings: Settings) -> int:
    """The input side of the model a request names, known before it loads (a custom or unknown name: the largest)."""
    spec = CATALOG.get((name or settings.model_name).strip())
    return spec.input_size if spec is not None else max(family.side for family in FAMILIES.values())


def _at_working_size(
    rgb: np.ndarray, input_alpha: np.ndarray | None, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """The photo (and its own transparency) shrunk to `size` (see `working_size`); the same arrays at their own size."""
    if size == (rgb.shape[1], rgb.shape[0]):
        return rgb, input_alpha
    if input_alpha is None:
        return compose.resize_colour(rgb, size), None
    return compose.resize_premultiplied(rgb, input_alpha, size)


def _alpha(
    mask: np.ndarray,
    rgb: np.ndarray,
    input_alpha: np.ndarray | None,
    options: RemovalOptions,
    marks: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """One model mask -> float alpha at full resolution, with the touch-up strokes and the options that act on the mask."""
    alpha = edges.full_resolution_alpha(mask, rgb)
    if marks is not None:
        alpha = touchup.apply(alpha, rgb, *marks)
    if options.post_process_mask:
        alpha = matting.smooth_mask(alpha)
    if options.alpha_matting:
        alpha = matting.alpha_matting(
            rgb,
            alpha,
            options.alpha_matting_foreground_threshold,
            options.alpha_matting_background_threshold,
            options.alpha_matting_erode_size,
        )
    if input_alpha is not None:  # an input's own transparency is kept
        alpha = alpha * input_alpha
    return compose.apply_roi(alpha, options.roi)


def _lap(mark: float) -> float:
    return time.perf_counter() - mark
