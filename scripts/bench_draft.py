"""What decoding a big JPEG at reduced size (`pipeline.decode_floor`) saves: the same requests with and without it.

    python scripts/bench_draft.py              # 4 interleaved rounds (about 2 minutes on 2 cores)
    python scripts/bench_draft.py --rounds 2   # a quicker look

The photo and the runner are scripts/bench_stages.py's (scikit-image's astronaut upscaled to 4000x3000, JPEG q95,
the real isnet-general-use on one loaded session). `full decode` runs the pipeline with the draft turned off (the
previous behaviour), `draft` as it ships; both at size=preview (remove.bg's default) and size=hd, interleaved
(A B C D, B C D A, ...) so drift on a shared machine hits both alike. The prediction cache is off, so every run
includes its forward pass (a draft also makes the model's own resize cheaper). Printed: median stages and totals,
and draft / full decode for the total and for the total without the model stage (`rest`), as medians of the
per-round ratios, and the same from each path's fastest run (interference from other processes only adds time).
At 4000x3000 size=hd asks for 2309x1732, which no DCT scale covers: both paths decode at full size, so its ratio
shows the noise of the run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bgremove.core import pipeline  # noqa: E402
from bgremove.core.sessions import SessionCache  # noqa: E402
from bgremove.core.settings import load_settings  # noqa: E402
from scripts.bench_stages import PHOTO_SIZE, STAGES, Config, Runner, jpeg_of, load_average, log  # noqa: E402

SIZES = ("preview", "hd")


def measure(rounds: int) -> dict[str, Any]:
    """Each (size, decode) pair once per round, interleaved; per pair the stage samples and totals."""
    from skimage import data

    settings = load_settings({"PREDICTION_CACHE_MB": "0"})  # every run pays its forward pass
    photo = jpeg_of(data.astronaut(), PHOTO_SIZE)  # type: ignore[no-untyped-call]
    runner = Runner(settings, SessionCache(settings), photo, photo)
    pairs = [(size, draft) for size in SIZES for draft in (False, True)]
    runs: dict[tuple[str, bool], list[tuple[dict[str, float], float]]] = {pair: [] for pair in pairs}
    shipped = pipeline.decode_floor

    def once(size: str, draft: bool) -> tuple[dict[str, float], float]:
        pipeline.decode_floor = shipped if draft else (lambda *_: None)  # type: ignore[assignment]
        try:
            stages, total, _ = runner.run(Config(f"{size} {draft}", {"size": size}))
        finally:
            pipeline.decode_floor = shipped
        return stages, total

    load_before = load_average()
    for pair in pairs:  # warm-up: model load, first-inference compilation
        once(*pair)
    for index in range(rounds):
        shift = index % len(pairs)
        for pair in pairs[shift:] + pairs[:shift]:
            runs[pair].append(once(*pair))
        log(f"draft: round {index + 1}/{rounds} done")
    return {"rounds": rounds, "engine": runner.engine, "load": (load_before, load_average()), "runs": runs}


def render(report: dict[str, Any]) -> str:
    runs = report["runs"]
    lines = [
        f"astronaut {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG q95, isnet-general-use on {report['engine']}, "
        f"{report['rounds']} interleaved rounds, load average {report['load'][0]} / {report['load'][1]}; medians (s)",
        "",
        "| size | path | " + " | ".join(STAGES) + " | total | rest (total - mask) | fastest total | fastest rest |",
        "|---|---|" + "---:|" * (len(STAGES) + 4),
    ]
    for (size, draft), samples in runs.items():
        cells = " | ".join(f"{statistics.median(st.get(s, 0.0) for st, _ in samples):.3f}" for s in STAGES)
        total = statistics.median(t for _, t in samples)
        rest = statistics.median(t - st["mask"] for st, t in samples)
        fastest = (min(t for _, t in samples), min(t - st["mask"] for st, t in samples))
        lines.append(
            f"| {size} | {'draft' if draft else 'full decode'} | {cells} | {total:.3f} | {rest:.3f} | "
            f"{fastest[0]:.3f} | {fastest[1]:.3f} |"
        )
    lines.append("")
    for size in SIZES:
        full, draft = runs[(size, False)], runs[(size, True)]
        total = statistics.median(d[1] / f[1] for f, d in zip(full, draft, strict=True))
        rest = statistics.median((d[1] - d[0]["mask"]) / (f[1] - f[0]["mask"]) for f, d in zip(full, draft, strict=True))
        fastest = [min(t for _, t in samples) for samples in (draft, full)]
        fastest_rest = [min(t - st["mask"] for st, t in samples) for samples in (draft, full)]
        lines.append(
            f"size={size}: draft / full decode, total {total:.3f}, rest {rest:.3f} (medians of per-round ratios); "
            f"fastest runs: total {fastest[0] / fastest[1]:.3f}, rest {fastest_rest[0] / fastest_rest[1]:.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (each runs every pair once)")
    args = parser.parse_args(argv)
    print(render(measure(args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
