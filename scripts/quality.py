"""Edge-quality benchmark: how well cutouts survive a new background, against known truth.

    python scripts/make_quality_set.py                  # build the dev set once (/tmp/bgremove-quality)
    python scripts/quality.py                           # rembg vs today vs new, markdown table
    python scripts/quality.py --limit 8 --methods today,new,new-norefine
    python scripts/quality.py --time-12mp               # cost of each edge step on a 4000x3000 photo
    python scripts/quality.py --sweep                   # how edges.py's constants were chosen
    python scripts/quality.py --confidence              # subject_confidence: photos with / without a subject

Reads DIR/image/*.png|jpg, DIR/alpha/*.png (true alpha) and, when present, DIR/fg/* (true foreground colour;
without it the composite error is skipped). Methods, all on the same model (isnet-general-use):
  rembg         rembg.remove(...) with a rembg session: what `rembg p` gives
  today         the raw map min-max normalised, quantised to uint8, LANCZOS-resized; RGB is the photo's
  new           bgremove.core.edges: full_resolution_alpha (guided refinement) + estimate_foreground
  new-norefine  the same without the guided filter;  today+fg / new-alpha: one half of `new` each
Metrics: alpha MAE (x1000), SAD and gradient error (/1000, the matting papers' units), IoU at alpha > 0.5, and
the composite error: mean |alpha F + (1 - alpha) K - truth| in 0-255 units over the edge band (0 < true alpha < 1,
dilated 3 px) on a new background K = white, black and green. Raw predictions are cached (--cache) because the
model takes ~1.5 s an image on 2 cores. `--engine module:function` swaps the predictor: a callable taking an
RGB uint8 array and returning the model's raw float map (before min-max normalisation).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bgremove.core import edges  # noqa: E402

MODEL_NAME = "isnet-general-use"
REMBG_HOME = Path(os.environ.get("U2NET_HOME", Path.home() / ".rembg"))  # rembg's model home
MODEL_PATH = REMBG_HOME / "models" / MODEL_NAME / f"{MODEL_NAME}.onnx"
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "green": (0, 255, 0)}
METHODS = ["rembg", "today", "new", "new-norefine", "today+fg", "new-alpha"]
DEFAULT_METHODS = "rembg,today,new,new-norefine"

Predictor = Callable[[np.ndarray], np.ndarray]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the model
class OnnxIsnet:
    """isnet-general-use on onnxruntime, preprocessed exactly as rembg's DisSession does."""

    def __init__(self, path: Path = MODEL_PATH, size: int = 1024) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.size = size

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        image = Image.fromarray(rgb).convert("RGB").resize((self.size, self.size), Image.Resampling.LANCZOS)
        array = np.asarray(image, dtype=np.float64)
        array = array / max(float(array.max()), 1e-6) - 0.5  # rembg: divide by the max pixel, mean 0.5, std 1.0
        batch = array.transpose(2, 0, 1)[None].astype(np.float32)
        return np.asarray(self.session.run(None, {self.input: batch})[0][0, 0], dtype=np.float32)


def load_engine(spec: str | None) -> Predictor:
    if not spec:
        return OnnxIsnet()
    module_name, _, attribute = spec.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    return factory() if isinstance(factory, type) else factory  # a class is instantiated, a function used as is


class Cache:
    """Raw predictions and rembg outputs on disk, keyed by the image's pixels (and the engine's name)."""

    def __init__(self, folder: Path, tag: str) -> None:
        self.folder = folder
        self.tag = tag
        folder.mkdir(parents=True, exist_ok=True)

    def key(self, rgb: np.ndarray, kind: str) -> Path:
        digest = hashlib.sha1(rgb.tobytes() + repr(rgb.shape).encode() + self.tag.encode()).hexdigest()[:20]
        return self.folder / f"{digest}.{kind}"

    def raw(self, rgb: np.ndarray, predict: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.key(rgb, "raw.npy")
        if path.exists():
            return np.load(path)
        value = predict()
        np.save(path, value)
        return value

    def rembg(self, rgb: np.ndarray, run: Callable[[], bytes]) -> np.ndarray:
        path = self.key(rgb, "rembg.png")
        if not path.exists():
            path.write_bytes(run())
        return np.asarray(Image.open(path).convert("RGBA"))


# ---------------------------------------------------------------- methods: each gives (alpha float [0,1], straight RGB)
def minmax(raw: np.ndarray) -> np.ndarray:
    low, high = float(raw.min()), float(raw.max())
    return ((raw - low) / max(high - low, 1e-12)).astype(np.float32)


def today_alpha(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What rembg's DisSession and the pipeline do today: uint8 truncation, then LANCZOS to the photo size."""
    mask = Image.fromarray((minmax(raw) * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    return np.asarray(mask, dtype=np.float32) / 255.0


class Methods:
    def __init__(self, cache: Cache, engine: Predictor | None) -> None:
        self.cache = cache
        self.engine = engine
        self.rembg_session = None

    def raw(self, rgb: np.ndarray) -> np.ndarray:
        def predict() -> np.ndarray:
            if self.engine is None:
                self.engine = OnnxIsnet()
            return self.engine(rgb)

        return self.cache.raw(rgb, predict)

    def rembg(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        def run() -> bytes:
            os.environ.setdefault("U2NET_HOME", str(REMBG_HOME))
            import rembg

            if self.rembg_session is None:
                self.rembg_session = rembg.new_session(MODEL_NAME)
            cutout = rembg.remove(Image.fromarray(rgb), session=self.rembg_session)
            buffer = io.BytesIO()
            cutout.save(buffer, format="PNG")
            return buffer.getvalue()

        rgba = self.cache.rembg(rgb, run)
        return rgba[..., 3].astype(np.float32) / 255.0, rgba[..., :3]

    def run(self, name: str, rgb: np.ndarray, **options: Any) -> tuple[np.ndarray, np.ndarray]:
        if name == "rembg":
            return self.rembg(rgb)
        raw = self.raw(rgb)
        size = (rgb.shape[1], rgb.shape[0])
        if name == "today":
            return today_alpha(raw, size), rgb
        if name == "today+fg":
            alpha = today_alpha(raw, size)
            return alpha, edges.estimate_foreground(rgb, alpha)
        refine = name != "new-norefine"
        alpha = edges.full_resolution_alpha(minmax(raw), rgb, refine=refine, **options)
        if name == "new-alpha":
            return alpha, rgb
        return alpha, edges.estimate_foreground(rgb, alpha)


# ---------------------------------------------------------------- metrics
def gradient_error(pred: np.ndarray, true: np.ndarray) -> float:
    """Rhemann et al.'s gradient error: Gaussian-derivative (sigma 1.4) magnitudes, squared difference, /1000."""
    g_pred = ndimage.gaussian_gradient_magnitude(pred.astype(np.float64), 1.4)
    g_true = ndimage.gaussian_gradient_magnitude(true.astype(np.float64), 1.4)
    return float(((g_pred - g_true) ** 2).sum() / 1000.0)


def edge_band(true: np.ndarray) -> np.ndarray:
    unsure = ((true > 0) & (true < 1)).astype(np.uint8)
    return cv2.dilate(unsure, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))).astype(bool)


def composite(alpha: np.ndarray, colour: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    a = alpha[..., None].astype(np.float32)
    return a * colour.astype(np.float32) + (1 - a) * np.asarray(background, np.float32)


def score(alpha: np.ndarray, colour: np.ndarray, true: np.ndarray, true_fg: np.ndarray | None) -> dict[str, float]:
    diff = np.abs(alpha - true)
    inter = np.logical_and(alpha > 0.5, true > 0.5).sum()
    union = np.logical_or(alpha > 0.5, true > 0.5).sum()
    result = {
        "MAE": float(diff.mean() * 1000),
        "SAD": float(diff.sum() / 1000),
        "Grad": gradient_error(alpha, true),
        "IoU": float(inter / union) if union else 1.0,
    }
    if true_fg is not None:
        band = edge_band(true)
        for label, background in BACKGROUNDS.items():
            error = np.abs(composite(alpha, colour, background) - composite(true, true_fg, background))
            result[f"comp-{label}"] = float(error[band].mean())
        result["comp"] = statistics.fmean(result[f"comp-{label}"] for label in BACKGROUNDS)
    return result


# ---------------------------------------------------------------- data set
def load_set(folder: Path, limit: int | None) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    images = sorted(p for p in (folder / "image").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if limit:
        images = images[:limit]
    items = []
    for path in images:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        alpha = np.asarray(Image.open(folder / "alpha" / f"{path.stem}.png").convert("L"), dtype=np.float32) / 255.0
        fg_candidates = sorted((folder / "fg").glob(f"{path.stem}.*")) if (folder / "fg").is_dir() else []
        fg = np.asarray(Image.open(fg_candidates[0]).convert("RGB")) if fg_candidates else None
        items.append((path.stem, rgb, alpha, fg))
    return items


def table(rows: dict[str, dict[str, float]], baseline: str | None) -> str:
    columns = ["MAE", "SAD", "Grad", "IoU", "comp-white", "comp-black", "comp-green", "comp"]
    columns = [c for c in columns if any(c in r for r in rows.values())]
    lines = ["| method | " + " | ".join(columns) + " | comp vs " + (baseline or "-") + " |"]
    lines.append("|---" * (len(columns) + 2) + "|")
    for name, row in rows.items():
        cells = [f"{row[c]:.4f}" if c == "IoU" else f"{row[c]:.2f}" for c in columns]
        change = "-"
        if baseline and baseline in rows and "comp" in row and rows[baseline].get("comp"):
            change = f"{(row['comp'] / rows[baseline]['comp'] - 1) * 100:+.1f}%"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {change} |")
    return "\n".join(lines)


def benchmark(args: argparse.Namespace) -> None:
    items = load_set(args.data, args.limit)
    if not items:
        raise SystemExit(f"no images under {args.data / 'image'}; run scripts/make_quality_set.py first")
    methods = Methods(Cache(args.cache, args.engine or MODEL_NAME), load_engine(args.engine) if args.engine else None)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    per_method: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for index, (stem, rgb, true, fg) in enumerate(items, 1):
        log(f"{index}/{len(items)} {stem} {rgb.shape[1]}x{rgb.shape[0]}")
        for name in names:
            alpha, colour = methods.run(name, rgb)
            per_method[name].append(score(alpha, colour, true, fg))
            if args.per_image:
                print(f"{stem:28s} {name:14s} " + " ".join(f"{k}={v:.3f}" for k, v in per_method[name][-1].items()))
    rows = {name: {k: statistics.fmean(r[k] for r in results) for k in results[0]} for name, results in per_method.items()}
    print(f"\n{len(items)} images from {args.data}, model {args.engine or MODEL_NAME}\n")
    print(table(rows, "today" if "today" in rows else None))


def sweep(args: argparse.Namespace) -> None:
    """Try the snap thresholds, the core fill and guided-filter settings on the set: how edges.py's constants
    were chosen. Each row changes one thing from the defaults."""
    items = load_set(args.data, args.limit)
    methods = Methods(Cache(args.cache, args.engine or MODEL_NAME), load_engine(args.engine) if args.engine else None)
    settings: list[tuple[str, str, dict[str, Any]]] = [("today", "today", {}), ("new (defaults)", "new", {})]
    settings.append(("new, refine=False", "new-norefine", {}))
    for low, high in [(0.0, 1.0), (0.01, 0.99), (0.05, 0.95), (0.1, 0.9)]:
        settings.append((f"new, snap={low}/{high}", "new", {"snap": (low, high)}))
    for core in (0, 8, 32):
        settings.append((f"new, core={core}", "new", {"core": core}))
    for radius in (2, 4, 16, 24):
        settings.append((f"new, radius={radius}", "new", {"radius": radius}))
    for eps in (1e-5, 1e-3, 1e-2):
        settings.append((f"new, eps={eps:g}", "new", {"eps": eps}))
    rows = {}
    for label, method, options in settings:
        results = [score(*methods.run(method, rgb, **options), true, fg) for _, rgb, true, fg in items]
        rows[label] = {k: statistics.fmean(r[k] for r in results) for k in results[0]}
        log(label)
    print(table(rows, "today"))


# ---------------------------------------------------------------- subject confidence calibration
def _rgb(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool:
        array = np.where(array, 255, 0).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.shape[2] == 4:  # the logo: flatten onto white
        alpha = array[..., 3:4] / 255.0
        array = (array[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(array)


def _blank(seed: int, level: float, noise: float, slope: float = 0.0) -> np.ndarray:
    """A scanned blank page: a level, an optional gradient, blotchy paper and sensor noise."""
    rng = np.random.default_rng(seed)
    h, w = 900, 1200
    image = np.full((h, w, 1), level, np.float64) + np.linspace(-slope, slope, w)[None, :, None]
    blotches = cv2.resize(rng.normal(0, 1, (h // 30, w // 30)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    image = image + blotches[..., None] * noise * 2 + rng.normal(0, noise, (h, w, 1))
    return np.clip(image, 0, 255).astype(np.uint8).repeat(3, axis=2)


def _gradient(start: tuple[int, int, int], end: tuple[int, int, int], vertical: bool = False) -> np.ndarray:
    t = np.linspace(0, 1, 800 if vertical else 1000)
    t = t[:, None, None] if vertical else t[None, :, None]
    ramp = np.asarray(start)[None, None] * (1 - t) + np.asarray(end)[None, None] * t
    return np.broadcast_to(ramp, (800, 1000, 3)).astype(np.uint8).copy()


def confidence_sets() -> dict[str, dict[str, np.ndarray]]:
    """The photos edges.py's confidence constants were calibrated on: with a subject, without, and ambiguous."""
    from skimage import data

    astronaut, coffee, chelsea, camera, brick = data.astronaut(), data.coffee(), data.chelsea(), data.camera(), data.brick()
    motorcycle = data.stereo_motorcycle()[0]
    yy, xx = np.indices((600, 800))
    return {
        "subject": {
            "astronaut": astronaut,
            "coffee": coffee,
            "chelsea": chelsea,
            "rocket": data.rocket(),
            "camera": _rgb(camera),
            "horse": _rgb(~data.horse()),
            "horse-dark": _rgb(data.horse()),
            "motorcycle": motorcycle,
            "clock": _rgb(data.clock()),
            "logo": _rgb(data.logo()),
            "colorwheel": data.colorwheel(),
            "coffee-cup": np.ascontiguousarray(coffee[0:300, 150:500]),
            "astronaut-face": np.ascontiguousarray(astronaut[0:300, 100:400]),
        },
        "none": {
            "brick": _rgb(brick),
            "brick-2x": _rgb(brick[0:256, 0:256]),
            "brick-4x": _rgb(brick[100:228, 100:228]),
            "brick-rotated": _rgb(np.rot90(brick)),
            "grass": _rgb(data.grass()),
            "grass-zoom": _rgb(data.grass()[0:200, 0:300]),
            "gravel": _rgb(data.gravel()),
            "sky-camera": _rgb(camera[0:90, 270:512]),
            "wood-coffee": _rgb(coffee[:, 545:600]),
            "wall-chelsea": _rgb(chelsea[150:300, 405:451]),
            "sky-rocket": _rgb(data.rocket()[0:110, 360:560]),
            "floor-motorcycle": _rgb(motorcycle[440:500, 0:300]),
            "wall-astronaut": _rgb(astronaut[0:90, 315:385]),
            "checkerboard": _rgb(data.checkerboard()),
            "stripes": _rgb((((xx + yy) // 20) % 2 * 200 + 30).astype(np.uint8)),
            "noise": np.random.default_rng(5).integers(0, 256, (600, 800, 3)).astype(np.uint8),
            "blank-white": _blank(1, 245, 2.0),
            "blank-grey": _blank(2, 180, 3.0),
            "blank-paper": _blank(3, 235, 5.0, 8),
            "blank-dark": _blank(4, 20, 2.0),
            "gradient-grey": _gradient((0, 0, 0), (255, 255, 255)),
            "gradient-sky": _gradient((20, 60, 160), (180, 210, 250), vertical=True),
            "gradient-warm": _gradient((250, 200, 120), (200, 80, 40)),
        },
        "ambiguous": {
            "hubble": data.hubble_deep_field(),
            "moon": _rgb(data.moon()),
            "moon-crop": _rgb(data.moon()[200:400, 100:400]),
            "page": _rgb(data.page()),
            "text": _rgb(data.text()),
            "coins": _rgb(data.coins()),
            "cell": _rgb(data.cell()),
            "immunohistochemistry": data.immunohistochemistry(),
        },
    }


def confidence(args: argparse.Namespace) -> None:
    """Score edges.subject_confidence on the calibration photos; prints each group's separation."""
    methods = Methods(Cache(args.cache, args.engine or MODEL_NAME), load_engine(args.engine) if args.engine else None)
    print("| group | photo | confidence | found |\n|---|---|---|---|")
    summary = []
    for group, photos in confidence_sets().items():
        scores = []
        for name, rgb in photos.items():
            value, found = edges.subject_confidence(methods.raw(np.ascontiguousarray(rgb[..., :3])))
            scores.append((value, found))
            print(f"| {group} | {name} | {value:.3f} | {found} |")
        values = [v for v, _ in scores]
        summary.append(f"{group}: min {min(values):.3f}, max {max(values):.3f}, found {sum(f for _, f in scores)}/{len(scores)}")
    print("\n" + "\n".join(summary))


# ---------------------------------------------------------------- cost at 12 MP
def time_12mp(args: argparse.Namespace) -> None:
    from skimage import data

    rgb = np.asarray(Image.fromarray(data.astronaut()).resize((4000, 3000), Image.Resampling.BICUBIC))
    engine = load_engine(args.engine)
    engine(rgb)  # warm-up
    timings: dict[str, list[float]] = {}

    def clock(label: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        value = function(*args, **kwargs)
        timings.setdefault(label, []).append(time.perf_counter() - started)
        return value

    def assemble(colour: np.ndarray, alpha8: np.ndarray) -> np.ndarray:
        return np.dstack([colour, alpha8])

    size = (rgb.shape[1], rgb.shape[0])
    band = 0.0
    for _ in range(args.rounds):
        raw = clock("model forward (incl. 1024 resize)", engine, rgb)
        clock("subject_confidence", edges.subject_confidence, raw)
        mask = minmax(raw)
        today = clock("today: uint8 + LANCZOS resize", today_alpha, raw, size)
        clock("today: RGBA assembly", assemble, rgb, (today * 255).astype(np.uint8))
        alpha = clock("full_resolution_alpha(refine=True)", edges.full_resolution_alpha, mask, rgb, refine=True)
        clock("full_resolution_alpha(refine=False)", edges.full_resolution_alpha, mask, rgb, refine=False)
        fore = clock("estimate_foreground", edges.estimate_foreground, rgb, alpha)
        clock("new: uint8 + RGBA assembly", lambda f=fore, a=alpha: assemble(f, cv2.convertScaleAbs(a, alpha=255.0)))
        band = float(((alpha > 0) & (alpha < 1)).mean())
    best = {label: min(values) for label, values in timings.items()}
    forward = best["model forward (incl. 1024 resize)"]
    print(f"\n4000x3000 astronaut, best of {args.rounds}; edge band = {band * 100:.2f}% of pixels\n")
    print("| step | seconds | vs forward pass |\n|---|---|---|")
    for label, seconds in best.items():
        print(f"| {label} | {seconds:.3f} | {seconds / forward * 100:.1f}% |")
    today_total = forward + best["today: uint8 + LANCZOS resize"] + best["today: RGBA assembly"]
    new_total = (
        forward
        + best["subject_confidence"]
        + best["full_resolution_alpha(refine=True)"]
        + best["estimate_foreground"]
        + best["new: uint8 + RGBA assembly"]
    )
    new_plain = new_total - best["full_resolution_alpha(refine=True)"] + best["full_resolution_alpha(refine=False)"]
    print(
        f"\ntoday (forward + post): {today_total:.3f} s; new default (refine=True): {new_total:.3f} s "
        f"({(new_total / today_total - 1) * 100:+.1f}%); new without refine: {new_plain:.3f} s "
        f"({(new_plain / today_total - 1) * 100:+.1f}%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/tmp/bgremove-quality"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bgremove-quality-cache"))
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma list from {', '.join(METHODS)}")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--engine", default=None, help="module:callable returning the raw map for an RGB array")
    parser.add_argument("--per-image", action="store_true", help="print every image's scores too")
    parser.add_argument("--sweep", action="store_true", help="try snap thresholds and guided-filter settings")
    parser.add_argument("--time-12mp", action="store_true", help="time each edge step on a 4000x3000 photo")
    parser.add_argument("--confidence", action="store_true", help="subject_confidence on photos with and without a subject")
    parser.add_argument("--rounds", type=int, default=3, help="rounds for --time-12mp")
    args = parser.parse_args()
    if args.time_12mp:
        time_12mp(args)
    elif args.confidence:
        confidence(args)
    elif args.sweep:
        sweep(args)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
