"""Precision benchmark: what each inference precision costs and gives on the CPU at hand, in one interleaved run.

    python scripts/bench.py --precisions                 # the whole report (about 10 minutes on 2 busy cores)
    python scripts/bench_precision.py --rounds 1 --quality 4 --batch 0     # a quick look (about 4 minutes)

1. the CPU's flags (AVX2, AVX-512 VNNI, AVX-VNNI, AVX-512 BF16, AMX) and what OpenVINO reports;
2. one forward pass of isnet-general-use per precision: f32 on onnxruntime (rembg's engine and our f32 path),
   f32 and bf16 (where the CPU has it) on OpenVINO, and our int8 build; photo by photo, engines interleaved;
3. our CLI at its defaults, at each precision and at int8 with OpenVINO held to AVX2 (ONEDNN_MAX_CPU_ISA: what
   a CPU without VNNI or bf16 gets) against `rembg p`, same photos, same model file, interleaved rounds;
4. quality of each precision on the project's own set (scripts/make_quality_set.py, known alpha): alpha MAE
   (x1000), IoU at alpha > 0.5, composite error in the edge band, and the mean alpha difference to f32;
5. peak RSS of our CLI over a batch of small photos (--batch N), at the defaults and at today's float precision.
Ratios are printed; nothing is asserted (the targets are the issue's, checked by reading the table).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.bench import MODEL, ensure_rembg_venv, log, make_photos, timed_process  # noqa: E402

QUALITY_SET = Path(tempfile.gettempdir()) / "bgremove-quality"


def sessions() -> dict[str, Any]:
    """Every engine x precision this machine can run on the default model, int8 from its cached build."""
    from bgremove.core import int8
    from bgremove.core.engines import CPU, OpenVinoFirstOutput, OrtFirstOutput, cpu_has_bf16
    from bgremove.core.settings import load_settings
    from bgremove.core.store import file_sha256, model_file

    path = model_file(MODEL, load_settings({}))
    found: dict[str, Any] = {
        "f32 onnxruntime": OrtFirstOutput(path, (CPU,)),
        "f32 OpenVINO": OpenVinoFirstOutput(path, "f32", None),
    }
    if cpu_has_bf16():
        found["bf16 OpenVINO"] = OpenVinoFirstOutput(path, "bf16", None)
    verdict = int8.read_verdict(path, file_sha256(path))
    if verdict is None:
        log("no int8 build for this model and engine version: run `python -m bgremove models pull` first")
    else:
        found["int8 OpenVINO"] = OpenVinoFirstOutput(int8.artifact_dir(path, verdict.sha256) / "model.xml", "int8", None)
        log(f"int8 build: {verdict.reason}; build-time forward seconds {verdict.seconds}")
    return found


def forward_times(engines: dict[str, Any], photos: list[Path], rounds: int) -> dict[str, float]:
    from bgremove.core.engines import image_tensor
    from bgremove.core.registry import CATALOG

    family = CATALOG[MODEL].family
    tensors = [image_tensor(Image.open(p), family.side, family.mean, family.std) for p in photos]
    for session in engines.values():
        session.run(tensors[0])  # first pass allocates
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for tensor in tensors:
            for name, session in engines.items():
                started = time.perf_counter()
                session.run(tensor)
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def quality(engines: dict[str, Any], limit: int) -> dict[str, dict[str, float]]:
    """Scores per precision on the quality set, through the pipeline's own alpha (full resolution, refined)."""
    from bgremove.core import edges
    from bgremove.core.engines import image_tensor
    from bgremove.core.registry import CATALOG, min_max
    from scripts.quality import load_set, score

    if not (QUALITY_SET / "image").is_dir():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_quality_set.py"), "--out", str(QUALITY_SET)], check=True)
    family = CATALOG[MODEL].family
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in engines}
    for stem, rgb, true, fg in load_set(QUALITY_SET, limit):
        log(f"quality: {stem}")
        tensor = image_tensor(Image.fromarray(rgb), family.side, family.mean, family.std)
        alphas = {}
        for name, session in engines.items():
            mask = min_max(family.raw(session.run(tensor)))
            alphas[name] = edges.full_resolution_alpha(mask, rgb)
            rows[name].append(score(alphas[name], edges.estimate_foreground(rgb, alphas[name]), true, fg))
        for name in engines:
            rows[name][-1]["diff_f32"] = float(np.abs(alphas[name] - alphas["f32 onnxruntime"]).mean())
    return {name: {key: statistics.fmean(r[key] for r in scores) for key in scores[0]} for name, scores in rows.items()}


AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2"}  # OpenVINO's oneDNN kernels as on a CPU without AVX-512, VNNI or bf16


def cli_variants(has_bf16: bool) -> dict[str, dict[str, str]]:
    """Our CLI runs: the defaults, each precision, and int8 with OpenVINO held to AVX2 (a CPU like Zen 3:
    no VNNI, no bf16; onnxruntime cannot be held back the same way, so rembg keeps its AVX-512 here)."""
    variants = {"ours defaults (auto)": {}, "ours f32": {"INFERENCE_PRECISION": "f32"}}
    if has_bf16:
        variants["ours bf16"] = {"INFERENCE_PRECISION": "bf16"}
    variants["ours int8, AVX2 only"] = {"INFERENCE_PRECISION": "int8", **AVX2_ONLY}
    return variants


def cli_runs(photos_dir: Path, work: Path, rounds: int, variants: dict[str, dict[str, str]], rembg: Path) -> dict[str, float]:
    """Wall seconds (median) of whole CLI processes, ours per variant and `rembg p`, interleaved."""
    walls: dict[str, list[float]] = {name: [] for name in variants}
    walls["rembg p"] = []
    for index in range(rounds):
        for number, (name, env) in enumerate(variants.items()):
            out = work / f"ours-{number}-{index}"
            command = [sys.executable, "-m", "bgremove", "remove", str(photos_dir), "-o", str(out)]
            wall, _ = timed_process(command, {"QUANTIZE_ON_LOAD": "false", **env})
            walls[name].append(wall)
            log(f"{name}: {wall:.2f} s")
        wall, _ = timed_process([str(rembg), "p", "-m", MODEL, str(photos_dir), str(work / f"rembg-{index}")])
        walls["rembg p"].append(wall)
        log(f"rembg p: {wall:.2f} s")
    return {name: statistics.median(values) for name, values in walls.items()}


def batch_memory(work: Path, count: int, precisions: list[str]) -> dict[str, tuple[float, float]]:
    """(wall seconds, peak RSS MiB) of our CLI over `count` small photos, per precision."""
    folder = work / "many"
    sources = make_photos(work / "sources", 320)
    folder.mkdir()
    for number in range(count):
        shutil.copy(sources[number % len(sources)], folder / f"p{number:03d}.jpg")
    found = {}
    for precision in precisions:
        found[precision] = timed_process(
            [sys.executable, "-m", "bgremove", "remove", str(folder), "-o", str(work / f"many-{precision}")],
            {"INFERENCE_PRECISION": precision, "QUANTIZE_ON_LOAD": "false"},
        )
        log(f"{count}-photo batch at {precision}: {found[precision][0]:.1f} s, peak RSS {found[precision][1]:.0f} MiB")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of forward passes and CLI runs")
    parser.add_argument("--quality", type=int, default=8, help="images of the quality set to score (0: skip)")
    parser.add_argument("--batch", type=int, default=100, help="photos in the peak-memory batch (0: skip)")
    parser.add_argument("--photos", type=int, default=8, help="photos for the forward passes and CLI runs (at most 8)")
    args = parser.parse_args(argv)
    from bgremove.core.engines import cpu_flags

    subprocess.run([sys.executable, "-m", "bgremove", "models", "pull", MODEL], check=True, cwd=ROOT)
    flags = cpu_flags()
    work = Path(tempfile.mkdtemp(prefix="bgremove-precision-"))
    photos = make_photos(work / "photos", None)
    for extra in photos[args.photos :]:
        extra.unlink()
    photos = photos[: args.photos]
    rembg_path = shutil.which("rembg")
    rembg = Path(rembg_path) if rembg_path else ensure_rembg_venv()
    engines = sessions()
    log("forward passes")
    forward = forward_times(engines, photos, args.rounds)
    scores = quality(engines, args.quality) if args.quality else {}
    del engines  # the CLI runs below get the cores and the memory
    from bgremove.core.engines import cpu_has_bf16

    log("CLI runs")
    walls = cli_runs(work / "photos", work, args.rounds, cli_variants(cpu_has_bf16()), rembg)
    memory = batch_memory(work, args.batch, ["auto", "bf16" if cpu_has_bf16() else "f32"]) if args.batch else {}

    cpu = " ".join(name for name, present in flags.items() if present) or "none of them"
    print(f"\nCPU: {os.cpu_count()} logical CPUs; flags present: {cpu}; load average {os.getloadavg()[0]:.1f}\n")
    base = forward["f32 onnxruntime"]
    print("| forward pass, isnet 1024x1024 | median s | speed-up vs f32 onnxruntime |\n|---|---|---|")
    for name, seconds in forward.items():
        print(f"| {name} | {seconds:.3f} | {base / seconds:.2f}x |")
    rembg_wall = walls["rembg p"]
    print(f"\n| CLI, {len(photos)} photos, whole process | median s | rembg p / ours |\n|---|---|---|")
    for name, seconds in walls.items():
        print(f"| {name} | {seconds:.2f} | {rembg_wall / seconds:.2f}x |")
    if scores:
        print(f"\n| quality set, {args.quality} images | MAE x1000 | IoU | comp | mean diff to f32 |\n|---|---|---|---|---|")
        for name, row in scores.items():
            print(
                f"| {name} | {row['MAE']:.2f} | {row['IoU']:.4f} | {row.get('comp', float('nan')):.2f} | {row['diff_f32']:.4f} |"
            )
    if memory:
        print(f"\n| {args.batch}-photo batch (320x320), CLI | wall s | peak RSS MiB |\n|---|---|---|")
        for precision, (wall, rss) in memory.items():
            print(f"| INFERENCE_PRECISION={precision} | {wall:.1f} | {rss:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
