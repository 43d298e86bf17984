"""Build the edge-quality dev set: composites whose alpha and foreground colour are known by construction.

    python scripts/make_quality_set.py                       # 32 images into /tmp/bgremove-quality
    python scripts/make_quality_set.py --out DIR --count 40 --seed 7

Layout (what scripts/quality.py reads): DIR/image/NAME.png (the composite), DIR/alpha/NAME.png (true alpha),
DIR/fg/NAME.png (true foreground colour). Each image is I = alpha*F + (1-alpha)*B in 8-bit sRGB, so the truth
is exact. Foregrounds are shapes with the edges background removal gets wrong: fur and hair strands (drawn at 4x
and area-downsampled, so a strand is a fraction of a pixel wide), defocused soft edges, anti-aliased text and
bare twigs thinner than a pixel. Colours and backgrounds come from scikit-image photos and textures, some
blurred like a shallow depth of field, some plain studio white or black (where fringes show most).
Deterministic for a given --seed; nothing is downloaded (ECSSD and alphamatting.com are kept out on purpose:
they are reserved for independent evaluation). Images stay <= 1.3 MP so the benchmark runs in minutes.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage import data

SIZES = [(1280, 960), (1024, 1024), (960, 1280), (1200, 900), (1280, 800)]
SUPER = 4  # strands and text are drawn at 4x and area-downsampled: sub-pixel widths become fractional alpha


def as_rgb(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool:
        array = np.where(array, 255, 0).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


def fit(image: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random crop of `image` with the aspect of `size` (w, h), resized to it."""
    w, h = size
    ih, iw = image.shape[:2]
    scale = rng.uniform(0.6, 1.0)
    cw = min(iw, int(min(iw, ih * w / h) * scale))
    ch = min(ih, int(cw * h / w))
    x0 = int(rng.integers(0, iw - cw + 1))
    y0 = int(rng.integers(0, ih - ch + 1))
    crop = image[y0 : y0 + ch, x0 : x0 + cw]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_CUBIC if cw < w else cv2.INTER_AREA)


def tint(image: np.ndarray, rng: np.random.Generator, strength: float = 0.35) -> np.ndarray:
    gains = 1.0 + rng.uniform(-strength, strength, 3)
    return np.clip(image.astype(np.float32) * gains, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- backgrounds
def photo_backgrounds() -> list[np.ndarray]:
    """Scenes without a subject of their own (a face or a cup behind the pasted shape becomes the model's
    subject, and the benchmark would measure segmentation instead of edges)."""
    motorcycle_left = data.stereo_motorcycle()[0]
    return [
        data.rocket(),
        motorcycle_left[:, 450:],
        data.hubble_deep_field(),
        data.immunohistochemistry(),
        data.coffee()[:, 430:],
        as_rgb(data.camera())[:200],
        motorcycle_left[:200, :450],
    ]


def texture_backgrounds() -> list[np.ndarray]:
    return [as_rgb(data.brick()), as_rgb(data.grass()), as_rgb(data.gravel()), as_rgb(data.moon())]


def studio(size: tuple[int, int], rng: np.random.Generator, dark: bool) -> np.ndarray:
    """Seamless paper: near-white or near-black with a soft vertical falloff and a little noise."""
    w, h = size
    top, bottom = (rng.uniform(5, 25), rng.uniform(30, 60)) if dark else (rng.uniform(235, 255), rng.uniform(195, 230))
    ramp = np.linspace(top, bottom, h, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(ramp, (h, w, 3)) + rng.normal(0, 1.5, (h, w, 3)).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_background(size: tuple[int, int], rng: np.random.Generator, kind: str) -> np.ndarray:
    if kind == "white":
        return studio(size, rng, dark=False)
    if kind == "black":
        return studio(size, rng, dark=True)
    if kind == "texture":
        textures = texture_backgrounds()
        return tint(fit(textures[int(rng.integers(len(textures)))], size, rng), rng, 0.5)
    photos = photo_backgrounds()
    image = fit(photos[int(rng.integers(len(photos)))], size, rng)
    # Shallow depth of field, as behind most portrait and product shots; a sharp busy photo behind a pasted
    # shape makes the model pick the photo's own subject, which tests segmentation, not edges.
    sigma = float(rng.choice([3.0, 6.0, 10.0]))
    return cv2.GaussianBlur(image, (0, 0), sigma)


# ---------------------------------------------------------------- foreground colours
def colour_sources() -> list[np.ndarray]:
    """Crops that read as fur, hair and fabric (busy crops with objects inside would be segmented as objects)."""
    chelsea, astronaut = data.chelsea(), data.astronaut()
    return [
        chelsea[10:130, 130:330],  # striped cat fur
        chelsea[150:290, 20:170],  # light cheek fur
        astronaut[15:80, 170:290],  # hair
        astronaut[300:460, 20:180],  # orange suit fabric
        data.colorwheel()[60:310, 60:310],
    ]


def make_foreground_colour(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    sources = colour_sources()
    colour = fit(sources[int(rng.integers(len(sources)))], size, rng)
    colour = cv2.GaussianBlur(colour, (0, 0), 1.0)
    return tint(colour, rng, 0.3)


# ---------------------------------------------------------------- alpha shapes
def smooth_shape(binary: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """A binary silhouette scaled into `box` (x, y, w, h) of a canvas, with a ~1.5 px anti-aliased outline."""
    w, h = size
    x, y, bw, bh = box
    canvas = np.zeros((h, w), np.float32)
    scaled = cv2.resize(binary.astype(np.float32), (bw, bh), interpolation=cv2.INTER_LINEAR)
    x1, y1 = min(w, x + bw), min(h, y + bh)
    canvas[y:y1, x:x1] = scaled[: y1 - y, : x1 - x]
    soft = cv2.GaussianBlur(canvas, (0, 0), max(1.0, bw / binary.shape[1]))
    return np.clip((soft - 0.5) * 1.6 + 0.5, 0, 1)


def ellipse(size: tuple[int, int], centre: tuple[float, float], axes: tuple[float, float], soft: float) -> np.ndarray:
    """An ellipse whose edge ramps over `soft` pixels (defocus / motion-blur-like)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xx - centre[0]) / axes[0]) ** 2 + ((yy - centre[1]) / axes[1]) ** 2)
    dist = (1.0 - r) * min(axes)  # approx. signed distance inside, in pixels
    return np.clip(dist / max(soft, 1.0) + 0.5, 0, 1).astype(np.float32)


def strands(
    base: np.ndarray,
    rng: np.random.Generator,
    count: int,
    length: tuple[float, float],
    width: tuple[float, float],
    where: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    spread: float = 0.45,
) -> np.ndarray:
    """Curved hairs growing outward from the outline of `base`, drawn at 4x and area-downsampled."""
    h, w = base.shape
    edge = (base > 0.3) & (base < 0.7)
    ys, xs = np.nonzero(edge)
    if where is not None:
        keep = where(xs, ys)
        ys, xs = ys[keep], xs[keep]
    if len(xs) == 0:
        return np.zeros_like(base)
    gy, gx = np.gradient(cv2.GaussianBlur(base, (0, 0), 3.0))
    canvas = Image.new("L", (w * SUPER, h * SUPER), 0)
    draw = ImageDraw.Draw(canvas)
    for index in rng.integers(0, len(xs), count):
        x, y = float(xs[index]), float(ys[index])
        nx, ny = -gx[ys[index], xs[index]], -gy[ys[index], xs[index]]  # outward normal
        norm = math.hypot(nx, ny) or 1.0
        angle = math.atan2(ny / norm, nx / norm) + rng.normal(0, spread)
        bend = rng.normal(0, 0.025)
        steps, step = 10, rng.uniform(*length) / 10
        x, y = x - math.cos(angle) * 3, y - math.sin(angle) * 3  # root inside the body
        points = []
        for _ in range(steps + 1):
            points.append((x * SUPER, y * SUPER))
            x, y, angle = x + math.cos(angle) * step, y + math.sin(angle) * step, angle + bend * step
        stroke = max(1, round(rng.uniform(*width) * SUPER))
        draw.line(points, fill=int(rng.uniform(170, 255)), width=stroke, joint="curve")
    hair = canvas.resize((w, h), Image.Resampling.BOX)
    return np.asarray(hair, np.float32) / 255.0


def union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 1.0 - (1.0 - a) * (1.0 - b)


def furry_animal(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    w, h = size
    horse = ~data.horse()
    scale = rng.uniform(0.55, 0.8) * min(w / horse.shape[1], h / horse.shape[0])
    bw, bh = int(horse.shape[1] * scale), int(horse.shape[0] * scale)
    if rng.random() < 0.5:
        horse = horse[:, ::-1]
    x, y = int(rng.integers(0, w - bw)), int(rng.integers(int(h * 0.1), h - bh))
    body = smooth_shape(horse, size, (x, y, bw, bh))
    coat = strands(body, rng, int(rng.integers(6000, 10000)), (4, 16), (0.3, 1.0), spread=0.6)  # dense short fur
    return union(union(body, coat), strands(body, rng, int(rng.integers(200, 600)), (12, 30), (0.3, 0.8)))


def pompom(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    w, h = size
    radius = rng.uniform(0.18, 0.3) * min(w, h)
    core = ellipse(size, (w * rng.uniform(0.35, 0.65), h * rng.uniform(0.4, 0.6)), (radius, radius * rng.uniform(0.8, 1.1)), 1.5)
    return union(core, strands(core, rng, int(rng.integers(8000, 12000)), (10, radius * 0.45), (0.3, 1.0)))


def defocused(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    w, h = size
    axes = (rng.uniform(0.2, 0.35) * w, rng.uniform(0.25, 0.4) * h)
    return ellipse(size, (w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)), axes, rng.uniform(6, 30))


def portrait(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Head and shoulders with long flyaway hair on the top half."""
    w, h = size
    cx = w * rng.uniform(0.4, 0.6)
    head = ellipse(size, (cx, h * 0.42), (w * 0.16, h * 0.2), 1.5)
    shoulders = ellipse(size, (cx, h * 1.05), (w * 0.42, h * 0.38), 1.5)
    neck = ellipse(size, (cx, h * 0.66), (w * 0.07, h * 0.12), 1.5)
    body = np.maximum(np.maximum(head, shoulders), neck)
    top = h * 0.5

    def upper(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        return ys < top

    mass = strands(head, rng, int(rng.integers(10000, 16000)), (15, 60), (0.3, 1.0), where=upper, spread=0.9)
    flyaways = strands(head, rng, int(rng.integers(150, 400)), (40, 110), (0.3, 0.7), where=upper)
    return union(union(body, mass), flyaways)


def text(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    w, h = size
    words = ["bgremove", "Edges", "matte", "Fur & hair", "Alpha"]
    word = words[int(rng.integers(len(words)))]
    font = ImageFont.load_default(size=int(h * rng.uniform(0.18, 0.28)) * SUPER)
    canvas = Image.new("L", (w * SUPER, h * SUPER), 0)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font, stroke_width=SUPER * 6)
    x = (w * SUPER - (right - left)) // 2 - left
    y = (h * SUPER - (bottom - top)) // 2 - top
    draw.text((x, y), word, fill=255, font=font, stroke_width=SUPER * 6, stroke_fill=255)
    return np.asarray(canvas.resize((w, h), Image.Resampling.BOX), np.float32) / 255.0


def branches(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A bare shrub: a trunk splitting into ever thinner twigs, the last ones under a pixel wide."""
    w, h = size
    canvas = Image.new("L", (w * SUPER, h * SUPER), 0)
    draw = ImageDraw.Draw(canvas)
    stack = [(w * rng.uniform(0.4, 0.6), h * 0.98, -math.pi / 2 + rng.normal(0, 0.1), h * 0.28, w * 0.018, 0)]
    while stack:
        x, y, angle, length, width, depth = stack.pop()
        x1, y1 = x + math.cos(angle) * length, y + math.sin(angle) * length
        draw.line([(x * SUPER, y * SUPER), (x1 * SUPER, y1 * SUPER)], fill=255, width=max(1, round(width * SUPER)))
        draw.ellipse(
            [(x1 - width / 2) * SUPER, (y1 - width / 2) * SUPER, (x1 + width / 2) * SUPER, (y1 + width / 2) * SUPER], fill=255
        )
        if depth < 7:
            for _ in range(int(rng.integers(2, 4))):
                stack.append((x1, y1, angle + rng.normal(0, 0.45), length * rng.uniform(0.6, 0.78), width * 0.62, depth + 1))
    return np.asarray(canvas.resize((w, h), Image.Resampling.BOX), np.float32) / 255.0


SHAPES: list[tuple[str, Callable[[tuple[int, int], np.random.Generator], np.ndarray]]] = [
    ("fur", furry_animal),
    ("pompom", pompom),
    ("portrait", portrait),
    ("defocus", defocused),
    ("text", text),
    ("branches", branches),
    ("fur", furry_animal),
    ("portrait", portrait),
]
BACKGROUNDS = ["photo", "white", "photo", "black", "texture", "photo", "white", "photo"]


def build(out: Path, count: int, seed: int) -> list[str]:
    for sub in ("image", "alpha", "fg"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        shape_name, shape = SHAPES[index % len(SHAPES)]
        background_kind = BACKGROUNDS[(index // len(SHAPES) + index) % len(BACKGROUNDS)]
        size = SIZES[int(rng.integers(len(SIZES)))]
        alpha = np.clip(shape(size, rng), 0, 1)
        alpha8 = np.rint(alpha * 255).astype(np.uint8)
        alpha = alpha8.astype(np.float32)[..., None] / 255.0  # the saved alpha is the truth: composite with it
        foreground = make_foreground_colour(size, rng)
        if background_kind == "white":  # keep a studio subject visible against its paper
            foreground = (foreground.astype(np.float32) * 0.75).astype(np.uint8)
        background = make_background(size, rng, background_kind)
        image = np.rint(alpha * foreground + (1.0 - alpha) * background).astype(np.uint8)
        name = f"{index:03d}_{shape_name}_{background_kind}"
        Image.fromarray(image).save(out / "image" / f"{name}.png", compress_level=1)
        Image.fromarray(alpha8).save(out / "alpha" / f"{name}.png", compress_level=1)
        Image.fromarray(foreground).save(out / "fg" / f"{name}.png", compress_level=1)
        names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bgremove-quality"))
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    names = build(args.out, args.count, args.seed)
    print(f"wrote {len(names)} composites to {args.out}")


if __name__ == "__main__":
    main()
