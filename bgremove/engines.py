"""Inference engines behind rembg's sessions: onnxruntime (CPU or CUDA) or OpenVINO (CPU, bf16 when the CPU has it).

rembg's session classes keep their own pre- and post-processing (`predict`); we only swap the object
they call (`inner_session`) for one that runs just the output rembg reads. That output alone matters
for speed: OpenVINO compiles away the unused side outputs (isnet at 1024x1024 on 2 cores: 0.83 s per
pass in bf16 vs 1.6 s with onnxruntime; see scripts/bench.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

EngineName = Literal["auto", "onnxruntime", "openvino"]
Precision = Literal["auto", "bf16", "f32"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class EngineChoice:
    engine: Literal["onnxruntime", "openvino"]
    precision: Literal["bf16", "f32"]
    providers: tuple[str, ...] = (CPU,)

    @property
    def label(self) -> str:
        if self.engine == "openvino":
            return f"OpenVINO CPU {self.precision}"
        return self.providers[0]


@dataclass(frozen=True)
class _InputInfo:
    name: str


def cpu_has_bf16() -> bool:
    """OpenVINO's own report of the CPU's bf16 support (AVX-512 BF16 or AMX)."""
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except (ImportError, RuntimeError):
        return False


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def choose_engine(requested: EngineName, precision: Precision) -> EngineChoice:
    """auto: CUDA when onnxruntime-gpu has a GPU; else OpenVINO bf16 when the CPU supports it; else onnxruntime.

    OpenVINO in f32 is no faster than onnxruntime on CPU, so auto never picks it without bf16.
    """
    import onnxruntime as ort

    cuda = CUDA in ort.get_available_providers()
    if requested == "onnxruntime" or (requested == "auto" and cuda):
        return EngineChoice("onnxruntime", "f32", (CUDA, CPU) if cuda else (CPU,))
    bf16 = cpu_has_bf16()
    wanted: Literal["bf16", "f32"] = "bf16" if precision == "bf16" or (precision == "auto" and bf16) else "f32"
    if precision == "bf16" and not bf16:
        log.warning("OPENVINO_PRECISION=bf16 but this CPU has no bf16 support: using f32")
        wanted = "f32"
    if requested == "openvino":
        if not openvino_available():
            log.warning("INFERENCE_ENGINE=openvino but the openvino package is not installed: using onnxruntime")
            return EngineChoice("onnxruntime", "f32", (CPU,))
        return EngineChoice("openvino", wanted)
    if openvino_available() and wanted == "bf16":
        return EngineChoice("openvino", "bf16")
    return EngineChoice("onnxruntime", "f32", (CPU,))


class OrtFirstOutput:
    """onnxruntime session that copies out only the first output (rembg's predict reads only that one).

    On CPU one run already uses every core: two at once only fight over them and double the activation
    memory (measured: 8 photos at 1024 px took 17.0 s and 2.7 GB with two concurrent runs), so CPU runs
    take turns while other threads decode and encode. GPU runs are not serialised.
    """

    def __init__(self, model_path: Path, providers: tuple[str, ...]) -> None:
        import onnxruntime as ort

        self._session = ort.InferenceSession(str(model_path), sess_options=ort.SessionOptions(), providers=list(providers))
        self._first = self._session.get_outputs()[0].name
        on_cpu = self._session.get_providers()[0] == CPU
        self._turn = threading.Lock() if on_cpu else contextlib.nullcontext()

    def get_inputs(self) -> list[Any]:
        return self._session.get_inputs()

    def get_providers(self) -> list[str]:
        return self._session.get_providers()

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._turn:
            return self._session.run([self._first], feed)


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
            cache_dir.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(cache_dir)})  # compiled blobs: faster second start
        model = core.read_model(str(model_path))
        model = ov.Model(model.get_results()[:1], model.get_parameters(), "first-output")
        self._compiled = core.compile_model(
            model, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        )
        self._inputs = [_InputInfo(port.get_any_name()) for port in self._compiled.inputs]
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()
        self.precision = precision

    def get_inputs(self) -> list[_InputInfo]:
        return self._inputs

    def get_providers(self) -> list[str]:
        return [f"OpenVINO CPU {self.precision}"]

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        inputs = {name: np.ascontiguousarray(value) for name, value in feed.items()}
        with self._lock:
            self._request.start_async(inputs)
            self._request.wait()
            return [np.array(self._request.get_output_tensor(0).data, copy=True)]  # the buffer is reused


def build_inner_session(model_path: Path, choice: EngineChoice, cache_dir: Path | None) -> Any:
    if choice.engine == "openvino":
        return OpenVinoFirstOutput(model_path, choice.precision, cache_dir)
    return OrtFirstOutput(model_path, choice.providers)


def fast_normalize(self: Any, img: Image.Image, mean: tuple[float, float, float], std: tuple[float, float, float],
                   size: tuple[int, int], *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
    """rembg's BaseSession.normalize in float32 (its float64 version costs ~0.1 s per 1024x1024 image);
    same resize, same maths, within 1e-6 of rembg's values."""
    resized = img.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    pixels = np.asarray(resized, dtype=np.float32)
    pixels = pixels * np.float32(1.0 / max(float(pixels.max()), 1e-6))
    pixels = (pixels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    tensor = np.ascontiguousarray(pixels.transpose(2, 0, 1))[None]
    return {self.inner_session.get_inputs()[0].name: tensor}


Normalization = tuple[tuple[float, float, float], tuple[float, float, float], tuple[int, int]]
IMAGENET_320: Normalization = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (320, 320))
DIS_1024: Normalization = ((0.5, 0.5, 0.5), (1.0, 1.0, 1.0), (1024, 1024))
ANIME_1024: Normalization = ((0.485, 0.456, 0.406), (1.0, 1.0, 1.0), (1024, 1024))

# Models whose rembg `predict` is normalize -> first output -> min-max -> uint8 -> LANCZOS resize, with these
# inputs (rembg 2.0.86: dis_general_use.py, dis_anime.py, u2net*.py, silueta.py, *_custom.py).
MIN_MAX_MODELS: dict[str, Normalization] = {
    "isnet-general-use": DIS_1024,
    "isnet-anime": ANIME_1024,
    "u2net": IMAGENET_320,
    "u2netp": IMAGENET_320,
    "u2net_human_seg": IMAGENET_320,
    "silueta": IMAGENET_320,
}
CUSTOM_FAMILIES: dict[str, Normalization] = {"isnet": DIS_1024, "u2net": IMAGENET_320}


class MinMaxMaskSession:
    """rembg's predict for the u2net and isnet families, without importing the rembg package.

    `import rembg` runs rembg/__init__, which imports pymatting and numba: 1.3 s of every CLI run (measured
    with cProfile), for code only alpha matting needs. The maths is rembg's, line for line; a test checks the
    masks against rembg's own sessions.
    """

    def __init__(self, model_name: str, inner: Any, normalization: Normalization) -> None:
        self.model_name = model_name
        self.inner_session = inner
        self.mean, self.std, self.size = normalization

    normalize = fast_normalize

    def predict(self, img: Image.Image, *args: Any, **kwargs: Any) -> list[Image.Image]:
        pred = self.inner_session.run(None, self.normalize(img, self.mean, self.std, self.size))[0][:, 0, :, :]
        high, low = np.max(pred), np.min(pred)
        pred = np.squeeze((pred - low) / (high - low))
        mask = Image.fromarray((pred * 255).astype("uint8"), mode="L")
        return [mask.resize(img.size, Image.Resampling.LANCZOS)]


def attach(session: Any, inner: Any) -> Any:
    """Give a rembg session our inner session and the float32 normalize, without running its __init__."""
    session.inner_session = inner
    session.normalize = types.MethodType(fast_normalize, session)
    return session

