"""The two int8 candidates for isnet-general-use, side by side: OpenVINO + NNCF and onnxruntime's static quantization.

    python scripts/int8_candidates.py              # both quantizations (~4 + ~4 minutes on 2 cores), then the comparison
    python scripts/int8_candidates.py --compare    # the comparison only, on builds made before (in --out)

Both quantize on the same calibration photos (bgremove.core.calibration) and are judged on the same validation
composites as the build's gate: median forward pass per engine (interleaved image by image), mean alpha
difference to f32 and IoU against the true alpha. onnxruntime's QDQ model is also timed on OpenVINO, which
reads it. What we measured (and why bgremove.core.int8 uses NNCF) is in that module's docstring.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bgremove.core.calibration import calibration_images, validation_set  # noqa: E402
from bgremove.core.engines import CPU, OpenVinoFirstOutput, OrtFirstOutput, image_tensor  # noqa: E402
from bgremove.core.registry import CATALOG, min_max  # noqa: E402
from bgremove.core.settings import load_settings  # noqa: E402
from bgremove.core.store import model_file  # noqa: E402

MODEL = "isnet-general-use"
FAMILY = CATALOG[MODEL].family


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def tensors(count: int) -> list[Any]:
    return [image_tensor(image, FAMILY.side, FAMILY.mean, FAMILY.std) for image in calibration_images(count)]


def quantize_nncf(source: Path, out: Path, count: int) -> float:
    import nncf
    import openvino as ov

    started = time.perf_counter()
    model = ov.Core().read_model(str(source))
    model = ov.Model(model.get_results()[:1], model.get_parameters(), "first-output")
    quantized = nncf.quantize(
        model, nncf.Dataset(tensors(count)), preset=nncf.QuantizationPreset.MIXED, fast_bias_correction=True, subset_size=count
    )
    ov.save_model(quantized, str(out / "nncf.xml"), compress_to_fp16=False)
    return time.perf_counter() - started


def quantize_ort(source: Path, out: Path, count: int) -> float:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    started = time.perf_counter()
    model = onnx.load(str(source))
    del model.graph.output[1:]  # the only output read: its side outputs would be calibrated for nothing
    first = out / "first-output.onnx"
    onnx.save(model, str(first))
    feed = iter(tensors(count))
    name = model.graph.input[0].name

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, Any] | None:
            tensor = next(feed, None)
            return None if tensor is None else {name: tensor}

    # CalibMaxIntermediateOutputs bounds memory (every activation of every pass is kept otherwise: ~3 GB a photo);
    # onnxruntime 1.32 fails with "No data is collected" when the count is a multiple of it, hence an odd count.
    quantize_static(
        str(first),
        str(out / "ort.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        extra_options={"CalibMaxIntermediateOutputs": 2},
    )
    first.unlink()
    return time.perf_counter() - started


def compare(source: Path, out: Path, count: int) -> None:
    engines: dict[str, Any] = {
        "f32 onnxruntime": OrtFirstOutput(source, (CPU,)),
        "NNCF int8 on OpenVINO": OpenVinoFirstOutput(out / "nncf.xml", "int8", None),
        "ORT static int8 on onnxruntime": OrtFirstOutput(out / "ort.onnx", (CPU,)),
        "ORT static int8 on OpenVINO": OpenVinoFirstOutput(out / "ort.onnx", "int8", None),
    }
    times: dict[str, list[float]] = {name: [] for name in engines}
    diffs: dict[str, list[float]] = {name: [] for name in engines}
    ious: dict[str, list[float]] = {name: [] for name in engines}
    for index, (image, alpha) in enumerate(validation_set(count)):
        tensor = image_tensor(image, FAMILY.side, FAMILY.mean, FAMILY.std)
        masks = {}
        for name, session in engines.items():
            if index == 0:
                session.run(tensor)
            started = time.perf_counter()
            masks[name] = min_max(FAMILY.raw(session.run(tensor)))
            times[name].append(time.perf_counter() - started)
        from PIL import Image

        truth = np.asarray(Image.fromarray((alpha * 255).astype(np.uint8)).resize(masks["f32 onnxruntime"].shape[::-1])) > 127
        for name, mask in masks.items():
            diffs[name].append(float(np.abs(mask - masks["f32 onnxruntime"]).mean()))
            ious[name].append(float(((mask > 0.5) & truth).sum() / max(((mask > 0.5) | truth).sum(), 1)))
        log(f"validation image {index + 1}/{count}")
    base = statistics.median(times["f32 onnxruntime"])
    print(f"\n| engine ({count} validation composites) | median s | vs f32 | mean alpha diff to f32 | IoU vs truth |")
    print("|---|---|---|---|---|")
    for name in engines:
        median = statistics.median(times[name])
        print(
            f"| {name} | {median:.3f} | {base / median:.2f}x | {statistics.fmean(diffs[name]):.4f} | {statistics.fmean(ious[name]):.4f} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bgremove-int8-candidates"))
    parser.add_argument("--calibration", type=int, default=29, help="calibration photos (odd: see quantize_ort)")
    parser.add_argument("--validation", type=int, default=6)
    parser.add_argument("--compare", action="store_true", help="skip quantizing; compare the builds in --out")
    args = parser.parse_args()
    source = model_file(MODEL, load_settings({}))
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.compare:
        log(f"NNCF: {quantize_nncf(source, args.out, args.calibration):.0f} s")
        log(f"onnxruntime static: {quantize_ort(source, args.out, args.calibration):.0f} s")
    compare(source, args.out, args.validation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
