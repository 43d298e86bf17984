"""Optional mask operations: smoothing the outline, and pymatting's closed-form alpha matting.

pymatting (and its numba JIT) is imported only when alpha matting is asked for: the import and the first
compile cost tens of seconds, which must stay off the start-up and default request paths.
"""

from __future__ import annotations

import cv2
import numpy as np

SPECKLE_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
SMOOTH_SIGMA = 2.0  # rembg's post_process blurs with sigma 2 before thresholding; without the threshold, half is enough


def smooth_mask(alpha: np.ndarray) -> np.ndarray:
    """Smooth the outline and drop speckles and pinholes, keeping soft edges soft.

    rembg's post_process opens the mask, blurs it and thresholds it to 0/255, which destroys hair and motion
    blur. Here the opening and closing are grey-level (on the float alpha): a speck smaller than the kernel
    goes, a pinhole fills, but a ramp (a soft edge) passes through unchanged; a light blur then evens out
    jagged outline steps.
    """
    opened = cv2.morphologyEx(alpha.astype(np.float32), cv2.MORPH_OPEN, SPECKLE_KERNEL)
    closed = cv2.morphologyEx(opened, cv2.MORPH_CLOSE, SPECKLE_KERNEL)
    smoothed = cv2.GaussianBlur(closed, (0, 0), SMOOTH_SIGMA / 2)
    result: np.ndarray = np.clip(smoothed, 0.0, 1.0).astype(np.float32)
    return result


def alpha_matting(
    rgb: np.ndarray, alpha: np.ndarray, foreground_threshold: int, background_threshold: int, erode_size: int
) -> np.ndarray:
    """rembg's alpha matting (trimap from thresholds and erosion, then pymatting's closed-form alpha).

    Falls back to the given alpha when the trimap has no unknown region, as rembg does.
    """
    from pymatting import estimate_alpha_cf
    from scipy.ndimage import binary_erosion

    mask = np.clip(alpha * 255.0, 0, 255).astype(np.uint8)
    structure = np.ones((erode_size, erode_size), dtype=np.uint8) if erode_size > 0 else None
    is_foreground = binary_erosion(mask > foreground_threshold, structure=structure)
    is_background = binary_erosion(mask < background_threshold, structure=structure, border_value=1)
    trimap = np.full(mask.shape, 0.5, dtype=np.float64)
    trimap[is_foreground] = 1.0
    trimap[is_background] = 0.0
    if not (trimap == 0.5).any() or not is_foreground.any() or not is_background.any():
        return alpha
    try:
        refined = estimate_alpha_cf(rgb.astype(np.float64) / 255.0, trimap)
    except ValueError:  # pymatting refuses some degenerate trimaps; rembg falls back the same way
        return alpha
    result: np.ndarray = np.clip(refined, 0.0, 1.0).astype(np.float32)
    return result
