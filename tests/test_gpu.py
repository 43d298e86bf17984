"""CUDA requested but unusable: onnxruntime-gpu lists CUDAExecutionProvider even when the CUDA/cuDNN libraries or
the GPU are missing, and then runs on CPU. There is no GPU here, so the listing is simulated and the fallback is
onnxruntime's own (this CPU build refuses the CUDA provider the same way)."""

from __future__ import annotations

import logging

import onnxruntime

from bgremove.core.engines import CPU, CUDA
from bgremove.core.sessions import SessionCache


def test_cuda_fallback_is_logged_once_and_reported(make_settings, monkeypatch, caplog):
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA, CPU])  # what onnxruntime-gpu says
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # on a machine with a GPU: hide it, so CUDA still fails
    cache = SessionCache(make_settings(INFERENCE_ENGINE="auto"))
    with caplog.at_level(logging.WARNING, logger="bgremove.core.sessions"):
        loaded = cache.get()
        cache.clear()
        cache.get()  # a second load does not warn again
    assert cache.engine.providers == (CUDA, CPU)
    assert loaded.provider == CPU == cache.active_provider()  # what the footer and /api/health show
    warnings = [r.getMessage() for r in caplog.records if "CUDA was requested" in r.getMessage()]
    assert warnings == ["CUDA was requested but onnxruntime fell back to CPUExecutionProvider: check the CUDA/cuDNN libraries."]
