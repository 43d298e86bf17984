"""The prediction cache: the same photo with other output options reuses the forward pass; other photos,
models or a zero budget do not; concurrent asks for one photo run the model once; the budget is kept."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from bgremove.core.options import parse_options
from bgremove.core.pipeline import remove_background
from bgremove.core.predictions import PredictionCache, prediction_bytes
from bgremove.core.registry import Prediction
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from tests.conftest import decode_png, encode, square_photo


class CountingCache(SessionCache):
    """A real SessionCache whose loaded model counts its forward passes."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.forward_passes = 0

    def get(self, name: str | None = None):  # type: ignore[no-untyped-def]
        loaded = super().get(name)
        outer = self
        original = loaded.predict

        class Counted:
            def __getattr__(self, attribute: str) -> object:
                return getattr(loaded, attribute)

            def predict(self, image):  # type: ignore[no-untyped-def]
                outer.forward_passes += 1
                return original(image)

        return Counted()  # type: ignore[return-value]


def _prediction(side: int, value: float = 0.5) -> Prediction:
    mask = np.full((side, side), value, dtype=np.float32)
    return Prediction(masks=[mask], raw=mask.copy())


def test_a_new_background_reuses_the_prediction_and_changes_only_the_output(settings: Settings) -> None:
    cache = CountingCache(settings)
    photo = encode(square_photo(), "PNG")
    first = remove_background(photo, "a.png", parse_options(), settings=settings, cache=cache)
    second = remove_background(photo, "a.png", parse_options(bg_color="ff0000"), settings=settings, cache=cache)
    assert cache.forward_passes == 1
    assert not first.prediction_reused and second.prediction_reused
    # the reused prediction is the same mask: where the first output was transparent, the second is red
    alpha = np.asarray(decode_png(first.data).getchannel("A"))
    red = np.asarray(decode_png(second.data).convert("RGBA"))
    assert (alpha == 0).any()
    assert (red[alpha == 0][:, :3] == (255, 0, 0)).all()


def test_another_photo_or_a_disabled_cache_runs_the_model_again(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    cache = CountingCache(settings)
    remove_background(encode(square_photo(), "PNG"), "a.png", parse_options(), settings=settings, cache=cache)
    remove_background(encode(square_photo((120, 200)), "PNG"), "b.png", parse_options(), settings=settings, cache=cache)
    assert cache.forward_passes == 2

    off = make_settings(PREDICTION_CACHE_MB="0")
    uncached = CountingCache(off)
    photo = encode(square_photo(), "PNG")
    for _ in range(2):
        result = remove_background(photo, "a.png", parse_options(), settings=off, cache=uncached)
        assert not result.prediction_reused
    assert uncached.forward_passes == 2


def test_concurrent_asks_for_one_photo_compute_it_once() -> None:
    predictions = PredictionCache(64 * 1024 * 1024)
    started = threading.Event()
    release = threading.Event()
    calls = 0

    def slow() -> Prediction:
        nonlocal calls
        calls += 1
        started.set()
        release.wait(10)
        return _prediction(8)

    results: list[tuple[Prediction, bool]] = []
    threads = [threading.Thread(target=lambda: results.append(predictions.get_or_compute("k", slow))) for _ in range(3)]
    threads[0].start()
    assert started.wait(10)
    for thread in threads[1:]:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(10)
    assert calls == 1
    assert sorted(reused for _, reused in results) == [False, True, True]
    assert len({id(prediction) for prediction, _ in results}) == 1


def test_the_byte_budget_evicts_the_least_recently_used() -> None:
    one = prediction_bytes(_prediction(64))
    predictions = PredictionCache(2 * one)
    for key in ("a", "b"):
        predictions.get_or_compute(key, lambda: _prediction(64))
    predictions.get_or_compute("a", lambda: pytest.fail("a is cached"))  # a is now the most recent
    predictions.get_or_compute("c", lambda: _prediction(64))  # evicts b
    assert len(predictions) == 2
    _, reused = predictions.get_or_compute("b", lambda: _prediction(64))
    assert not reused
    _, reused = predictions.get_or_compute("c", lambda: _prediction(64))
    assert reused


def test_a_failed_forward_pass_is_not_cached() -> None:
    predictions = PredictionCache(1024 * 1024)

    def fails() -> Prediction:
        raise RuntimeError("engine error")

    with pytest.raises(RuntimeError, match="engine error"):
        predictions.get_or_compute("k", fails)
    _, reused = predictions.get_or_compute("k", lambda: _prediction(4))
    assert not reused
