"""Touch-up: keep / remove strokes that correct the model where it is wrong.

prediction -> hints -> alpha -> edges. The model proposes an alpha; a user's strokes are hard constraints (keep ->
foreground, remove -> background); a local solver spreads them over the region they touch: OpenCV's GrabCut, seeded
with the model's alpha as probable foreground / background and the strokes as definite labels, learns the colours
of both sides and moves the boundary. Only the connected regions of change that a stroke touches are accepted (a
keep stroke can only add, a remove stroke can only take away), so the rest of the cutout stays exactly as it was.
The accepted regions then go through the same edge refinement as the model's own mask (`edges`), and the
pipeline's colour decontamination runs on the result.

Cost is bounded: the solver sees only a box around the strokes, at most SOLVER_SIDE px on its long side, so a
12 MP photo costs little more than a 1 MP one. Without marked pixels nothing runs and the alpha is returned as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from bgremove.core import codecs, edges
from bgremove.core.errors import CorruptImage, InvalidHint, UnsupportedFormat
from bgremove.core.settings import Settings

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float32]
ByteArray = npt.NDArray[np.uint8]

ASPECT_TOLERANCE = 0.01  # a hint drawn over this photo, exported at any scale, keeps its aspect within rounding
MARK_LEVEL = 128  # a hint pixel is marked from this brightness (opaque layer) or this opacity (transparent layer)
SOLVER_SIDE = 512  # long side of the box the solver works on; GrabCut's cost grows with its pixel count
REGION_GROWTH = 0.5  # the box: the strokes' bounding box grown by this share of its long side on every side ...
REGION_MARGIN = 0.05  # ... plus this share of the photo's long side (a dot on a missed hand still sees the hand)
GRABCUT_ITERATIONS = 2  # touchup_quality.py: mean IoU 0.601 with 2 rounds, 0.604 with 4 at 1.5x the time
EDGE_BAND = 2  # solver px around an accepted region whose edge is refined again (its soft edge belongs to it)
MIN_SAMPLES = 16  # GrabCut's colour models (5 Gaussians a side) need samples on both sides
GROUPING_SIDE = 256  # strokes are grouped (touching ones together) on a map this many px on its long side


@dataclass(frozen=True)
class Hints:
    """Marked pixels of the keep and remove hints, each at its own resolution (scaled to the photo on use)."""

    keep: BoolArray | None
    remove: BoolArray | None

    def at(self, width: int, height: int) -> tuple[BoolArray, BoolArray]:
        """Both hints scaled to (width, height); an absent hint marks nothing."""
        return _scaled(self.keep, width, height), _scaled(self.remove, width, height)


def read_hints(
    keep_mask: bytes | None, remove_mask: bytes | None, photo_size: tuple[int, int], settings: Settings
) -> Hints | None:
    """Decode and check the hint images sent with a photo of `photo_size` (w, h); None when none was sent."""
    if keep_mask is None and remove_mask is None:
        return None
    return Hints(
        keep=read_hint(keep_mask, "keep_mask", photo_size, settings) if keep_mask is not None else None,
        remove=read_hint(remove_mask, "remove_mask", photo_size, settings) if remove_mask is not None else None,
    )


def read_hint(data: bytes, name: str, photo_size: tuple[int, int], settings: Settings) -> BoolArray:
    """One hint image -> its marked pixels: opaque ones on a layer with transparency, else bright ones.

    Raises InvalidHint when the bytes are not an image or the aspect ratio is not the photo's (within 1%);
    ImageTooLarge as for any upload.
    """
    try:
        image = codecs.decode_image(data, name, settings).image
    except (UnsupportedFormat, CorruptImage) as exc:
        raise InvalidHint(exc.message) from None  # the message names the hint; the hint says how to make one
    width, height = photo_size
    ratio = (image.width / image.height) / (width / height)
    if abs(ratio - 1.0) > ASPECT_TOLERANCE:
        raise InvalidHint(
            f"{name} is {image.width}x{image.height} but the photo is {width}x{height}: "
            f"their aspect ratios differ by {abs(ratio - 1.0):.1%} (at most {ASPECT_TOLERANCE:.0%}).",
            hint="Draw the strokes over the photo itself and export the layer at the photo's shape (any scale of it).",
        )
    rgba = np.asarray(image.convert("RGBA"))
    opacity = rgba[..., 3]
    if int(opacity.min()) < 255:  # a layer with transparency: the strokes are what is painted on it
        return opacity >= MARK_LEVEL
    grey = np.asarray(image.convert("L"))
    return grey >= MARK_LEVEL


def _scaled(marks: BoolArray | None, width: int, height: int) -> BoolArray:
    if marks is None:
        return np.zeros((height, width), dtype=bool)
    if marks.shape == (height, width):
        return marks
    source = marks.astype(np.uint8) * np.uint8(255)
    covered = cv2.resize(source, (width, height), interpolation=cv2.INTER_AREA) >= MARK_LEVEL
    nearest = cv2.resize(source, (width, height), interpolation=cv2.INTER_NEAREST) > 0  # thin strokes survive a shrink
    return covered | nearest


def apply(alpha: FloatArray, rgb: ByteArray, keep: BoolArray, remove: BoolArray) -> FloatArray:
    """The alpha with the strokes applied; `alpha` itself (unchanged) when nothing is marked.

    alpha: float32 HxW in [0, 1] (the refined alpha the pipeline would use); rgb: uint8 HxWx3(+); keep/remove: bool
    HxW. A pixel marked by both hints counts as keep (the later brush wins in an editor; here keep, the safer one).
    """
    remove = remove & ~keep
    strokes = keep | remove
    if not strokes.any():
        return alpha
    height, width = alpha.shape
    out = alpha.copy()
    for x0, y0, x1, y1 in _regions(strokes, width, height):
        region = (slice(y0, y1), slice(x0, x1))
        old = alpha[region]
        image = np.ascontiguousarray(rgb[region][..., :3])
        touched = _solve(old, image, keep[region], remove[region])
        if touched is None:
            continue
        zone, refined = touched
        # Changes below one 8-bit step would not show, and could join or split regions unseen; they are dropped.
        new = np.where(zone & (np.abs(refined - old) >= np.float32(1 / 255)), refined, old)
        # A change the refinement made away from the accepted regions (a speck of edge that moved) is not one a
        # stroke asked for: only changes connected to a stroke are kept.
        wanted = _touching((new != old) | strokes[region], strokes[region])
        out[region] = np.where(wanted, new, old)
    out[keep] = 1.0
    out[remove] = 0.0
    return out


def _regions(strokes: BoolArray, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The boxes the solver sees (x0, y0, x1, y1): each group of strokes' bounding box, grown (REGION_GROWTH,
    REGION_MARGIN) and clipped; overlapping boxes are merged. Strokes far apart are solved apart, each box at
    the solver's full resolution, instead of one box over the whole photo at a coarse one."""
    scale = min(1.0, GROUPING_SIDE / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    coarse = cv2.resize(strokes.astype(np.uint8) * np.uint8(255), size, interpolation=cv2.INTER_AREA) > 0
    count, _, stats, _ = cv2.connectedComponentsWithStats(coarse.astype(np.uint8), connectivity=8)
    boxes = []
    for x, y, w, h in stats[1:count, :4]:
        x0, y0 = int(x / scale), int(y / scale)
        x1, y1 = min(width, int((x + w) / scale) + 1), min(height, int((y + h) / scale) + 1)
        grow = int(REGION_GROWTH * max(x1 - x0, y1 - y0) + REGION_MARGIN * max(width, height))
        boxes.append((max(0, x0 - grow), max(0, y0 - grow), min(width, x1 + grow), min(height, y1 + grow)))
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    boxes[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return boxes


def _solve(old: FloatArray, image: ByteArray, keep: BoolArray, remove: BoolArray) -> tuple[BoolArray, FloatArray] | None:
    """GrabCut on the box at solver scale -> (zone that changes, refined alpha of the box), or None if nothing does."""
    height, width = old.shape
    scale = min(1.0, SOLVER_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small_image = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image
    small_alpha = cv2.resize(old, size, interpolation=cv2.INTER_AREA) if scale < 1 else old
    small_keep, small_remove = _scaled(keep, *size), _scaled(remove, *size)
    small_remove = small_remove & ~small_keep
    was_foreground = small_alpha >= 0.5

    labels = np.where(was_foreground, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    labels[small_keep] = cv2.GC_FGD
    labels[small_remove] = cv2.GC_BGD
    foreground_side = int(np.count_nonzero((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)))
    if min(foreground_side, labels.size - foreground_side) >= MIN_SAMPLES:
        background_model = np.zeros((1, 65), np.float64)
        foreground_model = np.zeros((1, 65), np.float64)
        cv2.grabCut(
            small_image, labels, (0, 0, 0, 0), background_model, foreground_model, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK
        )
    now_foreground = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)

    added = _touching(now_foreground & ~was_foreground | small_keep, small_keep)
    taken = _touching(~now_foreground & was_foreground | small_remove, small_remove)
    changed = (added & ~was_foreground) | (taken & was_foreground)
    if not changed.any():
        return None
    target = (was_foreground | added) & ~taken

    # The changed regions and a band around them take hard labels; the edge refinement turns them into soft edges.
    band = cv2.dilate(changed.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * EDGE_BAND + 1,) * 2))
    prior = np.where(band > 0, target.astype(np.float32), small_alpha).astype(np.float32)
    refined = edges.full_resolution_alpha(prior, image)
    zone = cv2.resize(band * np.uint8(255), (width, height), interpolation=cv2.INTER_LINEAR) > 0
    return zone, refined


def _touching(candidates: BoolArray, seeds: BoolArray) -> BoolArray:
    """The connected regions (8-neighbour) of `candidates` that contain a seed pixel."""
    if not seeds.any():
        return np.zeros_like(candidates)
    count, components = cv2.connectedComponents(candidates.astype(np.uint8), connectivity=8)
    hit = np.zeros(count, dtype=bool)
    hit[np.unique(components[seeds])] = True
    hit[0] = False
    return cast(BoolArray, hit[components])
