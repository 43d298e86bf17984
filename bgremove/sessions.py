"""The cache of loaded rembg sessions: shared, thread-safe, bounded, with typed errors.

N concurrent first requests for a model load it once (a lock per model); a failed load
is not cached; at most MAX_LOADED_MODELS stay loaded (least recently used goes), so
stepping through the model list cannot exhaust memory.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bgremove import models
from bgremove.engines import (
    CUDA,
    CUSTOM_FAMILIES,
    MIN_MAX_MODELS,
    EngineChoice,
    MinMaxMaskSession,
    attach,
    build_inner_session,
    choose_engine,
)
from bgremove.catalog import is_custom_model
from bgremove.config import Settings, get_settings
from bgremove.errors import ModelCorrupt, ModelUnavailable

if TYPE_CHECKING:
    from rembg.sessions.base import BaseSession

log = logging.getLogger(__name__)

RUN_THROUGH_REMBG = frozenset({"sam"})  # encoder + decoder with prompts: rembg's own sessions as they are


@dataclass(frozen=True)
class LoadedModel:
    name: str
    session: BaseSession
    provider: str
    load_seconds: float


class SessionCache:
    """Loaded sessions by model name (or custom model path), least recently used first."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._load_locks: dict[str, threading.Lock] = {}
        self.loads = 0  # how many sessions were really built (tests check one per model)
        self._warned_fallback = False
        self._engine: EngineChoice | None = None
        self._slots = threading.BoundedSemaphore(settings.max_concurrent_inferences)
        self._waiting = 0

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
        key = models.resolve_name(name, self.settings)
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

    def loaded_names(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def active_provider(self) -> str | None:
        """The execution provider the most recently used session really runs on."""
        with self._lock:
            return next(reversed(self._loaded.values())).provider if self._loaded else None

    def clear(self) -> None:
        """Unload every model (the next get() loads again)."""
        with self._lock:
            self._loaded.clear()

    def _load(self, key: str) -> LoadedModel:
        started = time.perf_counter()
        models.use_model_home(self.settings)
        if not is_custom_model(key):
            models.pull(key, self.settings)
        choice = self.engine
        try:
            session = self._build_session(key, choice)
        except ModelUnavailable:
            raise
        except Exception as exc:  # onnxruntime and OpenVINO raise their own error types from C++
            raise self._load_error(key, exc) from exc
        active = session.inner_session.get_providers()[0]
        if CUDA in choice.providers and active != CUDA and not self._warned_fallback:
            self._warned_fallback = True
            log.warning("CUDA was requested but onnxruntime fell back to %s: check the CUDA/cuDNN libraries.", active)
        self.loads += 1
        seconds = time.perf_counter() - started
        log.info("Loaded model %s on %s in %.2fs", key, active, seconds)
        return LoadedModel(name=key, session=session, provider=active, load_seconds=seconds)

    def _build_session(self, key: str, choice: EngineChoice) -> Any:
        """Our min-max session for u2net/isnet models; rembg's class (with our engine inside) for the rest."""
        cache_dir = self.settings.session_path / "openvino-cache"
        if is_custom_model(key):
            normalization = CUSTOM_FAMILIES[models.custom_model_family(Path(key))]
            return MinMaxMaskSession(key, build_inner_session(Path(key), choice, cache_dir), normalization)
        if key in MIN_MAX_MODELS:
            path = models.find_model_file(key, self.settings)
            assert path is not None  # pulled above
            return MinMaxMaskSession(key, build_inner_session(path, choice, cache_dir), MIN_MAX_MODELS[key])
        cls = models.session_class(key)
        if key in RUN_THROUGH_REMBG:
            return self._rembg_session(cls, key, choice.providers)
        session = cls.__new__(cls)  # rembg's __init__ would load the graph once more in onnxruntime
        session.model_name = key
        return attach(session, build_inner_session(Path(cls.download_models()), choice, cache_dir))

    @staticmethod
    def _rembg_session(cls: type[BaseSession], key: str, providers: tuple[str, ...]) -> BaseSession:
        import onnxruntime as ort

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rembg's CUDA fallback warning: we log our own
            return cls(key, ort.SessionOptions(), providers=list(providers))

    @property
    def engine(self) -> EngineChoice:
        """The engine every session of this cache runs on, chosen once (INFERENCE_ENGINE, OPENVINO_PRECISION)."""
        if self._engine is None:
            self._engine = choose_engine(self.settings.inference_engine, self.settings.openvino_precision)  # type: ignore[arg-type]
            log.info("Inference engine: %s", self._engine.label)
        return self._engine

    def _load_error(self, key: str, exc: Exception) -> ModelUnavailable:
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        if is_custom_model(key):
            return ModelCorrupt(f"Custom model {key} could not be loaded ({reason}).",
                                hint="Check that the file is a complete ONNX export of a u2net or isnet model.")
        return ModelCorrupt(
            f"Model file for {key!r} is corrupt or incomplete ({reason}).",
            hint=f"Run `{models.pull_command(key)}` to download it again.",
        )


@lru_cache(maxsize=1)
def get_cache() -> SessionCache:
    """The process-wide cache, built from the process settings."""
    return SessionCache(get_settings())
