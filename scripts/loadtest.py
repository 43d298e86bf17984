"""Bounded overload test on loopback: 16 clients for 60 s mixing single photos, small batches and invalid files.

    python scripts/loadtest.py                       # starts its own server (default model), 16 clients, 60 s
    python scripts/loadtest.py --url http://127.0.0.1:7860 --clients 8 --seconds 30

Expected: no unexpected error; every 200 is a valid PNG (or zip) of the input's size; beyond the configured
queue the server answers 503 with Retry-After instead of queueing without bound; memory stays bounded.
Stops by itself (duration and a request cap).
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Sample:
    kind: str
    status: int | str
    seconds: float
    problem: str = ""


def _jpeg(size: tuple[int, int], seed: int) -> bytes:
    rng = np.random.RandomState(seed)
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[size[1] // 4 : 3 * size[1] // 4, size[0] // 4 : 3 * size[0] // 4] = 200
    pixels += rng.randint(0, 40, pixels.shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def workload(seed: int) -> list[tuple[str, dict[str, Any], tuple[int, int] | None]]:
    """(kind, httpx request kwargs, expected size) for single photos, small batches and invalid files."""
    rng = random.Random(seed)
    jobs: list[tuple[str, dict[str, Any], tuple[int, int] | None]] = []
    for index in range(12):
        size = rng.choice([(320, 240), (640, 480), (800, 600), (1024, 768)])
        jobs.append(("single", {"url": "/api/remove", "files": {"file": (f"p{index}.jpg", _jpeg(size, index))}}, size))
    for index in range(3):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for entry in range(3):
                archive.writestr(f"b{entry}.jpg", _jpeg((320, 240), 100 + entry))
            archive.writestr("notes.txt", b"not an image")
        jobs.append(("batch", {"url": "/api/remove/batch", "files": {"files": (f"batch{index}.zip", buffer.getvalue())}}, None))
    for index in range(3):
        jobs.append(("invalid", {"url": "/api/remove", "files": {"file": (f"bad{index}.png", rng.randbytes(2000))}}, None))
    return jobs


def check(kind: str, response: httpx.Response, size: tuple[int, int] | None) -> str:
    if response.status_code == 503:
        return "" if response.headers.get("retry-after") else "503 without Retry-After"
    if kind == "invalid":
        return "" if response.status_code == 400 and response.json().get("detail") else f"invalid file got {response.status_code}"
    if response.status_code != 200:
        return f"{kind} got {response.status_code}: {response.text[:200]}"
    if kind == "batch":
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            names = set(archive.namelist())
        return "" if names == {"b0.png", "b1.png", "b2.png", "manifest.json"} else f"batch zip holds {sorted(names)}"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    if image.format != "PNG" or image.mode != "RGBA" or image.size != size:
        return f"bad PNG: {image.format} {image.mode} {image.size} != {size}"
    return ""


def rss_mib(pid: int) -> float:
    total = 0
    for proc in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{proc}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def run(url: str, clients: int, seconds: float, max_requests: int, server_pid: int | None) -> dict[str, Any]:
    jobs = workload(1)
    samples: list[Sample] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    counter = {"sent": 0}
    peak = {"rss": rss_mib(server_pid) if server_pid else 0.0}
    start_rss = peak["rss"]

    def client(index: int) -> None:
        rng = random.Random(index)
        with httpx.Client(base_url=url, timeout=300) as http:
            while time.monotonic() < deadline:
                with lock:
                    if counter["sent"] >= max_requests:
                        return
                    counter["sent"] += 1
                kind, request, size = rng.choice(jobs)
                started = time.perf_counter()
                try:
                    response = http.post(**request)
                    problem = check(kind, response, size)
                    status: int | str = response.status_code
                except httpx.HTTPError as exc:
                    problem, status = f"{type(exc).__name__}: {exc}", "error"
                with lock:
                    samples.append(Sample(kind, status, time.perf_counter() - started, problem))
                if status == 503:  # a polite client backs off as Retry-After asks (capped at 2 s here)
                    time.sleep(min(2.0, float(response.headers.get("retry-after", "1"))))

    def watch_memory() -> None:
        while time.monotonic() < deadline + 5 and server_pid:
            peak["rss"] = max(peak["rss"], rss_mib(server_pid))
            time.sleep(0.5)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    watcher = threading.Thread(target=watch_memory, daemon=True)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    served = [s for s in samples if s.status == 200]
    latencies = [s.seconds for s in served] or [0.0]
    return {
        "requests": len(samples),
        "by_status": dict(Counter(str(s.status) for s in samples)),
        "by_kind": dict(Counter(s.kind for s in samples)),
        "unexpected": [f"{s.kind} {s.status}: {s.problem}" for s in samples if s.problem],
        "p50": float(np.percentile(latencies, 50)),
        "p95": float(np.percentile(latencies, 95)),
        "rss_start": start_rss,
        "rss_peak": peak["rss"],
        "health_after": httpx.get(f"{url}/api/health", timeout=30).status_code,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (default: start one on 127.0.0.1)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-requests", type=int, default=5000)
    args = parser.parse_args()
    server = None
    url, pid = args.url, None
    if url is None:
        sys.path.insert(0, str(ROOT))
        from scripts.server import start_server

        server = start_server(Path(tempfile.mkdtemp(prefix="bgremove-load-")))
        url, pid = server.url, server.process.pid
    try:
        report = run(url, args.clients, args.seconds, args.max_requests, pid)
    finally:
        if server is not None:
            from scripts.server import stop_server

            stop_server(server)
    print(f"\nload test: {args.clients} clients, {args.seconds:.0f} s on {url}")
    print(f"requests {report['requests']} {report['by_kind']}; status {report['by_status']}")
    print(f"served p50 {report['p50']:.2f} s, p95 {report['p95']:.2f} s")
    if pid:
        print(f"server RSS {report['rss_start']:.0f} MiB at start, peak {report['rss_peak']:.0f} MiB")
    print(f"unexpected: {len(report['unexpected'])}; health after: {report['health_after']}")
    for line in report["unexpected"][:20]:
        print("  " + line)
    return 0 if not report["unexpected"] and report["health_after"] == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
