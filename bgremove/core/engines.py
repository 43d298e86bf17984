"""Inference engines, chosen in one place: onnxruntime (CPU or CUDA) or OpenVINO (CPU, bf16 when the CPU has it).

Every model family reads only its graph's first output (rembg 2.0.86: `ort_outs[0]` in every session it
ships, u2net_cloth_seg included), so both engines compute just that one. That alone matters for speed:
OpenVINO compiles away the unused side outputs (isnet at 1024x1024 on 2 cores: 0.83 s per pass in bf16 vs
1.6 s with onnxruntime; see scripts/bench.py).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from numpy.typing import NDArray

log = logging.getLogger(__name__)

EngineName = Literal["auto", "onnxruntime", "openvino"]
Precision = Literal["auto", "int8", "bf16", "f32"]
RunPrecision = Literal["int8", "bf16", "f32"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class EngineChoice:
    engine: Literal["onnxruntime", "openvino"]
    precision: RunPrecision
    providers: tuple[str, ...] = (CPU,)

    @property
    def label(self) -> str:
        if self.engine == "openvino":
            return f"OpenVINO CPU {self.precision}"
        return self.providers[0]


class InferenceSession(Protocol):
    """One loaded graph: a [1, 3, side, side] float32 tensor in, its first output out."""

    @property
    def provider(self) -> str: ...

    def run(self, tensor: NDArray[np.float32]) -> NDArray[np.float32]: ...


ISA_CAP_VARIABLE = "ONEDNN_MAX_CPU_ISA"
# oneDNN's ISA names at or above the first one with bf16 instructions (oneDNN's cpu_isa_t order).
BF16_ISAS = frozenset(
    {"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX", "ALL"}
)


def isa_cap() -> str | None:
    """oneDNN's ONEDNN_MAX_CPU_ISA, which holds OpenVINO's kernels below what the CPU has: how a CPU without bf16
    (AVX512_CORE_VNNI) or without AVX-512 (AVX2) is measured on one that has them. None when unset."""
    cap = os.environ.get(ISA_CAP_VARIABLE, "").strip().upper()
    return cap or None


@functools.cache
def cpu_has_bf16() -> bool:
    """OpenVINO's own report of the CPU's bf16 support (AVX-512 BF16 or AMX), unless an ISA cap below bf16 holds
    the kernels back (OpenVINO still reports the CPU's own capability then); asked once (a Core costs ~0.2 s)."""
    cap = isa_cap()
    if cap is not None and cap not in BF16_ISAS:
        return False
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except (ImportError, RuntimeError):
        return False


def cpu_flags() -> dict[str, bool]:
    """The CPU features that decide the precision: bf16 (AVX-512 BF16), VNNI (int8 dot products), AMX."""
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux: OpenVINO's report alone
        words = set()
    return {
        "avx2": "avx2" in words,
        "avx512_vnni": "avx512_vnni" in words,
        "avx_vnni": "avx_vnni" in words,
        "avx512_bf16": "avx512_bf16" in words,
        "amx": bool({"amx_tile", "amx_int8", "amx_bf16"} & words),
        "openvino_bf16": cpu_has_bf16(),
    }


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def choose_engine(requested: EngineName, precision: Precision) -> EngineChoice:
    """The float engine. auto: CUDA when onnxruntime-gpu has a GPU; else OpenVINO bf16 when the CPU supports
    it; else onnxruntime. OpenVINO in f32 is no faster than onnxruntime on CPU, so auto never picks it
    without bf16. int8 is decided per model on top of this (`int8_choice`): it needs the model's build."""
    import onnxruntime as ort

    cuda = CUDA in ort.get_available_providers()
    if requested == "onnxruntime" or (requested == "auto" and cuda):
        return EngineChoice("onnxruntime", "f32", (CUDA, CPU) if cuda else (CPU,))
    bf16 = cpu_has_bf16()
    wanted: Literal["bf16", "f32"] = "bf16" if precision == "bf16" or (precision == "auto" and bf16) else "f32"
    if precision == "bf16" and not bf16:
        log.warning("INFERENCE_PRECISION=bf16 but this CPU has no bf16 support: using f32")
        wanted = "f32"
    if requested == "openvino":
        if not openvino_available():
            log.warning("INFERENCE_ENGINE=openvino but the openvino package is not installed: using onnxruntime")
            return EngineChoice("onnxruntime", "f32", (CPU,))
        return EngineChoice("openvino", wanted)
    if openvino_available() and wanted == "bf16":
        return EngineChoice("openvino", "bf16")
    return EngineChoice("onnxruntime", "f32", (CPU,))


INT8 = EngineChoice("openvino", "int8")


def int8_choice(requested: EngineName, precision: Precision, base: EngineChoice) -> str | None:
    """Why this configuration cannot run an int8 model (None: it can, if the model's build passed its gate)."""
    if precision in ("f32", "bf16"):
        return f"INFERENCE_PRECISION={precision}"
    if CUDA in base.providers:
        return "the model runs on CUDA"
    if requested == "onnxruntime":
        return "INFERENCE_ENGINE=onnxruntime (the int8 models run on OpenVINO)"
    if not openvino_available():
        return "the openvino package is not installed"
    return None


class OrtFirstOutput:
    """onnxruntime session that copies out only the first output (the only one any family reads).

    On CPU one run already uses every core: two at once only fight over them and double the activation
    memory (measured: 8 photos at 1024 px took 17.0 s and 2.7 GB with two concurrent runs), so CPU runs
    take turns while other threads decode and encode. GPU runs are not serialised.
    """

    def __init__(self, model_path: Path, providers: tuple[str, ...]) -> None:
        import onnxruntime as ort

        self._session = ort.InferenceSession(str(model_path), sess_options=ort.SessionOptions(), providers=list(providers))
        self._input = self._session.get_inputs()[0].name
        self._first = self._session.get_outputs()[0].name
        self.provider: str = self._session.get_providers()[0]
        self._turn = threading.Lock() if self.provider == CPU else contextlib.nullcontext()

    def run(self, tensor: NDArray[np.float32]) -> NDArray[np.float32]:
        with self._turn:
            output: NDArray[np.float32] = self._session.run([self._first], {self._input: tensor})[0]
        return output


class OpenVinoFirstOutput:
    """OpenVINO compiled model pruned to its first output, one inference at a time.

    The LATENCY hint gives one stream that uses every core, so concurrent requests would only queue inside
    OpenVINO; we queue them on a Python lock instead (waiting releases the GIL) and wait with `wait()`,
    which releases the GIL too. Concurrent `infer()` calls from several Python threads hung here twice
    (one thread inside the bindings, the others waiting for the GIL).
    """

    def __init__(self, model_path: Path, precision: str, cache_dir: Path | None) -> None:
        import openvino as ov

        core = ov.Core()
        if cache_dir is not None:
            # A blob compiled under an ISA cap would be recompiled (and overwritten) by every uncapped start.
            cap = isa_cap()
            cache_dir = cache_dir / f"isa-{cap.lower()}" if cap else cache_dir
            cache_dir.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(cache_dir)})  # compiled blobs: faster second start
        model = core.read_model(str(model_path))
        model = ov.Model(model.get_results()[:1], model.get_parameters(), "first-output")
        # int8 graphs: the quantized ops run in int8 and the rest in f32, on every CPU alike (the gate's numbers hold)
        hint = "f32" if precision == "int8" else precision
        self._compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"})
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()
        self.provider = f"OpenVINO CPU {precision}"

    def run(self, tensor: NDArray[np.float32]) -> NDArray[np.float32]:
        with self._lock:
            self._request.start_async({0: np.ascontiguousarray(tensor)})
            self._request.wait()
            return np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)  # the buffer is reused


def build_session(model_path: Path, choice: EngineChoice, cache_dir: Path | None) -> InferenceSession:
    """The one place a graph is loaded: onnxruntime or OpenVINO as `choice` says."""
    if choice.engine == "openvino":
        return OpenVinoFirstOutput(model_path, choice.precision, cache_dir)
    return OrtFirstOutput(model_path, choice.providers)


def image_tensor(
    image: Image.Image, side: int, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> NDArray[np.float32]:
    """rembg's BaseSession.normalize in float32 (its float64 version costs ~0.1 s per 1024x1024 image):
    LANCZOS resize to the input side, divide by the brightest value, subtract mean, divide by std.
    Same resize, same maths, within 1e-6 of rembg's values."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    pixels = np.asarray(rgb.resize((side, side), Image.Resampling.LANCZOS), dtype=np.float32)
    pixels *= np.float32(1.0 / max(float(pixels.max()), 1e-6))  # a new float32 array: safe to scale in place
    pixels -= np.asarray(mean, dtype=np.float32)
    pixels /= np.asarray(std, dtype=np.float32)
    tensor: NDArray[np.float32] = np.ascontiguousarray(pixels.transpose(2, 0, 1))[None]
    return tensor
