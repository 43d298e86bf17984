"""Edges that survive a new background: alpha at full resolution, foreground colours, subject confidence.

Pure functions over numpy arrays (no PIL, no model, no I/O), each cheap next to the model's forward pass:

* `full_resolution_alpha`: the model's float mask upsampled as float (not through uint8), refined against the
  full-resolution photo with a gated colour guided filter, then snapped: exactly 0 and 1 where confident.
* `estimate_foreground`: blur-fusion foreground colours (Forte & Pitie 2021, BiRefNet's `refine_foreground`),
  so see-through pixels stop carrying the old background (grey fringes on white, glow on black).
* `subject_confidence`: is there a subject at all? Sky, walls, textures and blank scans have none.

Wide work (filters, blurs) runs at ~512-1024 px and is sampled back bilinearly; full resolution is touched only
on the band of pixels that can still change, so a 12 MP photo costs little more than a 1 MP one.
Measured with scripts/quality.py (dev set from scripts/make_quality_set.py).
"""

from __future__ import annotations

from typing import TypeVar, cast

import cv2
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
ByteArray = npt.NDArray[np.uint8]
Points = npt.NDArray[np.int32]
_Pixels = TypeVar("_Pixels", np.uint8, np.float32)

# --- Snapping (issue 17.10: confident foreground exactly 255, confident background exactly 0).
# Alpha is stretched linearly so SNAP_LOW -> 0 and SNAP_HIGH -> 1: a ramp, not a hard cut, so no contour appears
# where a soft edge crosses a threshold. 0.03/0.97: the model's background haze mostly sits below 0.03 (blank
# scans and sky peak at 0.01-0.07 raw) and a clear subject's interior above 0.97. On the dev set (quality.py
# --sweep) going from 0/1 to 0.1/0.9 lowers MAE by 1.5% and composite error by 3.5% but raises the gradient error
# (steeper edges); 0.03/0.97 sits in between: MAE -1.0%, composite -1.6% against no stretch.
# SNAP_CORE: inside the model's 0.5 contour the mask ramps up to exactly 1 between SNAP_CORE/2 and SNAP_CORE px
# (1024 px scale). The model's confidence sags inside big subjects (scikit-image's cat: 40% of the face between
# 0.9 and 0.97, visibly see-through). With it, the share of a subject (alpha > 0.5) left translucent drops from
# 49% to 4% (cat), 33% to 9% (cameraman), 94% to 29% (logo); clear subjects stay at 2-7%. Today: 89-100%, the 254.
# Dev set cost: composite error +1.4%, MAE -0.8% (quality.py --sweep, core=0).
SNAP_LOW = 0.03
SNAP_HIGH = 0.97
SNAP_CORE = 16

# --- Fast guided filter (He & Sun 2015), colour guide: coefficients at GUIDE_SIDE px (long side), applied at full
# resolution. RADIUS is in GUIDE_SIDE pixels (8: a 17 px window, ~3% of the frame); EPS regularises the [0, 1] RGB
# guide; GATE bounds how far alpha may leave the model's value p: weight min(1, 4 * GATE * p * (1 - p)).
# Dev set composite error vs today (scripts/quality.py --sweep): no filter -1%, grey guide -9%, colour guide
# radius 2 -11%, 4 -15%, 8 -22%, 16 -29%, 24 -32%. Wider windows fade thin real structures the model was unsure
# of (scikit-image motorcycle's mirror stalk) and, ungated, painted ghost blobs on its background: so RADIUS 8.
# EPS 1e-5..1e-3 score alike; 1e-2 loses a quarter of the gain.
GUIDE_SIDE = 512
GUIDE_RADIUS = 8
GUIDE_EPS = 1e-4
GUIDE_GATE = 3.0

# --- Blur-fusion foreground estimation: BiRefNet's two box sizes (90 then 6 px) are for a ~1024 px image; the wide
# passes run at FOREGROUND_WORK_SIDE px on the long side so the boxes mean the same at any photo size.
FOREGROUND_WORK_SIDE = 1024
FOREGROUND_BOXES = (90, 6)
BAND_DILATION = 2  # px at full resolution: a pixel either side of the band gets a clean colour too

# --- Subject confidence (see `subject_confidence`), calibrated with isnet-general-use (raw maps cached by
# scripts/quality.py's engine) on scikit-image photos with a subject: astronaut, coffee, chelsea, rocket, camera,
# horse (both polarities), motorcycle, clock, logo, colorwheel and three crops -> 0.70 (logo) .. 1.00, all found;
# and without: brick (3 scales), grass, gravel, sky/wall/wood/floor crops, blank white/grey/dark/paper scans with
# noise, gradients, checkerboard, stripes, RGB noise -> 0.00 .. 0.05, none found. The 32 dev-set composites: 0.86+.
# Held out, a moon-surface crop scored 0.70 (a weak 0.8% speck); SUBJECT_AREA_FULL went from 0.5% to 1.5% for it.
CONFIDENCE_MIN = 0.5  # found = confidence >= this
SUBJECT_AREA_FULL = 0.015  # share of the frame above 0.5 for full presence
TEXTURE_GRID = 32  # cells per side for the pattern measure
TEXTURE_LOW, TEXTURE_HIGH = 0.35, 0.45  # share of mixed cells: objects <= 0.30 (rocket), patterns >= 0.49

_EPS = 1e-5
_ABOVE_ZERO = float(np.finfo(np.float32).tiny)
_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


# ---------------------------------------------------------------- small helpers
def _box(image: FloatArray, radius: int) -> FloatArray:
    """Mean over a (2r+1)^2 window, any number of channels; cost does not depend on r (running sums)."""
    size = 2 * max(int(radius), 0) + 1
    return cast(FloatArray, cv2.blur(image, (size, size), borderType=cv2.BORDER_REFLECT))


def _shrink(image: npt.NDArray[_Pixels], size: tuple[int, int]) -> npt.NDArray[_Pixels]:
    """Resize to `size` (w, h). Down: Gaussian pyramid halvings then INTER_AREA, anti-aliased like one INTER_AREA
    resize at about half its cost from 12 MP. Up (in either axis): bilinear, as INTER_AREA would go blocky."""
    while image.shape[1] >= 2 * size[0] and image.shape[0] >= 2 * size[1]:
        image = cast("npt.NDArray[_Pixels]", cv2.pyrDown(image))
    shrinking = image.shape[1] >= size[0] and image.shape[0] >= size[1]
    return cast("npt.NDArray[_Pixels]", cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR))


def _band(alpha: FloatArray, low: float, high: float, dilation: int = 0) -> Points:
    """(x, y) of the pixels with low <= alpha <= high (grown by `dilation` px) as Nx2. OpenCV's inRange and
    findNonZero take ~15 ms on 12 MP where numpy's compare-and-nonzero takes ~60."""
    inside = cv2.inRange(alpha, low, high)
    if dilation:  # a square: OpenCV's separable fast path (an ellipse costs 3x on 12 MP)
        inside = cv2.dilate(inside, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * dilation + 1, 2 * dilation + 1)))
    points = cv2.findNonZero(inside)
    return np.empty((0, 2), np.int32) if points is None else cast(Points, points.reshape(-1, 2))


def _flat_index(points: Points, width: int) -> npt.NDArray[np.int64]:
    return points[:, 1].astype(np.int64) * width + points[:, 0]


def _sample(image: FloatArray, points: Points, full: tuple[int, int]) -> FloatArray:
    """Bilinear samples of a small `image` at full-resolution pixels (`full` = (w, h)): what resizing it to full size
    would give there, for the cost of the band only. Returns N x channels."""
    height, width = image.shape[:2]
    xs = (points[:, 0].astype(np.float32) + 0.5) * np.float32(width / full[0]) - 0.5  # cv2.resize's pixel centres
    ys = (points[:, 1].astype(np.float32) + 0.5) * np.float32(height / full[1]) - 0.5
    count, row = len(points), 4096  # cv2.remap wants both map sides below 32767: fold the list into rows
    rows = -(-count // row)
    map_x = np.pad(xs, (0, rows * row - count)).reshape(rows, row)
    map_y = np.pad(ys, (0, rows * row - count)).reshape(rows, row)
    out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    channels = 1 if image.ndim == 2 else image.shape[2]
    return cast(FloatArray, out.reshape(rows * row, channels)[:count])


def _stretch(alpha: FloatArray, low: float, high: float) -> FloatArray:
    """(alpha - low) / (high - low) clipped to [0, 1], in place: exactly 0 and 1 outside the ramp."""
    np.subtract(alpha, np.float32(low), out=alpha)
    np.multiply(alpha, np.float32(1.0 / (high - low)), out=alpha)
    return np.clip(alpha, 0.0, 1.0, out=alpha)


# ---------------------------------------------------------------- alpha
def _guided_coefficients(mask: FloatArray, guide: FloatArray, radius: int, eps: float) -> FloatArray:
    """He et al.'s guided filter, colour guide: alpha ~ a . rgb + b in each window (the colour-line model of
    closed-form matting), the 3x3 system solved per pixel by cofactors. Returns the window-averaged (a_r, a_g,
    a_b, b) as HxWx4. Colour, not grey: a grey guide blurred brown text on brown wood (dev set image 028)."""
    r, g, b = guide[..., 0], guide[..., 1], guide[..., 2]
    stack = np.empty((*mask.shape, 13), np.float32)
    stack[..., :3] = guide
    stack[..., 3] = mask
    for k, (x, y) in enumerate(((r, mask), (g, mask), (b, mask), (r, r), (r, g), (r, b), (g, g), (g, b), (b, b)), start=4):
        np.multiply(x, y, out=stack[..., k])
    m = _box(stack, radius)
    mr, mg, mb, mp = m[..., 0], m[..., 1], m[..., 2], m[..., 3]
    cr, cg, cb = m[..., 4] - mr * mp, m[..., 5] - mg * mp, m[..., 6] - mb * mp
    e = np.float32(eps)
    srr, srg, srb = m[..., 7] - mr * mr + e, m[..., 8] - mr * mg, m[..., 9] - mr * mb
    sgg, sgb, sbb = m[..., 10] - mg * mg + e, m[..., 11] - mg * mb, m[..., 12] - mb * mb + e
    i_rr, i_rg, i_rb = sgg * sbb - sgb * sgb, srb * sgb - srg * sbb, srg * sgb - srb * sgg
    i_gg, i_gb, i_bb = srr * sbb - srb * srb, srb * srg - srr * sgb, srr * sgg - srg * srg
    inv_det = 1.0 / (srr * i_rr + srg * i_rg + srb * i_rb)
    a_r = (i_rr * cr + i_rg * cg + i_rb * cb) * inv_det
    a_g = (i_rg * cr + i_gg * cg + i_gb * cb) * inv_det
    a_b = (i_rb * cr + i_gb * cg + i_bb * cb) * inv_det
    offset = mp - a_r * mr - a_g * mg - a_b * mb
    return _box(np.dstack([a_r, a_g, a_b, offset]).astype(np.float32), radius)


def _fill_core(low: FloatArray, core: int) -> FloatArray:
    """Raise the subject's inside to 1.0: from core/2 px (at 1024 px scale) inside the model's 0.5 contour the
    mask ramps up to 1.0 at `core` px. A ramp, not a cut: a step from the model's 0.7 to 1.0 showed as a seam
    across the cat's whiskers."""
    k = max(1.0, core * max(low.shape) / 1024)
    inside = cv2.distanceTransform((low > 0.5).astype(np.uint8), cv2.DIST_L2, 3)  # px to the nearest p <= 0.5
    weight = np.clip((inside - np.float32(k / 2)) * np.float32(2 / k), 0.0, 1.0)
    return cast(FloatArray, (low + weight * (1 - low)).astype(np.float32))


def full_resolution_alpha(
    mask: npt.NDArray[np.floating],
    rgb: ByteArray,
    *,
    refine: bool = True,
    radius: int = GUIDE_RADIUS,
    eps: float = GUIDE_EPS,
    snap: tuple[float, float] = (SNAP_LOW, SNAP_HIGH),
    core: int = SNAP_CORE,
) -> FloatArray:
    """Alpha at the photo's size from the model's mask.

    mask: float HxW in [0, 1] at model resolution (already min-max normalised); rgb: uint8 (H', W', 3 or 4).
    Returns float32 (H', W') in [0, 1]: the subject's core filled, float bilinear upsampling, then (with `refine`)
    a colour guided filter against the photo where the model hesitates, then the `snap` stretch: exactly 0 and 1
    where confident, a float ramp in between. The tuning keywords default to the calibrated constants above.
    """
    height, width = rgb.shape[:2]
    low = np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
    if core:
        low = _fill_core(low, core)
    alpha = _shrink(low, (width, height))  # bilinear up (the usual case), area-averaged down (thumbnails)
    if refine:
        # Only pixels the gated filter could carry across a snap threshold: with p < SNAP_LOW / (1 + 4 * GATE) even
        # the largest move, 4 * GATE * p, stays below SNAP_LOW, which snaps to 0 anyway (the same at the top).
        reach = 1 + 4 * GUIDE_GATE
        points = _band(alpha, snap[0] / reach, 1 - (1 - snap[1]) / reach)
        if len(points):
            scale = min(1.0, GUIDE_SIDE / max(low.shape))
            size = (max(1, round(low.shape[1] * scale)), max(1, round(low.shape[0] * scale)))
            guide = _shrink(rgb[..., :3], size).astype(np.float32) * np.float32(1 / 255)
            prior_low = low if scale == 1.0 else _shrink(low, size)
            coef = _guided_coefficients(prior_low, guide, max(1, round(radius * max(size) / GUIDE_SIDE)), eps)
            sampled = _sample(coef, points, (width, height))
            index = _flat_index(points, width)
            pixels = rgb.reshape(-1, rgb.shape[2])[index, :3].astype(np.float32) * np.float32(1 / 255)
            refined = np.clip(np.einsum("ij,ij->i", sampled[:, :3], pixels) + sampled[:, 3], 0.0, 1.0)
            # Trust the photo's colours where the model hesitates and the model where it is sure: 4p(1-p) is 1 at
            # p = 0.5 and 0 at 0 and 1, so the filter cannot punch holes in a confident subject or paint blobs on
            # a confident background (ungated, it did both on scikit-image's motorcycle).
            flat = alpha.reshape(-1)
            prior = flat[index]
            weight = np.minimum(np.float32(4 * GUIDE_GATE) * prior * (1 - prior), np.float32(1.0))
            flat[index] = prior + weight * (refined - prior)
    return _stretch(alpha, *snap)


# ---------------------------------------------------------------- foreground colour
def _blur_fusion_means(fore: FloatArray, back: FloatArray, alpha: FloatArray, box: int) -> tuple[FloatArray, FloatArray]:
    """Alpha-weighted local means (box x box window) of the foreground and background guesses; alpha is HxWx1."""
    size = (box, box)
    blur_a = cv2.blur(alpha, size)[..., None]  # OpenCV drops a single channel axis
    blur_f = cv2.blur(fore * alpha, size) / (blur_a + _EPS)
    blur_b = cv2.blur(back * (1 - alpha), size) / ((1 - blur_a) + _EPS)
    return blur_f.astype(np.float32), blur_b.astype(np.float32)


def estimate_foreground(
    rgb: ByteArray,
    alpha: npt.NDArray[np.floating],
    *,
    work_side: int = FOREGROUND_WORK_SIDE,
    boxes: tuple[int, int] = FOREGROUND_BOXES,
) -> ByteArray:
    """Foreground colour (uint8 HxWx3) for see-through pixels, so a new background shows no trace of the old one.

    Blur-fusion (Forte & Pitie, "Approximate fast foreground colour estimation", ICIP 2021; BiRefNet's
    refine_foreground): F = blur(F) + alpha * (I - alpha * blur(F) - (1 - alpha) * blur(B)), twice, with a wide
    then a narrow box. The blurs are smooth, so they run at `work_side` px and are sampled back; the formula runs
    at full resolution only on the band 0 < alpha < 1 (dilated BAND_DILATION px). Other pixels are the photo's.
    """
    out = np.array(rgb[..., :3], dtype=np.uint8, copy=True)
    height, width = out.shape[:2]
    alpha_f = np.ascontiguousarray(alpha, dtype=np.float32)
    points = _band(alpha_f, _ABOVE_ZERO, _BELOW_ONE, BAND_DILATION)
    if len(points) == 0:
        return out

    scale = min(1.0, work_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image_w = _shrink(out, size).astype(np.float32) * np.float32(1 / 255)
    alpha_w = _shrink(alpha_f, size)[..., None]
    wide, narrow = (max(1, round(box * max(size) / 1024)) for box in boxes)
    # Pass 1 (wide): the photo itself as both the F and the B guess.
    blur_f, blur_b = _blur_fusion_means(image_w, image_w, alpha_w, wide)
    fore = np.clip(blur_f + alpha_w * (image_w - alpha_w * blur_f - (1 - alpha_w) * blur_b), 0, 1)
    # Pass 2 (narrow): pass 1's F and B, blurred again; its last step runs at full resolution, on the band only.
    blur_f, blur_b = _blur_fusion_means(fore, blur_b, alpha_w, narrow)
    means = _sample(np.dstack([blur_f, blur_b]), points, (width, height))
    f_mean, b_mean = means[:, :3], means[:, 3:]
    index = _flat_index(points, width)
    a = alpha_f.reshape(-1)[index][:, None]
    flat = out.reshape(-1, 3)
    pixels = flat[index].astype(np.float32) * np.float32(1 / 255)
    estimate = f_mean + a * (pixels - a * f_mean - (1 - a) * b_mean)
    flat[index] = np.clip(estimate * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


# ---------------------------------------------------------------- subject confidence
def subject_confidence(raw: npt.NDArray[np.floating]) -> tuple[float, bool]:
    """How sure the model is that there is a subject: (confidence in [0, 1], foreground_found).

    raw: the model's first output before min-max normalisation (a sigmoid map for isnet/u2net), HxW or with
    leading batch/channel axes of 1. Min-max normalisation would stretch even a blank wall's 0.01 haze into a
    'subject', so this reads the raw values. Three factors, multiplied:
      strength  mean raw value over the pixels above 0.5, mapped 0.5..0.9 -> 0..1 (patterns that fool the model,
                wood grain or a checkerboard, reach only 0.55);
      presence  area above 0.5, full from SUBJECT_AREA_FULL of the frame (blank scans, sky, grass: none at all);
      shape     an object's outline crosses few cells of a TEXTURE_GRID grid; a repeating pattern the model
                half-believes (bricks, stripes) leaves mixed cells everywhere. 1 up to TEXTURE_LOW, 0 from HIGH.
    """
    values = np.asarray(raw, dtype=np.float32)
    values = values.reshape(values.shape[-2:])
    fg = values > 0.5
    area = float(fg.mean()) if fg.size else 0.0
    if area == 0.0:
        return 0.0, False
    strength = float(np.clip((float(values[fg].mean()) - 0.5) / 0.4, 0.0, 1.0))
    presence = min(1.0, area / SUBJECT_AREA_FULL)
    height, width = fg.shape
    grid = max(1, min(TEXTURE_GRID, height, width))
    cells = fg[: height // grid * grid, : width // grid * grid].reshape(grid, height // grid, grid, width // grid)
    share = cells.mean(axis=(1, 3))
    mixed = float(((share > 0.02) & (share < 0.98)).mean())
    shape = float(np.clip((TEXTURE_HIGH - mixed) / (TEXTURE_HIGH - TEXTURE_LOW), 0.0, 1.0))
    confidence = round(strength * presence * shape, 4)
    return confidence, confidence >= CONFIDENCE_MIN
