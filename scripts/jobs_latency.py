"""Interactive latency while batch jobs run: /api/remove idle, then with jobs draining, on loopback.

    python scripts/jobs_latency.py                         # starts `python app.py` (default model), DATA_DIR in a temp dir
    python scripts/jobs_latency.py --url http://127.0.0.1:7860 --requests 10 --jobs 2 --files 20

Issue 16 asks that interactive latency stays within 2x of idle while jobs run (interactive first). The script
sends the same photos to /api/remove one at a time on an idle server, then while JOBS jobs of FILES photos
each are running, then idle again (the two idle phases are pooled: other load on a shared machine drifts), and
prints the median and p90 of idle and busy, their ratio, and how many job files were processed meanwhile
(jobs must progress, not just wait). Bounded: REQUESTS requests per phase, a
wall-clock limit, loopback servers only. Exit status 1 when the median ratio is above --max-ratio.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def photos(count: int, size: tuple[int, int]) -> list[bytes]:
    """Photos from skimage's sample set (astronaut, coffee, chelsea, ...), resized and JPEG-encoded."""
    from skimage import data

    samples = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    encoded = []
    for index in range(count):
        image = Image.fromarray(np.asarray(samples[index % len(samples)])).convert("RGB").resize(size)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


def timed_removals(client: httpx.Client, images: list[bytes], deadline: float) -> list[float]:
    """Seconds per /api/remove, sequentially (one interactive user)."""
    seconds = []
    for index, image in enumerate(images):
        if time.monotonic() > deadline:
            break
        started = time.perf_counter()
        response = client.post("/api/remove", files={"file": (f"p{index}.jpg", image, "image/jpeg")})
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"/api/remove answered {response.status_code}: {response.text[:300]}")
        seconds.append(elapsed)
    return seconds


def summary(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def measure(url: str, args: argparse.Namespace) -> float:
    deadline = time.monotonic() + args.seconds
    interactive = photos(args.requests, (args.width, args.height))
    batch = photos(args.files, (args.width, args.height))
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
        if client.get("/api/jobs").status_code == 404:
            raise SystemExit(f"{url} has no /api/jobs: this server was built without the jobs router.")
        timed_removals(client, interactive[:2], deadline)  # warm-up: model loaded, caches hot
        idle = timed_removals(client, interactive, deadline)

        job_ids = []
        for number in range(args.jobs):
            files = [("files", (f"job{number}-{index}.jpg", image, "image/jpeg")) for index, image in enumerate(batch)]
            answer = client.post("/api/jobs", files=files)
            if answer.status_code != 202:
                raise SystemExit(f"POST /api/jobs answered {answer.status_code}: {answer.text[:300]}")
            job_ids.append(answer.json()["id"])
        while all(client.get(f"/api/jobs/{job_id}").json()["status"] == "queued" for job_id in job_ids):
            time.sleep(0.05)
        before = sum(client.get(f"/api/jobs/{job_id}").json()["done"] for job_id in job_ids)
        started = time.monotonic()
        busy = timed_removals(client, interactive, deadline)
        statuses = [client.get(f"/api/jobs/{job_id}").json() for job_id in job_ids]
        after = sum(status["done"] for status in statuses)
        window = time.monotonic() - started
        still_running = any(status["status"] in ("queued", "running") for status in statuses)
        for job_id in job_ids:  # cancel (the running item finishes), then measure idle once more, then delete
            client.delete(f"/api/jobs/{job_id}")
        while any(client.get(f"/api/jobs/{job_id}").json()["status"] == "running" for job_id in job_ids):
            time.sleep(0.1)
        idle_after = timed_removals(client, interactive, deadline)
        for job_id in job_ids:
            client.delete(f"/api/jobs/{job_id}")

    if not idle or not busy or not idle_after:
        raise SystemExit("the time limit was reached before all three phases ran; raise --seconds")
    # Idle is measured before and after the busy phase: on a shared machine, other load drifts in between.
    idle = idle + idle_after
    idle_median, idle_p90 = summary(idle)
    busy_median, busy_p90 = summary(busy)
    ratio = busy_median / idle_median
    print(f"idle:      {len(idle)} requests (half before, half after the jobs), median {idle_median:.3f} s, p90 {idle_p90:.3f} s")
    print(
        f"jobs busy: {len(busy)} requests, median {busy_median:.3f} s, p90 {busy_p90:.3f} s "
        f"({after - before} job files done in those {window:.1f} s; jobs still running at the end: {still_running})"
    )
    print(f"ratio (median busy / median idle): {ratio:.2f}; p90 ratio {busy_p90 / idle_p90:.2f}")
    if not still_running:
        print("note: the jobs ended before the busy phase did; raise --files for a longer overlap")
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server on loopback (default: start `python app.py`)")
    parser.add_argument("--api-key", help="one of the server's API_KEYS, if set")
    parser.add_argument("--requests", type=int, default=10, help="interactive requests per phase (default 10, max 100)")
    parser.add_argument("--jobs", type=int, default=2, help="jobs submitted for the busy phase (default 2, max 10)")
    parser.add_argument("--files", type=int, default=20, help="photos per job (default 20, max 100)")
    parser.add_argument("--width", type=int, default=800)
    parser.add_argument("--height", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=600, help="wall-clock limit (default 600)")
    parser.add_argument("--max-ratio", type=float, default=2.0, help="exit 1 above this median ratio (default 2)")
    args = parser.parse_args(argv)
    args.requests, args.jobs, args.files = min(args.requests, 100), min(args.jobs, 10), min(args.files, 100)

    if args.url:
        if urlsplit(args.url).hostname not in LOOPBACK:
            raise SystemExit("loopback servers only (127.0.0.1, localhost, ::1)")
        ratio = measure(args.url.rstrip("/"), args)
    else:
        sys.path.insert(0, str(ROOT))
        from scripts.server import start_server, stop_server

        with tempfile.TemporaryDirectory(prefix="bgremove-jobs-latency-") as workdir:
            server = start_server(Path(workdir), DATA_DIR=str(Path(workdir) / "data"))
            try:
                ratio = measure(server.url, args)
            finally:
                stop_server(server)
    return 0 if ratio <= args.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
