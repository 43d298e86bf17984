"""The cache of loaded models: shared, thread-safe, bounded, with typed errors.

N concurrent first requests for a model load it once (a lock per model); a failed load
is not cached; at most MAX_LOADED_MODELS stay loaded (least recently used goes), so
stepping through the model list cannot exhaust memory. Every model runs on our own engine
session (bgremove.core.engines) with its family's maths (bgremove.core.registry): no rembg
session object is built or called.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from PIL import Image

from bgremove.core import int8, store
from bgremove.core.engines import (
    CUDA,
    INT8,
    EngineChoice,
    InferenceSession,
    build_session,
    choose_engine,
    image_tensor,
)
from bgremove.core.errors import BgRemoveError, ModelCorrupt, ModelUnavailable
from bgremove.core.predictions import PredictionCache
from bgremove.core.registry import CATALOG, FAMILIES, ModelFamily, Prediction, is_custom_model
from bgremove.core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run: `predict` is the whole model step of the pipeline."""

    name: str  # catalog name, or the custom model's absolute path
    provider: str  # what it really runs on, e.g. "OpenVINO CPU bf16" or "CPUExecutionProvider"
    load_seconds: float
    family: type[ModelFamily]
    inner: InferenceSession = field(repr=False)
    engine: str = "onnxruntime"  # onnxruntime or openvino
    precision: str = "f32"  # int8, bf16 or f32: what the forward pass computes in

    def predict(self, image: Image.Image) -> Prediction:
        """Masks at the model's resolution for an RGB image at full resolution (float, not resized back)."""
        family = self.family
        return family.predict(self.inner.run(image_tensor(image, family.side, family.mean, family.std)))


class SessionCache:
    """Loaded models by name (or custom model path), least recently used first."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._load_locks: dict[str, threading.Lock] = {}
        self.loads = 0  # how many sessions were really built (tests check one per model)
        self._warned_fallback = False
        self._int8_status: dict[str, str] = {}  # per model: why it runs int8 or not (health, models list)
        self._engine: EngineChoice | None = None
        self._slots = threading.BoundedSemaphore(settings.max_concurrent_inferences)
        self._waiting = 0
        self.predictions = PredictionCache(settings.prediction_cache_bytes)  # shared by every door, like the models

    @contextmanager
    def inference_slot(self) -> Iterator[None]:
        """Bound forward passes across every door (REST threads, UI, batch): memory stays flat under load."""
        with self._lock:
            self._waiting += 1
        try:
            self._slots.acquire()
        finally:
            with self._lock:
                self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

    @property
    def waiting(self) -> int:
        """Requests waiting for an inference slot right now."""
        return self._waiting

    def get(self, name: str | None = None) -> LoadedModel:
        key = store.resolve_name(name, self.settings)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:
            with self._lock:
                if key in self._loaded:
                    self._loaded.move_to_end(key)
                    return self._loaded[key]
            loaded = self._load(key)
            with self._lock:
                self._loaded[key] = loaded
                while len(self._loaded) > self.settings.max_loaded_models:
                    evicted, _ = self._loaded.popitem(last=False)
                    log.info("Unloaded model %s (MAX_LOADED_MODELS=%d)", evicted, self.settings.max_loaded_models)
            return loaded

    def start_loading(self, name: str | None = None) -> threading.Thread | None:
        """Load `name` on a thread while the caller does other start-up work; `get` then waits for it (one lock per
        model). OpenVINO and onnxruntime release the GIL while they read and compile, so a CLI run's imports and
        listing overlap the compile. Only a model already on disk: a download waits until the caller asks. A load
        that fails here is tried again, and raises, in the caller's `get`."""
        try:
            on_disk = store.is_on_disk(store.resolve_name(name, self.settings), self.settings)
        except BgRemoveError:  # an unknown name: the caller's `get` says so
            return None
        if not on_disk:
            return None

        def load() -> None:
            try:
                self.get(name)
            except Exception:  # the caller's own get() raises it with its message
                log.debug("Early load of %s failed; the next get() tries again", name, exc_info=True)

        thread = threading.Thread(target=load, name="bgremove-model-load")  # not a daemon: never cut off mid-compile
        thread.start()
        return thread

    def loaded_names(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def active_provider(self) -> str | None:
        """The execution provider the most recently used session really runs on."""
        with self._lock:
            return next(reversed(self._loaded.values())).provider if self._loaded else None

    def active_engine(self) -> tuple[str, str] | None:
        """(engine, precision) of the most recently used session, e.g. ("openvino", "int8")."""
        with self._lock:
            last = next(reversed(self._loaded.values()), None)
        return (last.engine, last.precision) if last else None

    def int8_status(self, name: str | None = None) -> str | None:
        """Why a loaded model runs int8 or not ("ready", "building in the background", "failed the gate: ...")."""
        key = store.resolve_name(name, self.settings)
        with self._lock:
            return self._int8_status.get(key)

    def clear(self) -> None:
        """Unload every model (the next get() loads again)."""
        with self._lock:
            self._loaded.clear()
        self.predictions.clear()

    @property
    def engine(self) -> EngineChoice:
        """The engine every session of this cache runs on, chosen once (INFERENCE_ENGINE, INFERENCE_PRECISION; int8 is per model)."""
        if self._engine is None:
            self._engine = choose_engine(self.settings.inference_engine, self.settings.inference_precision)
            log.info("Inference engine: %s", self._engine.label)
        return self._engine

    def _load(self, key: str) -> LoadedModel:
        started = time.perf_counter()
        if is_custom_model(key):
            path = Path(key)
            family = FAMILIES[store.custom_model_family(path)]
        else:
            path = store.pull(key, self.settings)
            family = CATALOG[key].family
        choice = self.engine
        inner = None
        int8_path = self._int8_model(key, path, family, choice)
        if int8_path is not None:
            try:
                inner, choice = build_session(int8_path, INT8, self.settings.session_path / "openvino-cache"), INT8
            except Exception as exc:  # a damaged build must not take the model down: its float weights still work
                self._int8_note(key, f"the int8 build could not be loaded ({store.short_reason(exc)})", warn=True, base=choice)
        try:
            inner = inner or build_session(path, choice, self.settings.session_path / "openvino-cache")
        except Exception as exc:  # onnxruntime and OpenVINO raise their own error types from C++
            raise self._load_error(key, exc) from exc
        if CUDA in choice.providers and inner.provider != CUDA and not self._warned_fallback:
            self._warned_fallback = True
            log.warning("CUDA was requested but onnxruntime fell back to %s: check the CUDA/cuDNN libraries.", inner.provider)
        self.loads += 1
        seconds = time.perf_counter() - started
        log.info("Loaded model %s on %s in %.2fs", key, inner.provider, seconds)
        return LoadedModel(key, inner.provider, seconds, family, inner, choice.engine, choice.precision)

    def _int8_model(self, key: str, path: Path, family: type[ModelFamily], base: EngineChoice) -> Path | None:
        """The int8 build to run for this model, or None (then `base` runs, and the status says why).

        A model without a build gets one started in the background (QUANTIZE_ON_LOAD) and runs `base`
        meanwhile; `_swap_in` replaces it when the build is done.
        """
        wanted = self.settings.inference_precision
        found = int8.plan(path, base, self.settings.inference_engine, wanted)
        if found.state == "run":
            self._int8_note(key, "ready: " + found.note, warn=False, base=base)
            return found.xml
        building = found.state == "missing" and self.settings.quantize_on_load
        if building and (int8.is_building(path) or int8.build_in_background(path, family, lambda: self._swap_in(key))):
            return self._int8_note(key, "building in the background", warn=False, base=base)
        return self._int8_note(key, found.note, warn=found.state == "failed" or wanted == "int8", base=base)

    def _int8_note(self, key: str, note: str, *, warn: bool, base: EngineChoice) -> Path | None:
        """Record (and log once) why `key` runs int8 or not; returns None, the "run `base`" answer."""
        with self._lock:
            changed = self._int8_status.get(key) != note
            self._int8_status[key] = note
        if changed and not note.startswith("ready:"):
            level = logging.WARNING if warn else logging.INFO
            log.log(level, "int8 for %s: %s; running %s", PurePath(key).name, note, base.label)
        return None

    def _swap_in(self, key: str) -> None:
        """After a background int8 build: load the model again (int8 if it passed) and replace the loaded one."""
        with self._lock:
            if key not in self._loaded:
                return  # unloaded meanwhile: the next load picks the build up
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:
            try:
                loaded = self._load(key)
            except ModelUnavailable as exc:
                log.warning("Could not reload %s after its int8 build: %s", key, exc)
                return
            with self._lock:
                if key in self._loaded:
                    self._loaded[key] = loaded
        log.info("Model %s now runs on %s", PurePath(key).name, loaded.provider)

    def _load_error(self, key: str, exc: Exception) -> ModelUnavailable:
        reason = store.short_reason(exc)
        if is_custom_model(key):
            return ModelCorrupt(
                f"Custom model {key} could not be loaded ({reason}).",
                hint="Check that the file is a complete ONNX export of a u2net or isnet model.",
            )
        return ModelCorrupt(
            f"Model file for {key!r} is corrupt or incomplete ({reason}).",
            hint=f"Run `{store.pull_command(key)}` to download it again.",
        )
