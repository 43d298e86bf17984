"""The session cache: one load under concurrent first use, failures not cached, LRU bound, provider."""

from __future__ import annotations

import threading

import pytest

from bgremove import models
from bgremove.errors import ModelCorrupt
from bgremove.sessions import SessionCache


def test_concurrent_first_use_loads_once(settings):
    cache = SessionCache(settings)
    barrier = threading.Barrier(8)
    got = []

    def worker() -> None:
        barrier.wait()
        got.append(cache.get())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.loads == 1
    assert len(got) == 8 and all(item is got[0] for item in got)


def test_failed_load_is_not_cached(settings, tiny_model):
    cache = SessionCache(settings)
    target = models.model_file("u2netp", settings)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"broken")
    with pytest.raises(ModelCorrupt):
        cache.get("u2netp")
    assert cache.loaded_names() == []
    target.write_bytes(tiny_model.read_bytes())  # "pulling again" fixes it
    assert cache.get("u2netp").name == "u2netp"
    assert cache.loads == 1


def test_lru_bound(make_settings, tiny_model):
    settings = make_settings(MAX_LOADED_MODELS="1")
    for name in ("u2netp", "silueta"):  # two catalog models, both "on disk" as the tiny graph
        target = models.model_file(name, settings)
        target.parent.mkdir(parents=True)
        target.write_bytes(tiny_model.read_bytes())
    cache = SessionCache(settings)
    cache.get("u2netp")
    cache.get("silueta")
    assert cache.loaded_names() == ["silueta"]
    cache.get("u2netp")
    assert cache.loads == 3 and cache.loaded_names() == ["u2netp"]


def test_active_provider_is_reported(settings):
    cache = SessionCache(settings)
    assert cache.active_provider() is None
    cache.get()
    assert cache.active_provider() == "CPUExecutionProvider"
