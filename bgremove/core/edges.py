"""Edges that survive a new background: alpha at full resolution, foreground colours, subject confidence.

Three pure functions over numpy arrays (no PIL, no model, no I/O), each cheap next to the model's forward pass:

* `full_resolution_alpha`: the model's float mask upsampled as float (not via uint8), optionally refined against
  the full-resolution photo with a fast guided filter, then stretched so confident pixels are exactly 0 or 1.
* `estimate_foreground`: blur-fusion foreground colour estimation (Forte & Pitié 2021, as in BiRefNet's
  `refine_foreground`) so see-through pixels stop carrying the old background's colour.
* `subject_confidence`: does the raw prediction show a subject at all (sky, walls, textures, blank scans don't)?

Only the edge band (0 < alpha < 1) is ever computed at full resolution; everything wide is done at a working
resolution of about 1024 px and sampled back, so a 12 MP photo costs about what a 1 MP one does.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
ByteArray = npt.NDArray[np.uint8]

# Snapping (issue 17.10: confident foreground must be exactly 255, confident background exactly 0). Alpha is
# stretched linearly so SNAP_LOW -> 0 and SNAP_HIGH -> 1 (a ramp, not a hard cut, so no contour appears where a
# soft edge crosses the threshold). Calibrated on scripts/make_quality_set.py composites with isnet-general-use:
# see `python scripts/quality.py --snap-sweep`.
SNAP_LOW = 0.03
SNAP_HIGH = 0.97

# Fast guided filter (He & Sun 2015), computed at the model's resolution and applied at full resolution.
# Radius is in model-resolution pixels; eps is the regularisation on a [0, 1] grey guide.
GUIDE_RADIUS = 2
GUIDE_EPS = 1e-3

# Blur-fusion foreground estimation: BiRefNet's two box sizes (90 then 6 px) are for a ~1024 px image; we run
# the wide passes at FOREGROUND_WORK_SIDE px on the long side so the boxes keep their meaning at any photo size.
FOREGROUND_WORK_SIDE = 1024
FOREGROUND_BOXES = (90, 6)
BAND_DILATION = 2  # px at full resolution: a pixel either side of the band also gets a clean colour

# Subject confidence (see `subject_confidence`). Calibrated with isnet-general-use on scikit-image photos with a
# subject (astronaut, coffee, chelsea, rocket, camera, horse, motorcycle, clock, logo, colorwheel, crops) and
# without (brick, grass, gravel, sky/wall/floor crops, blank and noisy scans, gradients, stripes, noise).
CONFIDENCE_MIN = 0.5  # found = confidence >= this
SUBJECT_AREA_FULL = 0.005  # fraction of the frame above 0.5 at which a subject counts fully present
TEXTURE_GRID = 32  # cells per side for the texture measure
TEXTURE_LOW, TEXTURE_HIGH = 0.35, 0.45  # fraction of mixed cells: below LOW an object, above HIGH a pattern

_EPS = 1e-5


def _box(image: FloatArray, radius: int) -> FloatArray:
    """Mean over a (2r+1)^2 window; cost does not depend on r (OpenCV's running sums)."""
    size = 2 * max(int(radius), 0) + 1
    return cv2.blur(image, (size, size), borderType=cv2.BORDER_REFLECT)  # type: ignore[return-value]


def _grey(rgb: ByteArray) -> FloatArray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * np.float32(1 / 255)  # type: ignore[no-any-return]


def _sample(image: FloatArray, xs: FloatArray, ys: FloatArray) -> FloatArray:
    """Bilinear samples of `image` at (xs, ys): what a full resize would give there, at a fraction of the cost."""
    count = xs.size
    width = 4096  # cv2.remap wants both map sides below 32767
    rows = -(-count // width)
    pad = rows * width - count
    map_x = np.pad(xs, (0, pad)).reshape(rows, width)
    map_y = np.pad(ys, (0, pad)).reshape(rows, width)
    out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    channels = 1 if image.ndim == 2 else image.shape[2]
    return out.reshape(rows * width, channels)[:count]  # type: ignore[no-any-return]


def _source_coords(index: npt.NDArray[np.intp], full: int, low: int) -> FloatArray:
    """Full-resolution pixel index -> coordinate in an image of `low` pixels (cv2.resize's centre convention)."""
    return ((index.astype(np.float32) + 0.5) * np.float32(low / full) - 0.5).astype(np.float32)


def _stretch(alpha: FloatArray, low: float, high: float) -> FloatArray:
    out = (alpha - np.float32(low)) * np.float32(1.0 / (high - low))
    return np.clip(out, 0.0, 1.0, out=out)


def _guided_coefficients(mask: FloatArray, guide_low: FloatArray, radius: int, eps: float) -> tuple[FloatArray, FloatArray]:
    """Per-pixel linear model alpha ~ a * grey + b at low resolution (He et al.'s guided filter, grey guide)."""
    mean_i = _box(guide_low, radius)
    mean_p = _box(mask, radius)
    cov_ip = _box(guide_low * mask, radius) - mean_i * mean_p
    var_i = _box(guide_low * guide_low, radius) - mean_i * mean_i
    a = cov_ip / (var_i + np.float32(eps))
    b = mean_p - a * mean_i
    return _box(a, radius), _box(b, radius)


def _guided_coefficients_colour(
    mask: FloatArray, guide_low: FloatArray, radius: int, eps: float
) -> tuple[FloatArray, FloatArray]:
    """Colour guided filter: alpha ~ a . rgb + b per window, solving the 3x3 system per pixel in closed form.

    A colour guide separates foreground from background where their greys match (brown text on brown wood).
    """
    mean_i = _box(guide_low, radius)  # HxWx3
    mean_p = _box(mask, radius)
    cov_ip = _box(guide_low * mask[..., None], radius) - mean_i * mean_p[..., None]
    r, g, b = (guide_low[..., k] for k in range(3))
    mr, mg, mb = (mean_i[..., k] for k in range(3))
    e = np.float32(eps)
    srr = _box(r * r, radius) - mr * mr + e
    srg = _box(r * g, radius) - mr * mg
    srb = _box(r * b, radius) - mr * mb
    sgg = _box(g * g, radius) - mg * mg + e
    sgb = _box(g * b, radius) - mg * mb
    sbb = _box(b * b, radius) - mb * mb + e
    # Inverse of the symmetric 3x3 covariance by cofactors (all vectorised).
    i_rr = sgg * sbb - sgb * sgb
    i_rg = srb * sgb - srg * sbb
    i_rb = srg * sgb - srb * sgg
    i_gg = srr * sbb - srb * srb
    i_gb = srb * srg - srr * sgb
    i_bb = srr * sgg - srg * srg
    det = srr * i_rr + srg * i_rg + srb * i_rb
    cr, cg, cb = (cov_ip[..., k] for k in range(3))
    a = np.dstack([
        i_rr * cr + i_rg * cg + i_rb * cb,
        i_rg * cr + i_gg * cg + i_gb * cb,
        i_rb * cr + i_gb * cg + i_bb * cb,
    ]) / det[..., None]
    offset = mean_p - (a * mean_i).sum(axis=2)
    return _box(a.astype(np.float32), radius), _box(offset.astype(np.float32), radius)


def full_resolution_alpha(
    mask: npt.NDArray[np.floating], rgb: ByteArray, *, refine: bool = True, radius: int = GUIDE_RADIUS, eps: float = GUIDE_EPS,
    snap: tuple[float, float] = (SNAP_LOW, SNAP_HIGH), colour: bool = False, reach_low: int | None = None, gate: float | None = None,
) -> FloatArray:
    """Alpha at the photo's size from the model's mask.

    mask: float HxW in [0, 1] at model resolution (already min-max normalised); rgb: uint8 (H', W', 3).
    Returns float32 (H', W') in [0, 1]: float (bilinear) upsampling, then, with `refine`, a fast guided filter
    against the photo in the edge band only, then the SNAP_LOW/SNAP_HIGH stretch: exactly 0 and 1 where confident.
    """
    height, width = rgb.shape[:2]
    low = np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
    alpha = cv2.resize(low, (width, height), interpolation=cv2.INTER_LINEAR)
    if refine:
        # Where the upsampled mask is uncertain (plus the filter's reach), replace it by a * grey + b: the guided
        # filter's linear model borrows the photo's full-resolution edges that the 1024 px mask cannot have.
        reach = max(1, round((radius if reach_low is None else reach_low) * max(height / low.shape[0], width / low.shape[1])))
        unsure = ((alpha > 0.002) & (alpha < 0.998)).astype(np.uint8)
        band = cv2.dilate(unsure, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1)))
        ys, xs = np.nonzero(band)
        if ys.size:
            sx = _source_coords(xs, width, low.shape[1])
            sy = _source_coords(ys, height, low.shape[0])
            if colour:
                guide_low = cv2.resize(rgb, (low.shape[1], low.shape[0]), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
                a3, b1 = _guided_coefficients_colour(low, guide_low, radius, eps)
                coef = _sample(np.dstack([a3, b1]), sx, sy)
                pixels = rgb[ys, xs].astype(np.float32) / 255
                refined = (coef[:, :3] * pixels).sum(axis=1) + coef[:, 3]
                if gate is not None:
                    prior = alpha[ys, xs]
                    weight = np.clip(4 * prior * (1 - prior) * gate, 0, 1)
                    refined = prior + weight * (np.clip(refined, 0, 1) - prior)
                alpha[ys, xs] = refined
            else:
                grey = _grey(rgb)
                guide_low = cv2.resize(grey, (low.shape[1], low.shape[0]), interpolation=cv2.INTER_AREA)
                a, b = _guided_coefficients(low, guide_low, radius, eps)
                coef = _sample(np.dstack([a, b]), sx, sy)
                alpha[ys, xs] = coef[:, 0] * grey[ys, xs] + coef[:, 1]
    return _stretch(alpha, *snap)


def estimate_foreground(
    rgb: ByteArray, alpha: npt.NDArray[np.floating], *, work_side: int = FOREGROUND_WORK_SIDE,
    boxes: tuple[int, int] = FOREGROUND_BOXES,
) -> ByteArray:
    """Foreground colour (uint8 HxWx3) for see-through pixels, so a new background shows no trace of the old one.

    Blur-fusion (Forte & Pitie, "Approximate fast foreground colour estimation", ICIP 2021; BiRefNet's
    refine_foreground): F = blur(F) + alpha * (I - alpha * blur(F) - (1 - alpha) * blur(B)), twice, with a wide
    then a narrow box. The blurs are smooth, so they are computed at `work_side` px and sampled back; the
    formula itself runs only on the band 0 < alpha < 1 (dilated BAND_DILATION px). Other pixels are the photo's.
    """
    out = np.array(rgb[..., :3], dtype=np.uint8, copy=True)
    height, width = out.shape[:2]
    alpha_f = np.asarray(alpha, dtype=np.float32)
    unsure = ((alpha_f > 0.0) & (alpha_f < 1.0)).astype(np.uint8)
    if BAND_DILATION:
        unsure = cv2.dilate(unsure, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * BAND_DILATION + 1,) * 2))
    ys, xs = np.nonzero(unsure)
    if ys.size == 0:
        return out

    scale = min(1.0, work_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image_w = cv2.resize(out, size, interpolation=cv2.INTER_AREA).astype(np.float32) * np.float32(1 / 255)
    alpha_w = cv2.resize(alpha_f, size, interpolation=cv2.INTER_AREA)[..., None]
    side = max(size)
    wide, narrow = (max(1, round(box * side / 1024)) for box in boxes)

    # Pass 1 (wide): the image itself as both F and B guesses.
    blur_f, blur_b = _blur_fusion_means(image_w, image_w, alpha_w, wide)
    fore = np.clip(blur_f + alpha_w * (image_w - alpha_w * blur_f - (1 - alpha_w) * blur_b), 0, 1)
    # Pass 2 (narrow): refine with pass 1's F and B; its final step is evaluated at full resolution below.
    blur_f, blur_b = _blur_fusion_means(fore, blur_b, alpha_w, narrow)

    sx = _source_coords(xs, width, size[0])
    sy = _source_coords(ys, height, size[1])
    means = _sample(np.dstack([blur_f, blur_b]), sx, sy)
    f_mean, b_mean = means[:, :3], means[:, 3:]
    a = alpha_f[ys, xs][:, None]
    pixels = out[ys, xs].astype(np.float32) * np.float32(1 / 255)
    fore_px = f_mean + a * (pixels - a * f_mean - (1 - a) * b_mean)
    out[ys, xs] = np.clip(np.rint(fore_px * 255), 0, 255).astype(np.uint8)
    return out


def _blur_fusion_means(
    fore: FloatArray, back: FloatArray, alpha: FloatArray, box: int
) -> tuple[FloatArray, FloatArray]:
    """Alpha-weighted local means (box x box window) of the foreground and background guesses."""
    size = (box, box)
    blur_a = cv2.blur(alpha, size)[..., None] if alpha.ndim == 3 else cv2.blur(alpha, size)
    blur_f = cv2.blur(fore * alpha, size) / (blur_a + _EPS)
    blur_b = cv2.blur(back * (1 - alpha), size) / ((1 - blur_a) + _EPS)
    return blur_f.astype(np.float32), blur_b.astype(np.float32)


def subject_confidence(raw: npt.NDArray[np.floating]) -> tuple[float, bool]:
    """How sure the model is that there is a subject: (confidence in [0, 1], foreground_found).

    raw: the model's first output before min-max normalisation (a sigmoid map for isnet/u2net). Min-max
    normalisation stretches anything, even a blank wall's 0.01 haze, into a 'subject'; this looks at the raw
    values instead. Three factors, multiplied:
      strength  mean raw value over the pixels above 0.5 (textures that fool the model stay near 0.5-0.8);
      presence  area above 0.5, full at SUBJECT_AREA_FULL of the frame (blank scans and sky have none);
      shape     an object's outline crosses few cells of a TEXTURE_GRID grid; a repeating pattern (bricks,
                stripes) leaves mixed fg/bg cells everywhere. Ramps from 1 at TEXTURE_LOW to 0 at TEXTURE_HIGH.
    """
    values = np.asarray(raw, dtype=np.float32)
    values = values.reshape(values.shape[-2:]) if values.ndim > 2 else values
    fg = values > 0.5
    area = float(fg.mean()) if fg.size else 0.0
    if area == 0.0:
        return 0.0, False
    strength = float(np.clip((values[fg].mean() - 0.5) / 0.4, 0.0, 1.0))
    presence = min(1.0, area / SUBJECT_AREA_FULL)
    height, width = fg.shape
    grid = max(1, min(TEXTURE_GRID, height, width))
    cells = fg[: height // grid * grid, : width // grid * grid].reshape(grid, height // grid, grid, width // grid).mean(axis=(1, 3))
    mixed = float(((cells > 0.02) & (cells < 0.98)).mean())
    shape = float(np.clip((TEXTURE_HIGH - mixed) / (TEXTURE_HIGH - TEXTURE_LOW), 0.0, 1.0))
    confidence = round(strength * presence * shape, 4)
    return confidence, confidence >= CONFIDENCE_MIN
