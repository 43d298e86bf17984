"""The server's resident memory per inference engine: start `python app.py`, send N removals of different photos,
print the server's RSS after warm-up and after the requests.

    python scripts/server_memory.py --engine onnxruntime --engine openvino --requests 10
    python scripts/server_memory.py --engine auto --precision int8 --precision bf16 --precision f32

Each --engine runs at each --precision (INFERENCE_PRECISION, default auto).

Uses the real default model (REMBG_MODEL_NAME); each engine gets a server of its own, one after the other.
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.loadtest import rss_mib
from scripts.server import start_server, stop_server


def photos(count: int) -> list[bytes]:
    """scikit-image's astronaut upscaled to 1600x1600 JPEG (a typical phone-photo workload, no download), a
    different crop each time, so no request is answered from the prediction cache: every one runs the model."""
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.astronaut()).resize((1700, 1700), Image.Resampling.LANCZOS)
    result = []
    for index in range(count):
        out = io.BytesIO()
        image.crop((index * 10, index * 5, index * 10 + 1600, index * 5 + 1600)).save(out, "JPEG", quality=90)
        result.append(out.getvalue())
    return result


def cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    return " ".join(sorted(flags & {"avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile"})) or "none of bf16/vnni/amx"


def measure(engine: str, precision: str, payloads: list[bytes]) -> tuple[float, float, str]:
    with tempfile.TemporaryDirectory(prefix="bgremove-mem-") as tmp:
        server = start_server(
            Path(tmp), INFERENCE_ENGINE=engine, INFERENCE_PRECISION=precision, QUANTIZE_ON_LOAD="false", LOG_LEVEL="warning"
        )
        try:
            provider = httpx.get(f"{server.url}/api/health", timeout=10).json()["provider"]
            ready = rss_mib(server.process.pid)
            for payload in payloads:
                answer = httpx.post(f"{server.url}/api/remove", files={"file": ("photo.jpg", payload)}, timeout=300)
                answer.raise_for_status()
            return ready, rss_mib(server.process.pid), str(provider)
        finally:
            stop_server(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", action="append", choices=("onnxruntime", "openvino", "auto"))
    parser.add_argument("--precision", action="append", choices=("auto", "int8", "bf16", "f32"))
    parser.add_argument("--requests", type=int, default=10)
    args = parser.parse_args()
    payloads = photos(args.requests)
    print(f"CPU: {platform.processor() or platform.machine()}, flags: {cpu_flags()}")
    print(f"{'engine':12} {'precision':10} {'provider':28} {'RSS ready':>10} {'RSS after':>10}")
    for engine in args.engine or ["onnxruntime", "openvino"]:
        for precision in args.precision or ["auto"]:
            ready, after, provider = measure(engine, precision, payloads)
            print(
                f"{engine:12} {precision:10} {provider:28} {ready:>6.0f} MiB {after:>6.0f} MiB  (after {args.requests} requests)"
            )


if __name__ == "__main__":
    main()
