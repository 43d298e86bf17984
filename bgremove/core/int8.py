"""int8 models: quantized once per weights and engine version, kept only when they pass an accuracy gate.

Why: without AVX-512 BF16 or AMX our only lead over `rembg p` was OpenVINO bf16; int8 is the lever every
CPU has (VNNI makes it faster still). Both post-training quantizers were measured on isnet-general-use
(scripts/int8_candidates.py; AMD EPYC, AVX-512 VNNI + BF16, 2 shared cores, 30 calibration photos):
OpenVINO + NNCF built in 176 s with a 2.1 GB peak, ran 1.81 s a pass, mean alpha difference to f32 0.0015;
onnxruntime's static QDQ built in 221 s with a 6.0 GB peak, ran 2.44 s on onnxruntime (1.72 s on OpenVINO),
difference 0.0038 (f32 onnxruntime: 8.3 s under the same load). NNCF builds the model and OpenVINO runs it.

Where: beside the model, `<model>.onnx.int8/<sha256[:16]>-ov<openvino>-nncf<nncf>/` (model.xml, model.bin,
verdict.json), so new weights or a new engine get a new build and an old one is never reused by mistake.
When: `python -m bgremove models pull` builds it in the foreground (minutes, with progress); the first load of
a model without one (copied in by hand, or a custom .onnx) starts the build in a low-priority background
process and serves f32/bf16 until it is ready (`SessionCache` swaps it in). One builder at a time per model
(an OS file lock, released if the builder dies).
Gate: int8 and f32 run on the validation composites of `calibration.validation_set`, whose alpha is known;
int8 is kept only if the mean alpha difference to f32 and the IoU drop against the truth stay under GATE.
A failed gate is remembered (verdict.json), logged with its numbers, and the model runs at f32/bf16. The
verdict is the build's: new thresholds apply to the next build (`models pull --force`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import numpy as np

from bgremove.core.engines import EngineChoice, EngineName, Precision, int8_choice
from bgremove.core.registry import FAMILIES, ModelFamily, min_max
from bgremove.core.settings import Settings
from bgremove.core.store import file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gate:
    """The accuracy gate's thresholds (alpha in 0..1, IoU of alpha > 0.5 against the true alpha)."""

    # isnet-general-use's NNCF int8 measured 0.0015-0.0023 here (onnxruntime's static int8: 0.0038), so 0.01
    # leaves 4x headroom and still refuses a visibly different cutout (a broken build is > 0.1).
    max_mean_alpha_diff: float = 0.01
    # One IoU point against the true alpha, below f32's; isnet's int8 came out 0.019 *above* f32 (noise of 8 images).
    max_iou_drop: float = 0.01


GATE = Gate()
CALIBRATION_COUNT = 30  # photos NNCF sees (the measurement: 30 is enough for isnet, ~3 min on 2 cores)
VALIDATION_COUNT = 8  # composites the gate compares on (both precisions, interleaved, ~30 s for isnet)
VERDICT = "verdict.json"
BUILD_LOG = "build.log"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Verdict:
    """What one build found: whether int8 is kept and why, with the gate's numbers and forward times."""

    passed: bool
    reason: str
    sha256: str
    engine: str
    mean_alpha_diff: float | None = None
    iou_f32: float | None = None
    iou_int8: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # median forward pass per precision, build machine
    calibration_photos: int = 0
    validation_images: int = 0
    build_seconds: float = 0.0
    built_at: str = ""
    gate: dict[str, float] = field(default_factory=dict)  # the thresholds it was judged by (none: before they were kept)

    @property
    def iou_drop(self) -> float | None:
        return None if self.iou_f32 is None or self.iou_int8 is None else self.iou_f32 - self.iou_int8

    def faster_than(self, precision: str) -> bool:
        """Whether int8 ran faster than `precision` here; True when that precision was not measured (int8
        was the fastest wherever both were: 1.5x f32 without VNNI, more with it)."""
        mine, other = self.seconds.get("int8"), self.seconds.get(precision)
        return mine is None or other is None or mine < other

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["iou_drop"] = self.iou_drop
        return data


def engine_version() -> str:
    """The versions an int8 build depends on (read from package metadata: nothing heavy is imported)."""
    versions = []
    for package, short in (("openvino", "ov"), ("nncf", "nncf")):
        try:
            versions.append(short + metadata.version(package))
        except metadata.PackageNotFoundError:
            versions.append(short + "-missing")
    return "-".join(versions)


def int8_home(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".int8")


def artifact_dir(model_path: Path, sha256: str) -> Path:
    return int8_home(model_path) / f"{sha256[:16]}-{engine_version()}"


def unavailable_reason() -> str | None:
    """Why no int8 model can be built or run here, or None."""
    for package in ("openvino", "nncf"):
        try:
            metadata.version(package)
        except metadata.PackageNotFoundError:
            return f"the {package} package is not installed (pip install -r requirements.txt)"
    return None


def read_verdict(model_path: Path, sha256: str) -> Verdict | None:
    """The verdict of this weights + engine build, if one finished."""
    try:
        saved = json.loads((artifact_dir(model_path, sha256) / VERDICT).read_text())
        saved.pop("iou_drop", None)  # derived, written for readers of the file
        verdict = Verdict(**saved)
    except (OSError, ValueError, TypeError):
        return None
    return _under_todays_gate(verdict)


def _under_todays_gate(verdict: Verdict) -> Verdict:
    """A build judged by a looser gate than today's (or by one not recorded) is judged again by today's from its
    own numbers: tightening a threshold takes effect on every cached build without quantizing again, and the
    reason quotes today's thresholds. A build judged at least as strictly stands."""
    if verdict.mean_alpha_diff is None or verdict.iou_f32 is None or verdict.iou_int8 is None:
        return verdict  # a build that failed before the gate ran (its reason says why)
    judged_by = Gate(**verdict.gate) if verdict.gate else None
    if judged_by is not None and (
        judged_by.max_mean_alpha_diff <= GATE.max_mean_alpha_diff and judged_by.max_iou_drop <= GATE.max_iou_drop
    ):
        return verdict
    passed, reason = judge(verdict.mean_alpha_diff, verdict.iou_f32, verdict.iou_int8, GATE)
    return replace(verdict, passed=passed, reason=reason)


def model_xml(model_path: Path, sha256: str) -> Path:
    return artifact_dir(model_path, sha256) / "model.xml"


def is_building(model_path: Path) -> bool:
    """Whether some process holds the build lock of this model now."""
    lock = int8_home(model_path) / ".lock"
    if not lock.exists():
        return False
    try:
        with lock.open("a") as handle:
            if _try_lock(handle):
                _unlock(handle)
                return False
    except OSError:  # a read-only model folder: nobody can be building there
        return False
    return True


QUANTIZABLE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


def has_quantizable_layers(model_path: Path) -> bool:
    """Whether the graph has layers int8 speeds up (a graph of only element-wise ops gains nothing)."""
    import onnx

    try:
        graph = onnx.load(str(model_path), load_external_data=False).graph
    except Exception:  # onnx raises DecodeError, OSError...: the load itself reports a broken file
        return False
    return any(node.op_type in QUANTIZABLE_OPS for node in graph.node)


@dataclass(frozen=True)
class Plan:
    """What a model runs: its int8 build (`xml`), or the float engine with the reason in `note`."""

    state: str  # run, off, missing, failed, slower
    note: str
    xml: Path | None = None


def plan(model_path: Path, base: EngineChoice, engine: EngineName, precision: Precision) -> Plan:
    """The one decision, for loads and `models list`: int8 when allowed, built, through the gate and (for
    auto) faster than `base` on the build machine; otherwise why not."""
    why_not = int8_choice(engine, precision, base) or unavailable_reason()
    if why_not is not None:
        return Plan("off", f"off: {why_not}")
    sha = file_sha256(model_path)
    verdict = read_verdict(model_path, sha)
    if verdict is None:
        if not has_quantizable_layers(model_path):
            return Plan("off", "off: the model has no Conv or MatMul layers to quantize")
        return Plan("missing", "not built yet (`python -m bgremove models pull` builds it)")
    if not verdict.passed:
        return Plan("failed", verdict.reason)
    if precision == "auto" and not verdict.faster_than(base.precision):
        seconds = verdict.seconds
        return Plan(
            "slower", f"built, but slower than {base.precision} here ({seconds['int8']:.2f}s vs {seconds[base.precision]:.2f}s)"
        )
    return Plan("run", verdict.reason, model_xml(model_path, sha))


def describe(name: str, settings: Settings) -> dict[str, str]:
    """What loading a model would run now: {"engine", "precision", "int8"} (`models list`, /api/models)."""
    from bgremove.core.engines import INT8, choose_engine
    from bgremove.core.store import find_model_file

    base = choose_engine(settings.inference_engine, settings.inference_precision)
    path = Path(name) if name not in _catalog() else find_model_file(name, settings)
    if path is None or not path.is_file():
        return {"engine": base.engine, "precision": base.precision, "int8": "model not on disk"}
    found = plan(path, base, settings.inference_engine, settings.inference_precision)
    choice = INT8 if found.state == "run" else base
    return {"engine": choice.engine, "precision": choice.precision, "int8": found.note}


def _catalog() -> frozenset[str]:
    from bgremove.core.registry import CATALOG

    return frozenset(CATALOG)


def build_for_pull(name: str, model_path: Path, settings: Settings, *, force: bool, progress: Progress) -> str:
    """`models pull`'s second step: build (or find) the int8 model of a pulled model; one line on the outcome."""
    from bgremove.core.engines import choose_engine
    from bgremove.core.registry import CATALOG
    from bgremove.core.store import custom_model_family

    base = choose_engine(settings.inference_engine, settings.inference_precision)
    why_not = int8_choice(settings.inference_engine, settings.inference_precision, base) or unavailable_reason()
    if why_not is not None:
        return f"int8 not built: {why_not}"
    if not has_quantizable_layers(model_path):
        return "int8 not built: the model has no Conv or MatMul layers to quantize"
    family = CATALOG[name].family if name in CATALOG else FAMILIES[custom_model_family(model_path)]
    sha = file_sha256(model_path)
    found = None if force else read_verdict(model_path, sha)
    verdict = found or build(model_path, family, sha, force=force, progress=progress)
    kept = "kept" if verdict.passed else "not kept (runs at f32/bf16)"
    where = model_xml(model_path, sha) if verdict.passed else artifact_dir(model_path, sha) / VERDICT
    return f"int8 {kept}{' (built before)' if found else ''}: {verdict.reason}; {where}"


# --- building ----------------------------------------------------------------------------------------------


def build(
    model_path: Path,
    family: type[ModelFamily],
    sha256: str,
    *,
    gate: Gate = GATE,
    calibration: int = CALIBRATION_COUNT,
    validation: int = VALIDATION_COUNT,
    force: bool = False,
    progress: Progress = log.info,
) -> Verdict:
    """Quantize, check against the gate, save; waits for another process already building the same model."""
    home = int8_home(model_path)
    home.mkdir(parents=True, exist_ok=True)
    with _build_lock(home, progress):
        target = artifact_dir(model_path, sha256)
        found = None if force else read_verdict(model_path, sha256)
        if found is not None:
            return found
        started = time.perf_counter()
        done = threading.Event()

        def heartbeat() -> None:  # NNCF's own progress bars only show on a terminal
            while not done.wait(30):
                progress(f"still building the int8 model of {model_path.name} ({time.perf_counter() - started:.0f} s)")

        threading.Thread(target=heartbeat, name="bgremove-int8-progress", daemon=True).start()
        partial = home / f".partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            verdict = _build_into(partial, model_path, family, sha256, gate, calibration, validation, progress)
        except Exception as exc:  # NNCF and OpenVINO raise their own types from C++; any failure is a verdict
            log.exception("Building the int8 model of %s failed", model_path.name)
            verdict = Verdict(False, f"quantization failed ({type(exc).__name__}: {exc})"[:300], sha256, engine_version())
            for leftover in partial.iterdir():
                leftover.unlink()
        finally:
            done.set()
        verdict = Verdict(**{**asdict(verdict), "build_seconds": round(time.perf_counter() - started, 1), "built_at": _now()})
        (partial / VERDICT).write_text(json.dumps(verdict.summary(), indent=2) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)  # same folder: the build appears whole or not at all
        for stale in home.iterdir():  # builds for older weights or engines
            if stale.is_dir() and stale != target and not stale.name.startswith(".partial-"):
                shutil.rmtree(stale, ignore_errors=True)
    progress(f"int8 {'kept' if verdict.passed else 'not kept'} for {model_path.name}: {verdict.reason}")
    return verdict


def _build_into(
    folder: Path,
    model_path: Path,
    family: type[ModelFamily],
    sha256: str,
    gate: Gate,
    calibration: int,
    validation: int,
    progress: Progress,
) -> Verdict:
    import nncf
    import openvino as ov

    from bgremove.core.calibration import calibration_images
    from bgremove.core.engines import image_tensor

    core = ov.Core()
    model = core.read_model(str(model_path))
    model = ov.Model(model.get_results()[:1], model.get_parameters(), "first-output")  # the only output read
    tensors = [image_tensor(image, family.side, family.mean, family.std) for image in calibration_images(calibration)]
    progress(f"quantizing {model_path.name} to int8 with NNCF on {len(tensors)} calibration photos (takes minutes)")
    quantized = nncf.quantize(
        model,
        nncf.Dataset(tensors),
        preset=nncf.QuantizationPreset.MIXED,  # asymmetric activations: ReLU-free isnet blocks keep their range
        fast_bias_correction=True,
        subset_size=len(tensors),
    )
    del tensors
    ov.save_model(quantized, str(folder / "model.xml"), compress_to_fp16=False)
    progress(f"checking int8 against f32 on {validation} validation images (the accuracy gate)")
    verdict = check_gate(model_path, folder / "model.xml", family, sha256, gate, validation, progress)
    return Verdict(**{**asdict(verdict), "calibration_photos": calibration})


def check_gate(
    model_path: Path,
    int8_xml: Path,
    family: type[ModelFamily],
    sha256: str,
    gate: Gate,
    count: int,
    progress: Progress = log.info,
) -> Verdict:
    """Run f32 (onnxruntime, our f32 path), int8 and, where the CPU has it, bf16 on the validation set,
    interleaved image by image so load on a shared machine hits all alike; compare with f32 and the truth."""
    from bgremove.core.calibration import validation_set
    from bgremove.core.engines import CPU, OpenVinoFirstOutput, OrtFirstOutput, cpu_has_bf16, image_tensor

    sessions: dict[str, Any] = {"f32": OrtFirstOutput(model_path, (CPU,)), "int8": OpenVinoFirstOutput(int8_xml, "int8", None)}
    if cpu_has_bf16():
        sessions["bf16"] = OpenVinoFirstOutput(model_path, "bf16", None)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    diffs, iou_f32, iou_int8 = [], [], []
    items = validation_set(count)
    for index, (image, alpha) in enumerate(items):
        tensor = image_tensor(image, family.side, family.mean, family.std)
        masks = {}
        for name, session in sessions.items():
            if index == 0:
                session.run(tensor)  # the first pass allocates: not timed
            started = time.perf_counter()
            masks[name] = min_max(family.raw(session.run(tensor)))
            times[name].append(time.perf_counter() - started)
        progress(f"gate: image {index + 1}/{len(items)}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
        truth = _resized(alpha, masks["f32"].shape) > 0.5
        diffs.append(float(np.abs(masks["int8"] - masks["f32"]).mean()))
        iou_f32.append(_iou(masks["f32"] > 0.5, truth))
        iou_int8.append(_iou(masks["int8"] > 0.5, truth))
    diff, f32_iou, int8_iou = statistics.fmean(diffs), statistics.fmean(iou_f32), statistics.fmean(iou_int8)
    passed, reason = judge(diff, f32_iou, int8_iou, gate)
    return Verdict(
        passed,
        reason,
        sha256,
        engine_version(),
        mean_alpha_diff=round(diff, 5),
        iou_f32=round(f32_iou, 5),
        iou_int8=round(int8_iou, 5),
        seconds={name: round(statistics.median(values), 4) for name, values in times.items()},
        validation_images=len(items),
        gate=asdict(gate),
    )


def judge(diff: float, f32_iou: float, int8_iou: float, gate: Gate) -> tuple[bool, str]:
    """The gate's decision and the sentence the log, `models list` and /api/health give for it."""
    drop = f32_iou - int8_iou
    failures = []
    if diff > gate.max_mean_alpha_diff:
        failures.append(f"mean alpha difference to f32 {diff:.4f} > {gate.max_mean_alpha_diff}")
    if drop > gate.max_iou_drop:
        failures.append(f"IoU drop {drop:.4f} > {gate.max_iou_drop} (f32 {f32_iou:.4f}, int8 {int8_iou:.4f})")
    if failures:
        return False, "failed the accuracy gate: " + "; ".join(failures)
    return True, (
        f"passed the accuracy gate (mean alpha difference {diff:.4f} <= {gate.max_mean_alpha_diff}, "
        f"IoU drop {drop:.4f} <= {gate.max_iou_drop})"
    )


def _resized(alpha: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(np.asarray(alpha * 255 + 0.5, dtype=np.uint8))
    return np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0


def _iou(mask: np.ndarray, truth: np.ndarray) -> float:
    union = int((mask | truth).sum())
    return 1.0 if union == 0 else int((mask & truth).sum()) / union


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- one builder at a time ---------------------------------------------------------------------------------


def _try_lock(handle: IO[str]) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent builds only waste time (the rename is atomic)
        return True
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(handle: IO[str]) -> None:
    with contextlib.suppress(ImportError):
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _build_lock(home: Path, progress: Progress) -> Iterator[None]:
    with (home / ".lock").open("a") as handle:
        if not _try_lock(handle):
            progress(f"another process is building the int8 model in {home}: waiting for it")
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            _unlock(handle)


# --- in the background ---------------------------------------------------------------------------------------

_started: set[Path] = set()
_started_lock = threading.Lock()


def build_in_background(model_path: Path, family: type[ModelFamily], on_done: Callable[[], None]) -> bool:
    """Start a low-priority builder process for this model (once per process); `on_done` runs when it exits.

    A process rather than a thread: quantizing needs ~2 GB and minutes of CPU, and at low priority it yields
    both cores to requests; it keeps going if a CLI run that started it ends first (the next run uses it).
    """
    with _started_lock:
        if model_path in _started:
            return False
        _started.add(model_path)
    home = int8_home(model_path)
    try:
        home.mkdir(parents=True, exist_ok=True)
        output = (home / BUILD_LOG).open("ab")
    except OSError as exc:
        log.warning("Cannot build an int8 model beside %s (%s): running it at f32/bf16", model_path, exc.strerror or exc)
        return False
    process = subprocess.Popen(
        [sys.executable, "-m", "bgremove.core.int8", str(model_path), family.name],
        stdout=output,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # not killed with a CLI run's terminal
    )
    output.close()
    log.info(
        "Building the int8 model of %s in the background (pid %d, log %s); f32/bf16 serve until it is ready",
        model_path.name,
        process.pid,
        home / BUILD_LOG,
    )

    def wait() -> None:
        process.wait()
        on_done()

    threading.Thread(target=wait, name="bgremove-int8-build", daemon=True).start()
    return True


def main(argv: list[str]) -> int:
    """`python -m bgremove.core.int8 MODEL.onnx FAMILY`: the background builder."""
    from bgremove.core.observability import configure_logging

    configure_logging("info", "text")
    if hasattr(os, "nice"):
        os.nice(15)  # requests first: this process only uses what they leave
    path, family = Path(argv[0]), FAMILIES[argv[1]]
    verdict = build(path, family, file_sha256(path))
    return 0 if verdict.reason else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
