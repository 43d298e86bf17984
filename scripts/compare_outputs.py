"""Are two checkouts' outputs byte-identical? Runs the same photos and option sets through each one's pipeline.

    python scripts/compare_outputs.py --other /work/main            # this checkout against /work/main
    python scripts/compare_outputs.py --other /work/main --model /path/to/model.onnx

Each checkout runs in its own interpreter (sys.executable, PYTHONPATH=<checkout>, started outside both trees) and
prints the sha256 of every output; this script compares the lists. Photos are scikit-image's (RGB, greyscale,
RGBA with transparency), the option sets cover every stage (size, crop, formats, backgrounds, channels, roi,
shadow, smoothing, matting, no decontamination); a zip is compared by its members (its entries carry the time
they were written). Exit status 1 when any output differs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OPTION_SETS: list[dict[str, Any]] = [
    {},
    {"format": "jpg", "bg_color": "81d4fa"},
    {"size": "preview", "crop": True, "crop_margin": "10px"},
    {"channels": "alpha"},
    {"format": "webp", "scale": "80%", "position": "center"},
    {"format": "zip", "add_shadow": True},
    {"roi": "10% 0% 90% 100%", "post_process_mask": True},
    {"decontaminate": False, "format": "auto"},
    {"size": "medium", "bg_image": True},
    {"alpha_matting": True, "size": "preview"},
]


def photos() -> dict[str, bytes]:
    import numpy as np
    from PIL import Image
    from skimage import data

    def png(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    logo = data.logo()  # RGBA with real transparency
    return {
        "astronaut.png": png(Image.fromarray(data.astronaut())),
        "chelsea.jpg": _jpeg(Image.fromarray(data.chelsea())),
        "coffee.png": png(Image.fromarray(data.coffee())),
        "camera.png": png(Image.fromarray(data.camera())),  # greyscale
        "logo.png": png(Image.fromarray(np.ascontiguousarray(logo))),
    }


def _jpeg(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def dump(model: str) -> dict[str, str]:
    """sha256 of every (photo, option set) output of the bgremove found on sys.path."""
    import bgremove
    from bgremove.core.options import parse_options
    from bgremove.core.pipeline import remove_background
    from bgremove.core.sessions import SessionCache
    from bgremove.core.settings import load_settings

    with tempfile.TemporaryDirectory() as scratch:
        settings = load_settings({"REMBG_MODEL_NAME": model, "DATA_DIR": scratch})
        cache = SessionCache(settings)
        images = photos()
        background = images["coffee.png"]
        hashes = {"source": str(Path(bgremove.__file__).parent)}
        for name, data in images.items():
            for number, values in enumerate(OPTION_SETS):
                values = dict(values)
                with_background = values.pop("bg_image", False)
                options = parse_options(values)
                result = remove_background(
                    data, name, options, settings=settings, cache=cache, bg_image=background if with_background else None
                )
                hashes[f"{name} #{number} {json.dumps(OPTION_SETS[number], sort_keys=True)}"] = _digest(result.data)
        return hashes


def _digest(data: bytes) -> str:
    """sha256 of an output; of a zip's member names and contents (its entries carry the time they were written)."""
    if not data.startswith(b"PK"):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0" + archive.read(name))
    return digest.hexdigest()


def run_in(checkout: Path, model: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    with tempfile.TemporaryDirectory() as outside:  # neither checkout's directory is on sys.path by accident
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--dump", "--model", model],
            env=env,
            cwd=outside,
            capture_output=True,
            text=True,
            check=True,
        )
    hashes: dict[str, str] = json.loads(done.stdout)
    return hashes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other", type=Path, help="the checkout to compare with (e.g. /work/main)")
    parser.add_argument("--model", default="isnet-general-use", help="model name or .onnx path (default: %(default)s)")
    parser.add_argument("--dump", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dump:
        print(json.dumps(dump(args.model)))
        return 0
    if args.other is None:
        parser.error("--other CHECKOUT is required")
    ours, theirs = run_in(ROOT, args.model), run_in(args.other.resolve(), args.model)
    print(f"ours: {ours.pop('source')}, theirs: {theirs.pop('source')}")
    differing = [key for key in ours if ours[key] != theirs.get(key)]
    for key in ours:
        print(f"{'same' if key not in differing else 'DIFF'}  {ours[key][:16]}  {key}")
    print(f"{len(ours) - len(differing)}/{len(ours)} outputs byte-identical ({ROOT} vs {args.other})")
    return 1 if differing or set(ours) != set(theirs) else 0


if __name__ == "__main__":
    sys.exit(main())
