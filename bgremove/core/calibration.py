"""Photos for building an int8 model: calibration photos, and a validation set with known alpha for its gate.

Both come from the photos and textures bundled inside scikit-image's wheel (a dependency of rembg, so always
installed; nothing is downloaded). The two sets share no photo: calibration sees the people, animals and
objects (each also mirrored); the validation set pastes shapes cut from other photos over textures, so its
alpha is known by construction (I = alpha F + (1 - alpha) B) and an int8 model that drifts shows up against
the truth as well as against f32. ECSSD and alphamatting.com are kept out on purpose (independent evaluation).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

if TYPE_CHECKING:
    from numpy.typing import NDArray

# Bundled in the scikit-image wheel (skimage/data/*.png|jpg): loading them never touches the network.
CALIBRATION_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "retina",
    "hubble_deep_field",
    "immunohistochemistry",
    "camera",
    "coins",
    "moon",
    "page",
    "text",
    "horse",
    "cell",
    "colorwheel",
)
VALIDATION_SIZE = (640, 480)  # the model resizes to its own side; small images keep the gate quick


@lru_cache(maxsize=32)
def _photo(name: str) -> Image.Image:
    from skimage import data

    if name == "motorcycle_left":
        array = data.stereo_motorcycle()[0]  # type: ignore[no-untyped-call]
    elif name == "motorcycle_right":
        array = data.stereo_motorcycle()[1]  # type: ignore[no-untyped-call]
    else:
        array = getattr(data, name)()
    if array.dtype == bool:
        array = np.where(array, 255, 0).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def calibration_images(count: int) -> list[Image.Image]:
    """`count` photos for post-training quantization: each bundled photo, then mirrored, then quarter crops."""
    photos = [_photo(name) for name in CALIBRATION_PHOTOS]
    pool = photos + [photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for photo in photos]
    pool += [photo.crop((0, 0, photo.width * 3 // 4, photo.height * 3 // 4)) for photo in photos]
    return [pool[i % len(pool)] for i in range(count)]


def validation_set(count: int = 8) -> list[tuple[Image.Image, NDArray[np.float32]]]:
    """`count` composites (RGB image, true alpha in 0..1), deterministic: shapes cut from photos over textures."""
    rng = np.random.default_rng(23)
    width, height = VALIDATION_SIZE
    textures = ["brick", "grass", "gravel", "motorcycle_right"]
    subjects = ["motorcycle_left", "chelsea", "astronaut", "coffee", "rocket"]
    items = []
    for index in range(count):
        background = _photo(textures[index % len(textures)]).resize((width, height), Image.Resampling.BICUBIC)
        if index % 2:
            background = background.filter(ImageFilter.GaussianBlur(6))  # a shallow depth of field
        tint = np.asarray(rng.uniform(0.6, 1.2, 3), dtype=np.float32)
        back = np.clip(np.asarray(background, dtype=np.float32) * tint, 0, 255)
        fore = np.asarray(_photo(subjects[index % len(subjects)]).resize((width, height), Image.Resampling.BICUBIC), np.float32)
        alpha = _shape_alpha(width, height, rng, soft=index % 3 == 0)
        image = alpha[..., None] * fore + (1 - alpha[..., None]) * back
        items.append((Image.fromarray(np.clip(image + 0.5, 0, 255).astype(np.uint8)), alpha))
    return items


def _shape_alpha(width: int, height: int, rng: np.random.Generator, *, soft: bool) -> NDArray[np.float32]:
    """A subject-like silhouette (a body and a head or handle), anti-aliased by drawing at 4x; soft = defocused."""
    scale = 4
    mask = Image.new("L", (width * scale, height * scale), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = rng.uniform(0.35, 0.65) * width, rng.uniform(0.45, 0.6) * height
    rx, ry = rng.uniform(0.15, 0.25) * width, rng.uniform(0.25, 0.35) * height
    draw.ellipse([(cx - rx) * scale, (cy - ry) * scale, (cx + rx) * scale, (cy + ry) * scale], fill=255)
    head = rng.uniform(0.08, 0.12) * width
    hx, hy = cx + rng.uniform(-0.3, 0.3) * rx, cy - ry - head * 0.6
    draw.ellipse([(hx - head) * scale, (hy - head) * scale, (hx + head) * scale, (hy + head) * scale], fill=255)
    draw.rectangle([(cx - rx * 0.8) * scale, cy * scale, (cx + rx * 0.8) * scale, height * scale], fill=255)
    mask = mask.resize((width, height), Image.Resampling.BOX)
    if soft:
        mask = mask.filter(ImageFilter.GaussianBlur(3))
    alpha: NDArray[np.float32] = np.asarray(mask, dtype=np.float32) / 255.0
    return alpha
