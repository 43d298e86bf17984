"""Ray's overhead on one machine: `remove DIR -o OUT` with the local engine vs `--engine ray`.

    python scripts/bench_ray.py [--runs 3] [--model isnet-general-use]

Eight skimage photos, the real model, wall time of the whole command (start-up, model loads,
all images, manifest), median of --runs; every run writes to a fresh OUTDIR (Ray would resume
otherwise). "ray, joined" runs the CLI with --address against a Ray this script started before
timing, so it leaves out Ray's own start-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python scripts/bench_ray.py` from a checkout
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry", "hubble_deep_field", "coins")


def make_photos(folder: Path) -> None:
    from PIL import Image
    from skimage import data

    for name in PHOTOS:
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.jpg", quality=92)


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default=None, help="default: REMBG_MODEL_NAME (isnet-general-use)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from bgremove.batch import ray as ray_engine

    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        work = Path(tmp)
        photos = work / "photos"
        photos.mkdir()
        make_photos(photos)
        model = ["--model", args.model] if args.model else []
        base = [sys.executable, "-m", "bgremove", "remove", str(photos), *model]
        ray_args = ["--engine", "ray", "--workers", str(args.workers)]
        variants = {"local": [], "ray": ray_args, "ray, joined": [*ray_args, "--address", "ADDR"]}
        results: dict[str, list[float]] = {name: [] for name in variants}
        timed([*base, "-o", str(work / "warm-up")], env)  # first read of the model file from disk
        for run in range(args.runs):  # interleaved, so drift hits both alike
            for name in ("local", "ray"):
                results[name].append(timed([*base, "-o", str(work / f"out-{name}-{run}"), *variants[name]], env))
        # A Ray started before timing (as a cluster would be), only now: idle, it would slow the runs above.
        import ray

        ray_engine.connect(num_cpus=os.cpu_count())
        try:
            address = ray.get_runtime_context().gcs_address
            # Ray >= 2.5x starts clusters with token auth: a client needs RAY_AUTH_MODE=token (the token
            # itself is read from ~/.ray/auth_token). ray.init set it in our environment; pass it on.
            joined_env = {**env, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
            for run in range(args.runs):
                joined = [*ray_args, "--address", address]
                results["ray, joined"].append(timed([*base, "-o", str(work / f"out-joined-{run}"), *joined], joined_env))
        finally:
            ray.shutdown()
    print(f"{len(PHOTOS)} photos, {os.cpu_count()} CPUs, median of {args.runs} runs (wall time of the whole command)")
    for name, extra in variants.items():
        shown = " ".join(["python -m bgremove remove DIR -o OUT", *model, *extra])
        times = ", ".join(f"{t:.1f}" for t in results[name])
        print(f"{name:12} {statistics.median(results[name]):6.1f} s   ({times})   {shown}")


if __name__ == "__main__":
    main()
