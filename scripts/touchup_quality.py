"""Does a touch-up fix what the model got wrong? IoU before and after two strokes, on composites with a known alpha.

    python scripts/touchup_quality.py                       # the table (real model: isnet-general-use)
    python scripts/touchup_quality.py --cost                # what a touch-up costs at 1 MP and 12 MP
    python scripts/touchup_quality.py --save DIR            # also write each photo, its strokes and both cutouts

The photos are made here from scikit-image images, built to fool the model: a subject pasted onto a photo that has
a subject of its own (the model keeps the astronaut, the cat, the cup: background by construction), subjects
camouflaged in the background's own texture, a second subject that blends in. The true alpha is known exactly.
Nothing is downloaded; ECSSD and alphamatting.com stay reserved for independent evaluation.

The strokes are drawn the way a user would, from the truth: one scribble (a zigzag, brush ~1.5% of the photo)
across the largest region the model missed (keep_mask), one across the largest region it wrongly kept
(remove_mask). Columns: IoU of alpha >= 0.5 with the truth before and after; `outside`: the share of the pixels
outside the touched regions that changed (touched = the connected regions of change that contain a stroke), which
should be 0; `touch-up s`: the second request's time (the prediction is cached, so no forward pass).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's bgremove, not an installed one

from bgremove.core.options import parse_options  # noqa: E402
from bgremove.core.pipeline import remove_background  # noqa: E402
from bgremove.core.sessions import SessionCache  # noqa: E402
from bgremove.core.settings import Settings, load_settings  # noqa: E402

SIZE = (1024, 768)
BRUSH = 0.015  # brush diameter as a share of the photo's long side
MIN_REGION = 0.002  # a mistake smaller than this share of the photo gets no stroke


@dataclass(frozen=True)
class Composite:
    name: str
    image: np.ndarray  # uint8 HxWx3
    alpha: np.ndarray  # float HxW in [0, 1]


def _fit(image: np.ndarray, size: tuple[int, int] = SIZE) -> np.ndarray:
    rgb = image if image.ndim == 3 else np.stack([image] * 3, axis=-1)
    rgb = np.ascontiguousarray(rgb[..., :3])
    h, w = rgb.shape[:2]
    target = size[0] / size[1]
    if w / h > target:
        cut = int(h * target)
        rgb = rgb[:, (w - cut) // 2 : (w - cut) // 2 + cut]
    else:
        cut = int(w / target)
        rgb = rgb[(h - cut) // 2 : (h - cut) // 2 + cut]
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _shape(mask: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int] = SIZE) -> np.ndarray:
    """A binary silhouette placed in `box` (x, y, w, h) of a canvas of `size`, anti-aliased (drawn at 4x)."""
    x, y, w, h = box
    canvas = np.zeros((size[1] * 4, size[0] * 4), np.float32)
    placed = cv2.resize(mask.astype(np.float32), (w * 4, h * 4), interpolation=cv2.INTER_LINEAR)
    canvas[y * 4 : (y + h) * 4, x * 4 : (x + w) * 4] = placed
    return np.clip(cv2.resize(canvas, size, interpolation=cv2.INTER_AREA), 0.0, 1.0)


def _ellipse(centre: tuple[int, int], axes: tuple[int, int], angle: float = 0.0) -> np.ndarray:
    canvas = np.zeros((SIZE[1] * 4, SIZE[0] * 4), np.uint8)
    cv2.ellipse(canvas, (centre[0] * 4, centre[1] * 4), (axes[0] * 4, axes[1] * 4), angle, 0, 360, 255, -1)
    return cv2.resize(canvas, SIZE, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _tint(image: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    return np.clip(image.astype(np.float32) * np.float32(gains), 0, 255).astype(np.uint8)


def _over(fore: np.ndarray, alpha: np.ndarray, back: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return np.clip(fore.astype(np.float32) * a + back.astype(np.float32) * (1 - a) + 0.5, 0, 255).astype(np.uint8)


def composites() -> list[Composite]:
    horse = ~data.horse()  # True on the horse
    logo = data.logo()
    logo_alpha = logo[..., 3].astype(np.float32) / 255.0
    astronaut, cat, coffee = _fit(data.astronaut()), _fit(data.chelsea()), _fit(data.coffee())
    brick, grass, gravel = _fit(data.brick()), _fit(data.grass()), _fit(data.gravel())
    camera, rocket = _fit(data.camera()), _fit(data.rocket())
    made: list[Composite] = []

    def add(name: str, image: np.ndarray, alpha: np.ndarray) -> None:
        made.append(Composite(name, image, np.clip(alpha, 0.0, 1.0)))

    # 1-3: a subject pasted next to a photo's own subject (background by construction: the model keeps it).
    a = _shape(horse, (600, 380, 380, 300))
    add("horse-by-astronaut", _over(_tint(cat, (1.1, 0.9, 0.7)), a, astronaut), a)
    a = _shape(logo_alpha, (40, 420, 320, 320))
    add("logo-by-coffee-cup", _over(_fit(logo[..., :3], SIZE), a, coffee), a)
    a = _shape(logo_alpha, (700, 40, 300, 300))
    fill = _fit(data.logo()[..., :3], SIZE)
    add("logo-by-cat", _over(fill, a, cat), a)
    # 4-5: a body with a limb camouflaged in the background's texture (the model drops the limb).
    body = _ellipse((420, 420), (150, 230))
    limb = _ellipse((650, 330), (190, 45), angle=-20)
    a = np.maximum(body, limb)
    fore = np.where(body[..., None] > 0, _tint(rocket, (1.2, 1.0, 0.8)), _tint(brick, (1.05, 1.0, 0.95)))
    add("limb-in-brick", _over(fore, a, brick), a)
    body = _ellipse((500, 400), (200, 160))
    limb = _ellipse((250, 560), (150, 40), angle=30)
    a = np.maximum(body, limb)
    fore = np.where(body[..., None] > 0, astronaut, _tint(gravel, (1.1, 1.1, 1.1)))
    add("limb-in-gravel", _over(fore, a, gravel), a)
    # 6-7: two subjects, the second in the background's own colours (the model keeps only the first).
    first = _shape(horse, (80, 200, 420, 330))
    second = _shape(horse, (560, 260, 380, 300))
    a = np.maximum(first, second)
    fore = np.where(first[..., None] > 0, _tint(coffee, (1.0, 0.9, 0.9)), _tint(grass, (0.95, 1.05, 0.95)))
    add("second-horse-in-grass", _over(fore, a, grass), a)
    first = _ellipse((300, 380), (170, 220))
    second = _ellipse((760, 420), (150, 200))
    a = np.maximum(first, second)
    fore = np.where(first[..., None] > 0, _tint(cat, (1.2, 1.1, 1.0)), _tint(camera, (0.9, 0.9, 0.9)))
    add("second-subject-in-cameraman", _over(fore, a, camera), a)
    # 8: a subject on a photo with a subject of its own, and a limb in that photo's colours.
    body = _shape(horse, (60, 330, 400, 320))
    limb = _ellipse((560, 560), (120, 35), angle=10)
    a = np.maximum(body, limb)
    fore = np.where(body[..., None] > 0, _tint(gravel, (1.3, 1.0, 0.7)), _tint(rocket, (0.9, 0.9, 0.9)))
    add("horse-and-rocket", _over(fore, a, rocket), a)
    return made


def _largest(region: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros(region.shape, bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return np.asarray(labels == biggest)


def scribble(region: np.ndarray) -> np.ndarray:
    """A user's scribble across `region`: a zigzag over its middle along its long axis, kept inside the region
    (eroded by the brush, as a careful user paints), drawn with a round brush. Empty if the region is too small."""
    height, width = region.shape
    if region.mean() < MIN_REGION:
        return np.zeros(region.shape, bool)
    brush = max(3, round(BRUSH * max(width, height)))
    inside = cv2.erode(region.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (brush, brush)))
    if not inside.any():
        inside = region.astype(np.uint8)
    ys, xs = np.nonzero(inside)
    centre = np.array([xs.mean(), ys.mean()])
    points = np.stack([xs, ys], axis=1).astype(np.float64) - centre
    _, _, axes = np.linalg.svd(points[:: max(1, len(points) // 5000)], full_matrices=False)
    along, across = axes[0], axes[1]
    reach = np.percentile(points @ along, [15, 85])
    wiggle = 0.25 * np.percentile(np.abs(points @ across), 80)
    path = [centre + along * t + across * wiggle * (1 if k % 2 else -1) for k, t in enumerate(np.linspace(*reach, 7))]
    canvas = np.zeros(region.shape, np.uint8)
    cv2.polylines(canvas, [np.round(np.array(path)).astype(np.int32)], False, 255, thickness=brush)
    return (canvas > 0) & (inside > 0)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _alpha_of(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def _iou(alpha: np.ndarray, truth: np.ndarray) -> float:
    a, t = alpha >= 128, truth >= 0.5
    return float((a & t).sum() / max(1, (a | t).sum()))


def changed_outside(before: np.ndarray, after: np.ndarray, strokes: np.ndarray) -> float:
    """The share of pixels outside the touched regions that changed (touched: connected regions of change with a
    stroke in them)."""
    changed = (before != after) | strokes
    _, labels = cv2.connectedComponents(changed.astype(np.uint8), connectivity=8)
    touched = np.isin(labels, np.unique(labels[strokes])) & (labels > 0)
    outside = ~touched
    return float(((before != after) & outside).sum() / max(1, outside.sum()))


def quality(settings: Settings, save: Path | None) -> None:
    cache = SessionCache(settings)
    options = parse_options(channels="alpha")
    print("| photo | missed px | kept px | IoU before | IoU after | changed outside | touch-up s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    totals: list[tuple[float, float]] = []
    for item in composites():
        photo = _png(item.image)
        first = remove_background(photo, item.name, options, settings=settings, cache=cache)
        before = _alpha_of(first.data)
        predicted, truth = before >= 128, item.alpha >= 0.5
        missed, kept = _largest(truth & ~predicted), _largest(predicted & ~truth)
        keep, remove = scribble(missed), scribble(kept)
        marks = {"keep_mask": _png(keep.astype(np.uint8) * 255), "remove_mask": _png(remove.astype(np.uint8) * 255)}
        started = time.perf_counter()
        second = remove_background(photo, item.name, options, settings=settings, cache=cache, **marks)
        seconds = time.perf_counter() - started
        assert second.prediction_reused
        after = _alpha_of(second.data)
        iou_before, iou_after = _iou(before, item.alpha), _iou(after, item.alpha)
        totals.append((iou_before, iou_after))
        outside = changed_outside(before, after, keep | remove)
        print(
            f"| {item.name} | {int(missed.sum())} | {int(kept.sum())} | {iou_before:.3f} | {iou_after:.3f} "
            f"| {outside:.4%} | {seconds:.2f} |"
        )
        if save:
            save.mkdir(parents=True, exist_ok=True)
            strokes = item.image.copy()
            strokes[keep] = (0, 255, 0)
            strokes[remove] = (255, 0, 0)
            for suffix, array in (("photo", item.image), ("strokes", strokes), ("before", before), ("after", after)):
                Image.fromarray(array).save(save / f"{item.name}-{suffix}.png")
    mean_before, mean_after = (float(np.mean(column)) for column in zip(*totals, strict=True))
    print(f"| **mean** | | | {mean_before:.3f} | {mean_after:.3f} | | |")


def cost(settings: Settings) -> None:
    """A touch-up at 1 MP and 12 MP with the prediction cached: the request with strokes against the same request
    without (both reuse the prediction), and the solver alone."""
    from bgremove.core import edges, touchup

    cache = SessionCache(settings)
    options = parse_options()
    for label, size in (("1 MP", (1224, 816)), ("12 MP", (4240, 2832))):
        image = cv2.resize(np.asarray(data.astronaut()), (size[1], size[1]), interpolation=cv2.INTER_CUBIC)
        image = np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_CUBIC))
        photo = _png(image)
        keep = np.zeros((size[1], size[0]), np.uint8)  # a stroke across the astronaut's flag side, as a user draws
        cv2.line(
            keep, (int(size[0] * 0.05), int(size[1] * 0.5)), (int(size[0] * 0.2), int(size[1] * 0.7)), 255, max(3, size[0] // 60)
        )
        remove = np.zeros_like(keep)
        cv2.line(
            remove,
            (int(size[0] * 0.7), int(size[1] * 0.1)),
            (int(size[0] * 0.8), int(size[1] * 0.15)),
            255,
            max(3, size[0] // 60),
        )
        marks = {"keep_mask": _png(keep), "remove_mask": _png(remove)}
        remove_background(photo, "p.png", options, settings=settings, cache=cache)  # the first request: the model runs
        plain, touched, solver = [], [], []
        for _ in range(3):
            started = time.perf_counter()
            assert remove_background(photo, "p.png", options, settings=settings, cache=cache).prediction_reused
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert remove_background(photo, "p.png", options, settings=settings, cache=cache, **marks).prediction_reused
            touched.append(time.perf_counter() - started)
        prediction = cache.get(options.model).predict(Image.fromarray(image))
        alpha = edges.full_resolution_alpha(prediction.masks[0], image)
        for _ in range(3):
            started = time.perf_counter()
            touchup.apply(alpha, image, keep > 0, remove > 0)
            solver.append(time.perf_counter() - started)
        cache.predictions.clear()
        print(
            f"{label} ({size[0]}x{size[1]}): request without strokes {min(plain):.2f} s, with strokes "
            f"{min(touched):.2f} s (+{min(touched) - min(plain):.2f} s); solver alone {min(solver):.2f} s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="isnet-general-use", help="model name or .onnx path (default: %(default)s)")
    parser.add_argument("--cost", action="store_true", help="measure a touch-up at 1 MP and 12 MP instead")
    parser.add_argument("--save", type=Path, help="write photos, strokes and both cutouts here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        settings = load_settings({"REMBG_MODEL_NAME": args.model, "DATA_DIR": scratch, "MAX_IMAGE_PIXELS": "20000000"})
        run: Callable[[], None] = (lambda: cost(settings)) if args.cost else (lambda: quality(settings, args.save))
        run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
