"""Precision benchmark: what each inference precision costs and gives on the CPU at hand, in one interleaved run.

    python scripts/bench.py --precisions                 # the whole report (about 10 minutes on 2 busy cores)
    python scripts/bench_precision.py --rounds 1 --quality 4 --batch 0     # a quick look (about 4 minutes)

1. the CPU's flags (AVX2, AVX-512 VNNI, AVX-VNNI, AVX-512 BF16, AMX) and what OpenVINO reports;
2. one forward pass of isnet-general-use per precision: f32 on onnxruntime (rembg's engine and our f32 path),
   f32 and bf16 (where the CPU has it) on OpenVINO, and our int8 build; photo by photo, engines interleaved; and
   the OpenVINO ones again with oneDNN held to the kinds of CPU this one stands in for (ONEDNN_MAX_CPU_ISA:
   AVX512_CORE_VNNI = AVX-512 and VNNI without bf16, like Ice Lake or Cascade Lake; AVX2 = like Zen 2/3 or Intel
   before Skylake-SP), each kind in its own process, kinds interleaved round by round;
3. our CLI at its defaults on each kind of CPU, and at each precision, against `rembg p`, same photos, same model
   file, interleaved rounds (onnxruntime, so rembg, cannot be held back: it keeps this CPU's AVX-512, so the
   capped ratios understate ours);
4. quality of each precision on the project's own set (scripts/make_quality_set.py, known alpha): alpha MAE
   (x1000), IoU at alpha > 0.5, composite error in the edge band, and the mean alpha difference to f32;
5. peak RSS of our CLI over a batch of small photos (--batch N), at the defaults and at today's float precision.
Ratios are printed; nothing is asserted (the targets are the issue's, checked by reading the table).
"""

from __future__ import annotations

import argparse
import json
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
from bgremove.core.engines import ISA_CAP_VARIABLE as ISA_CAP  # noqa: E402
from scripts.bench import MODEL, ensure_rembg_venv, log, make_photos, timed_process  # noqa: E402

QUALITY_SET = Path(tempfile.gettempdir()) / "bgremove-quality"


def sessions() -> dict[str, Any]:
    """Every engine x precision this machine (or the kind of CPU an ISA cap stands in for) can run on the default
    model, int8 from its cached build."""
    from bgremove.core import int8
    from bgremove.core.engines import CPU, OpenVinoFirstOutput, OrtFirstOutput, cpu_has_bf16, isa_cap
    from bgremove.core.settings import load_settings
    from bgremove.core.store import file_sha256, model_file

    path = model_file(MODEL, load_settings({}))
    found: dict[str, Any] = {}
    if isa_cap() is None:  # onnxruntime ignores the cap: measured in the uncapped process only
        found["f32 onnxruntime"] = OrtFirstOutput(path, (CPU,))
    found["f32 OpenVINO"] = OpenVinoFirstOutput(path, "f32", None)
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


# The kinds of CPU this one can stand in for: oneDNN (so OpenVINO) held to an older instruction set.
CPU_KINDS = {
    "this CPU": {},
    "VNNI, no bf16": {ISA_CAP: "AVX512_CORE_VNNI"},
    "AVX2 only": {ISA_CAP: "AVX2"},
}


def capped_forward_times(photos: list[Path], rounds: int) -> dict[str, float]:
    """Forward passes of the OpenVINO precisions under each ISA cap (the cap is read once per process, so each
    kind runs in a child process), kinds interleaved round by round; the uncapped process runs every engine."""
    found: dict[str, list[float]] = {}
    for _ in range(rounds):
        for kind, env in CPU_KINDS.items():
            command = [sys.executable, __file__, "--forward-child", *map(str, photos)]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, check=True)
            for name, seconds in json.loads(done.stdout.strip().splitlines()[-1]).items():
                found.setdefault(name if kind == "this CPU" else f"{name}, {kind}", []).append(seconds)
            log(f"forward passes, {kind}: done")
    return {name: statistics.median(values) for name, values in found.items()}


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


def cli_variants(has_bf16: bool) -> dict[str, dict[str, str]]:
    """Our CLI runs: the defaults on each kind of CPU (what `auto` picks there), then each precision here."""
    variants = {f"ours defaults, {kind}": env for kind, env in CPU_KINDS.items()}
    variants["ours f32"] = {"INFERENCE_PRECISION": "f32"}
    if has_bf16:
        variants["ours bf16"] = {"INFERENCE_PRECISION": "bf16"}
    return variants


def cli_runs(
    photos_dir: Path, work: Path, rounds: int, variants: dict[str, dict[str, str]], rembg: Path
) -> dict[str, list[float]]:
    """Wall seconds of whole CLI processes, round by round, ours per variant and `rembg p`, interleaved."""
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
    return walls


def batch_memory(work: Path, count: int, variants: dict[str, dict[str, str]]) -> dict[str, tuple[float, float]]:
    """(wall seconds, peak RSS MiB) of our CLI over `count` distinct small photos, per variant."""
    folder = work / "many"
    sources = make_photos(work / "sources", 320)
    folder.mkdir()
    for number in range(count):  # distinct bytes: the prediction cache cannot answer any of them
        with Image.open(sources[number % len(sources)]) as image:
            image.rotate(number * 360 / count).save(folder / f"p{number:03d}.jpg", quality=90)
    found = {}
    for number, (name, env) in enumerate(variants.items()):
        found[name] = timed_process(
            [sys.executable, "-m", "bgremove", "remove", str(folder), "-o", str(work / f"many-{number}")],
            {"QUANTIZE_ON_LOAD": "false", **env},
        )
        log(f"{count}-photo batch, {name}: {found[name][0]:.1f} s, peak RSS {found[name][1]:.0f} MiB")
    return found


def memory_variants(has_bf16: bool) -> dict[str, dict[str, str]]:
    """The defaults against what each kind of CPU ran before int8: bf16 here, onnxruntime f32 without bf16."""
    variants = {"defaults, this CPU": {}}
    if has_bf16:
        variants["bf16 (the defaults before int8), this CPU"] = {"INFERENCE_PRECISION": "bf16"}
    variants["defaults, AVX2 only"] = CPU_KINDS["AVX2 only"]
    variants["onnxruntime f32 (the defaults before int8 without bf16)"] = {"INFERENCE_PRECISION": "f32"}
    return variants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of forward passes and CLI runs")
    parser.add_argument("--quality", type=int, default=8, help="images of the quality set to score (0: skip)")
    parser.add_argument("--batch", type=int, default=100, help="photos in the peak-memory batch (0: skip)")
    parser.add_argument("--photos", type=int, default=8, help="photos for the forward passes and CLI runs (at most 8)")
    parser.add_argument("--forward-child", nargs="+", type=Path, help=argparse.SUPPRESS)  # one capped process's passes
    args = parser.parse_args(argv)
    if args.forward_child:
        print(json.dumps(forward_times(sessions(), args.forward_child, 1)))
        return 0
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
    log("forward passes")
    forward = capped_forward_times(photos, args.rounds)
    if args.quality:
        engines = sessions()
        scores = quality(engines, args.quality)
        del engines  # the CLI runs below get the cores and the memory
    else:
        scores = {}
    from bgremove.core.engines import cpu_has_bf16

    log("CLI runs")
    walls = cli_runs(work / "photos", work, args.rounds, cli_variants(cpu_has_bf16()), rembg)
    memory = batch_memory(work, args.batch, memory_variants(cpu_has_bf16())) if args.batch else {}

    cpu = " ".join(name for name, present in flags.items() if present) or "none of them"
    print(f"\nCPU: {os.cpu_count()} logical CPUs; flags present: {cpu}; load average {os.getloadavg()[0]:.1f}\n")
    base = forward["f32 onnxruntime"]
    print("| forward pass, isnet 1024x1024 | median s | speed-up vs f32 onnxruntime |\n|---|---|---|")
    for name, seconds in forward.items():
        print(f"| {name} | {seconds:.3f} | {base / seconds:.2f}x |")
    # Per round too: the `rembg p` run beside each of ours, so a drift of the machine shows as a spread, not a bias.
    rembg_runs = walls["rembg p"]
    print(f"\n| CLI, {len(photos)} photos, whole process | median s | rembg p / ours | round by round |\n|---|---|---|---|")
    for name, runs in walls.items():
        rounds = ", ".join(f"{theirs / ours:.2f}" for theirs, ours in zip(rembg_runs, runs, strict=True))
        median = statistics.median(runs)
        print(f"| {name} | {median:.2f} | {statistics.median(rembg_runs) / median:.2f}x | {rounds} |")
    if scores:
        print(f"\n| quality set, {args.quality} images | MAE x1000 | IoU | comp | mean diff to f32 |\n|---|---|---|---|---|")
        for name, row in scores.items():
            print(
                f"| {name} | {row['MAE']:.2f} | {row['IoU']:.4f} | {row.get('comp', float('nan')):.2f} | {row['diff_f32']:.4f} |"
            )
    if memory:
        print(f"\n| {args.batch}-photo batch (320x320), CLI | wall s | peak RSS MiB |\n|---|---|---|")
        for name, (wall, rss) in memory.items():
            print(f"| {name} | {wall:.1f} | {rss:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
