"""What overlapping I/O with the forward pass gives a batch: BATCH_CONCURRENCY=1 (one item after another, as jobs
and Ray actors ran before) against the default 2, interleaved round by round, on the real default model.

    python scripts/bench_overlap.py                  # jobs and the CLI, 8 photos, 3 rounds (about 5 minutes)
    python scripts/bench_overlap.py --photos 8 --rounds 2 --size 2000

- jobs: a JobRunner in this process (the server's own job worker, DATA_DIR in a temp dir), time from submit to done;
- CLI: `python -m bgremove remove DIR -o OUT`, the whole process.
The photos are scikit-image's, resized to SIZE px on the longer side (phone photos are bigger than the model's
input; what overlaps is decode, alpha, colour, compose and encode, which grow with the photo). Ratios only: the
machines are shared.
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

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.bench import log, make_photos  # noqa: E402


def photos_at(folder: Path, count: int, size: int) -> list[Path]:
    paths = make_photos(folder, None)[:count]
    for path in paths:
        with Image.open(path) as image:
            scale = size / max(image.size)
            image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS).save(
                path, quality=92
            )
    return paths


def job_seconds(paths: list[Path], concurrency: int, work: Path) -> float:
    """Submit one job of `paths` to a fresh JobRunner and wait for it to finish; seconds from submit to done."""
    from bgremove.batch.engine import BatchInput
    from bgremove.batch.jobs import JobRunner
    from bgremove.core.options import RemovalOptions
    from bgremove.core.sessions import SessionCache
    from bgremove.core.settings import load_settings

    settings = load_settings({"DATA_DIR": str(work), "BATCH_CONCURRENCY": str(concurrency), "PREDICTION_CACHE_MB": "0"})
    cache = SessionCache(settings)
    cache.get()  # the model loads before the clock starts
    runner = JobRunner(settings, cache, poll_seconds=0.02)
    runner.start()
    try:
        started = time.perf_counter()
        job = runner.store.submit([BatchInput(p.name, data=p.read_bytes()) for p in paths], RemovalOptions())
        runner.wake()
        while runner.store.status_of(job.id) not in ("done", "failed", "cancelled"):
            time.sleep(0.02)
        return time.perf_counter() - started
    finally:
        runner.close()


def cli_seconds(folder: Path, concurrency: int, out: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bgremove", "remove", str(folder), "-o", str(out)],
        check=True,
        capture_output=True,
        env={**os.environ, "BATCH_CONCURRENCY": str(concurrency), "QUANTIZE_ON_LOAD": "false"},
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=2000, help="longer side of each photo in px")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bgremove-overlap-"))
    paths = photos_at(work / "photos", args.photos, args.size)
    times: dict[str, list[float]] = {}
    for round_index in range(args.rounds):
        for concurrency in (1, 2):
            name = f"jobs, BATCH_CONCURRENCY={concurrency}"
            times.setdefault(name, []).append(job_seconds(paths, concurrency, work / f"data-{round_index}-{concurrency}"))
            log(f"{name}: {times[name][-1]:.2f} s")
        for concurrency in (1, 2):
            name = f"CLI, BATCH_CONCURRENCY={concurrency}"
            times.setdefault(name, []).append(
                cli_seconds(work / "photos", concurrency, work / f"out-{round_index}-{concurrency}")
            )
            log(f"{name}: {times[name][-1]:.2f} s")
    from bgremove.core.engines import cpu_flags

    flags = [name for name, present in cpu_flags().items() if present]
    print(f"\nCPU flags: {' '.join(flags)}; load average {os.getloadavg()[0]:.1f}; {args.photos} photos at {args.size} px")
    print("| run | median s | one-at-a-time / this |\n|---|---|---|")
    for door in ("jobs", "CLI"):
        alone = statistics.median(times[f"{door}, BATCH_CONCURRENCY=1"])
        for concurrency in (1, 2):
            seconds = statistics.median(times[f"{door}, BATCH_CONCURRENCY={concurrency}"])
            print(f"| {door}, BATCH_CONCURRENCY={concurrency} | {seconds:.2f} | {alone / seconds:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
