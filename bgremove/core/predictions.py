"""Recent model predictions, by photo content: the forward pass is the expensive step, so asking for the same
photo again with other output options (a new background, format or crop) or with touch-up strokes reuses it.

Keyed by the sha256 of the photo's bytes, the model and what it runs on (a different engine or precision gives a
slightly different mask). Bounded by bytes, least recently used first out, thread-safe. Concurrent requests for
the same key compute it once: the others wait for that result instead of running the model again.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

from bgremove.core.registry import Prediction


def photo_key(data: bytes, model: str, runs_on: str, decoded_at: tuple[int, int] | None = None) -> str:
    """The cache key of one photo's prediction by one model on one engine.

    `decoded_at`: the size the pixels were decoded at when smaller than the photo (a JPEG draft, see
    `pipeline.decode_floor`). The model then sees slightly different pixels, so that prediction is kept apart from
    the full decode's: a full-size request never gets a draft's mask, and each is the same whatever came first.
    """
    key = f"{hashlib.sha256(data).hexdigest()}:{model}:{runs_on}"
    return key if decoded_at is None else f"{key}:{decoded_at[0]}x{decoded_at[1]}"


def prediction_bytes(prediction: Prediction) -> int:
    return sum(mask.nbytes for mask in prediction.masks) + prediction.raw.nbytes


class PredictionCache:
    """At most `max_bytes` of predictions; 0 turns the cache off (every call computes)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, Prediction] = OrderedDict()
        self._computing: dict[str, threading.Lock] = {}
        self._size = 0
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: str, compute: Callable[[], Prediction]) -> tuple[Prediction, bool]:
        """The prediction for `key` and whether it came from the cache; `compute` runs at most once per key at a time."""
        cached = self._get(key)
        if cached is not None:
            return cached, True
        with self._lock:
            key_lock = self._computing.setdefault(key, threading.Lock())
        with key_lock:
            cached = self._get(key)
            if cached is not None:
                return cached, True
            try:
                prediction = compute()
                self._put(key, prediction)  # before the key's lock goes, so a newcomer finds the entry
            finally:
                with self._lock:
                    self._computing.pop(key, None)
            with self._lock:
                self.misses += 1
            return prediction, False

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._size = 0

    def _get(self, key: str) -> Prediction | None:
        with self._lock:
            prediction = self._entries.get(key)
            if prediction is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            return prediction

    def _put(self, key: str, prediction: Prediction) -> None:
        size = prediction_bytes(prediction)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = prediction
            self._size += size
            while self._size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._size -= prediction_bytes(evicted)
