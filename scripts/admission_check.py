"""The admission figure: 6 requests sent at once, 3 to /api/remove and 3 to /v1.0/removebg, against `python app.py`
on 127.0.0.1 with MAX_CONCURRENT_INFERENCES=1 and MAX_QUEUE_SIZE=1 (2 in flight, as documented). Prints how many
were admitted (served) and how many refused, per door, with each answer's status and time.

    python scripts/admission_check.py [--side 3000x2000] [--model isnet-general-use]

Bounded: 6 requests, each with a 300 s timeout; the server is stopped at the end. Loopback only.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.server import start_server, stop_server

DOORS = {
    "/api/remove": "file",
    "/v1.0/removebg": "image_file",
}


def photo(width: int, height: int) -> bytes:
    """A noisy dark frame with a bright block: a subject for any model, and no easy compression."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    pixels[height // 4 : 3 * height // 4, width // 3 : 2 * width // 3] = 220
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", default="3000x2000", help="photo size WxH (default 3000x2000, as in the issue)")
    parser.add_argument("--model", default="", help="REMBG_MODEL_NAME for the server (default: its own default)")
    args = parser.parse_args()
    width, height = (int(part) for part in args.side.lower().split("x"))
    data = photo(width, height)
    env = {"MAX_CONCURRENT_INFERENCES": "1", "MAX_QUEUE_SIZE": "1", "LOG_LEVEL": "WARNING"}
    if args.model:
        env["REMBG_MODEL_NAME"] = args.model
    with tempfile.TemporaryDirectory(prefix="admission-check-") as workdir:
        server = start_server(Path(workdir), **env)
        try:
            results: list[tuple[str, int, float, str]] = []
            lock = threading.Lock()
            start = threading.Barrier(6)

            def send(path: str, field: str) -> None:
                with httpx.Client(base_url=server.url, timeout=300) as client:
                    start.wait()
                    began = time.perf_counter()
                    answer = client.post(path, files={field: ("photo.jpg", data, "image/jpeg")})
                    seconds = time.perf_counter() - began
                    note = answer.headers.get("retry-after", "")
                with lock:
                    results.append((path, answer.status_code, seconds, note))

            threads = [threading.Thread(target=send, args=item) for item in list(DOORS.items()) * 3]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            stop_server(server)
    print(f"6 requests at once ({width}x{height} JPEG), MAX_CONCURRENT_INFERENCES=1 MAX_QUEUE_SIZE=1:")
    for path, status, seconds, retry in sorted(results, key=lambda item: item[2]):
        print(f"  {path:16} {status}  {seconds:6.2f} s" + (f"  Retry-After: {retry}" if retry else ""))
    admitted = sum(status == 200 for _, status, _, _ in results)
    print(f"admitted {admitted} of 6, refused {6 - admitted} (limit: 2 in flight across every door)")
    return 0 if admitted == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
