"""The session cache: one load under concurrent first use, failures not cached, LRU bound, provider."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from bgremove import models
from bgremove.errors import ModelCorrupt
from bgremove.pipeline import RemovalOptions, remove_background
from bgremove.sessions import SessionCache
from tests.conftest import encode, square_photo


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


@pytest.mark.parametrize(("engine", "provider"), [("onnxruntime", "CPUExecutionProvider"), ("openvino", "OpenVINO CPU")])
def test_active_provider_is_reported(make_settings, engine, provider):
    cache = SessionCache(make_settings(INFERENCE_ENGINE=engine))
    assert cache.active_provider() is None
    cache.get()
    assert cache.active_provider().startswith(provider)


def test_engines_give_the_same_mask(make_settings):
    photo = encode(square_photo((300, 200)), "PNG")
    masks = []
    for engine, precision in (("onnxruntime", "auto"), ("openvino", "f32"), ("openvino", "auto")):
        settings = make_settings(INFERENCE_ENGINE=engine, OPENVINO_PRECISION=precision)
        result = remove_background(photo, options=RemovalOptions(only_mask=True), settings=settings, cache=SessionCache(settings))
        masks.append(np.asarray(Image.open(io.BytesIO(result.png))).astype(int))
    assert np.abs(masks[0] - masks[1]).max() <= 1
    assert np.abs(masks[0] - masks[2]).mean() < 1 and np.abs(masks[0] - masks[2]).max() < 8


def test_auto_engine_choice(monkeypatch):
    from bgremove import engines

    monkeypatch.setattr(engines, "cpu_has_bf16", lambda: True)
    assert engines.choose_engine("auto", "auto").label == "OpenVINO CPU bf16"
    assert engines.choose_engine("auto", "f32").engine == "onnxruntime"  # OpenVINO f32 is no faster than onnxruntime
    assert engines.choose_engine("onnxruntime", "auto").label == "CPUExecutionProvider"


def test_cpu_without_bf16_falls_back_by_itself(monkeypatch):
    from bgremove import engines

    monkeypatch.setattr(engines, "cpu_has_bf16", lambda: False)
    assert engines.choose_engine("auto", "auto").engine == "onnxruntime"
    assert engines.choose_engine("openvino", "bf16").label == "OpenVINO CPU f32"


@pytest.mark.parametrize(("side", "rembg_class"), [(320, "U2netCustomSession"), (1024, "DisCustomSession")])
def test_min_max_sessions_match_rembg_predict(make_settings, tmp_path, side, rembg_class):
    """Our rembg-free predict for the u2net and isnet families gives rembg's masks."""
    import onnxruntime as ort
    from rembg.sessions import sessions as rembg_sessions

    from tests.conftest import build_brightness_model

    home = tmp_path / "rembg-home"
    home.mkdir()
    path = build_brightness_model(home / f"tiny-{side}.onnx", side)  # inside rembg's home: its custom sessions insist
    settings = make_settings(REMBG_MODEL_NAME=str(path), INFERENCE_ENGINE="onnxruntime", REMBG_SESSION_PATH=str(home))
    ours = SessionCache(settings).get().session
    models.use_model_home(settings)
    theirs = rembg_sessions[{"U2netCustomSession": "u2net_custom", "DisCustomSession": "dis_custom"}[rembg_class]](
        "custom", ort.SessionOptions(), model_path=str(path))
    photo = Image.open(io.BytesIO(encode(square_photo((333, 211)), "JPEG")))
    difference = np.abs(np.asarray(ours.predict(photo)[0], dtype=int) - np.asarray(theirs.predict(photo)[0], dtype=int))
    # float32 vs rembg's float64 normalisation: a rare 1/255 step at model resolution, spread by the resize
    assert difference.mean() < 0.05 and difference.max() <= 2
