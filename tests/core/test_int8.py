"""int8 builds on small conv models: quantize, gate, cache by weights, choose, and swap in after a background build."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from bgremove.core import int8
from bgremove.core.engines import choose_engine
from bgremove.core.errors import ConfigError
from bgremove.core.registry import U2net
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import load_settings
from bgremove.core.store import file_sha256
from tests.conftest import build_slow_model, square_photo


@pytest.fixture()
def conv_model(int8_model: Path) -> Path:
    return int8_model


def copy_of(model: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(model, folder / model.name))


def test_build_writes_a_quantized_graph_and_a_verdict_keyed_by_the_weights(conv_model: Path) -> None:
    sha = file_sha256(conv_model)
    verdict = int8.read_verdict(conv_model, sha)
    assert verdict is not None and verdict.passed and verdict.sha256 == sha
    assert verdict.mean_alpha_diff is not None and verdict.mean_alpha_diff <= int8.GATE.max_mean_alpha_diff
    assert {"f32", "int8"} <= set(verdict.seconds) and verdict.calibration_photos == 4
    folder = int8.artifact_dir(conv_model, sha)
    assert folder.parent == conv_model.with_name(conv_model.name + ".int8")
    assert sha[:16] in folder.name and int8.engine_version() in folder.name
    assert "FakeQuantize" in int8.model_xml(conv_model, sha).read_text()  # really int8, not a copy
    on_disk = json.loads((folder / int8.VERDICT).read_text())
    assert on_disk["passed"] is True and on_disk["iou_drop"] == pytest.approx(verdict.iou_drop)


def test_new_weights_need_a_new_build(conv_model: Path, tmp_path: Path) -> None:
    changed = build_slow_model(copy_of(conv_model, tmp_path / "m"), convs=3, channels=17)
    assert file_sha256(changed) != file_sha256(conv_model)
    assert int8.read_verdict(changed, file_sha256(changed)) is None


def test_a_passing_build_runs_as_int8_with_masks_close_to_f32(conv_model: Path, make_settings) -> None:
    photo = square_photo((300, 200))
    quantized = SessionCache(make_settings(REMBG_MODEL_NAME=str(conv_model), INFERENCE_PRECISION="int8")).get()
    floats = SessionCache(make_settings(REMBG_MODEL_NAME=str(conv_model), INFERENCE_PRECISION="f32")).get()
    assert (quantized.engine, quantized.precision, quantized.provider) == ("openvino", "int8", "OpenVINO CPU int8")
    assert floats.precision == "f32"
    difference = np.abs(quantized.predict(photo).masks[0] - floats.predict(photo).masks[0])
    assert difference.mean() < int8.GATE.max_mean_alpha_diff


def test_a_failing_gate_runs_float_and_says_why(conv_model: Path, tmp_path: Path, make_settings, caplog) -> None:
    model = copy_of(conv_model, tmp_path / "strict")
    strict = int8.Gate(max_mean_alpha_diff=0.0, max_iou_drop=-1.0)  # nothing can pass
    verdict = int8.build(model, U2net, file_sha256(model), gate=strict, calibration=2, validation=1)
    assert not verdict.passed and "failed the accuracy gate: mean alpha difference" in verdict.reason
    assert not int8.model_xml(model, file_sha256(model)).exists() or not verdict.passed
    cache = SessionCache(make_settings(REMBG_MODEL_NAME=str(model), INFERENCE_ENGINE="openvino"))
    with caplog.at_level(logging.WARNING, logger="bgremove.core.sessions"):
        loaded = cache.get()
    assert loaded.precision != "int8"
    assert "failed the accuracy gate" in (cache.int8_status() or "")
    assert any("failed the accuracy gate" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"INFERENCE_PRECISION": "f32"}, "INFERENCE_PRECISION=f32"),
        ({"INFERENCE_PRECISION": "bf16"}, "INFERENCE_PRECISION=bf16"),
        ({"INFERENCE_ENGINE": "onnxruntime"}, "INFERENCE_ENGINE=onnxruntime"),
    ],
)
def test_settings_that_rule_int8_out(conv_model: Path, make_settings, env: dict[str, str], reason: str) -> None:
    cache = SessionCache(make_settings(REMBG_MODEL_NAME=str(conv_model), **env))
    assert cache.get().precision != "int8"
    assert reason in (cache.int8_status() or "")


def test_auto_takes_int8_only_where_it_measured_faster(conv_model: Path) -> None:
    settings = load_settings({"REMBG_MODEL_NAME": str(conv_model)})
    base = choose_engine(settings.inference_engine, "auto")
    verdict = int8.read_verdict(conv_model, file_sha256(conv_model))
    assert verdict is not None
    plan = int8.plan(conv_model, base, "auto", "auto")
    assert plan.state == ("run" if verdict.faster_than(base.precision) else "slower")
    assert int8.plan(conv_model, base, "auto", "int8").state == "run"  # asked for: runs even if slower


def test_a_graph_without_conv_or_matmul_is_not_quantized(tiny_model: Path) -> None:
    found = int8.plan(tiny_model, choose_engine("auto", "auto"), "auto", "auto")
    assert found.state == "off" and "no Conv or MatMul" in found.note


def test_precision_setting_and_its_old_name() -> None:
    assert load_settings({"INFERENCE_PRECISION": "INT8"}).inference_precision == "int8"
    assert load_settings({"OPENVINO_PRECISION": "bf16"}).inference_precision == "bf16"
    assert load_settings({}).inference_precision == "auto"
    with pytest.raises(ConfigError, match="INFERENCE_PRECISION='int4' is invalid: expected one of auto, int8, bf16, f32"):
        load_settings({"INFERENCE_PRECISION": "int4"})


@pytest.mark.slow  # a process of its own
def test_first_load_serves_float_at_once_and_swaps_in_int8_when_built(tmp_path: Path, make_settings) -> None:
    model = build_slow_model(tmp_path / "fresh-u2net.onnx", convs=1, channels=8)
    cache = SessionCache(make_settings(REMBG_MODEL_NAME=str(model), INFERENCE_PRECISION="int8", QUANTIZE_ON_LOAD="true"))
    first = cache.get()
    assert first.precision != "int8" and cache.int8_status() == "building in the background"
    deadline = time.monotonic() + 240
    while cache.active_engine() != ("openvino", "int8") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cache.active_engine() == ("openvino", "int8"), (model.parent / f"{model.name}.int8" / int8.BUILD_LOG).read_text()
    assert cache.get().provider == "OpenVINO CPU int8" and cache.int8_status().startswith("ready: passed")


def test_a_damaged_build_falls_back_to_float(conv_model: Path, tmp_path: Path, make_settings) -> None:
    model = copy_of(conv_model, tmp_path / "damaged")
    shutil.copytree(int8.int8_home(conv_model), int8.int8_home(model))  # same weights, same build
    (int8.artifact_dir(model, file_sha256(model)) / "model.bin").write_bytes(b"cut short")
    cache = SessionCache(make_settings(REMBG_MODEL_NAME=str(model), INFERENCE_PRECISION="int8"))
    loaded = cache.get()
    assert loaded.precision != "int8" and loaded.predict(square_photo()).masks[0].shape == (320, 320)
    assert "the int8 build could not be loaded" in (cache.int8_status() or "")


def test_a_build_judged_by_a_looser_gate_is_judged_again_by_todays(conv_model: Path, tmp_path: Path) -> None:
    """Tightened thresholds apply to builds already on disk: their own numbers are judged again, no new build."""
    model = copy_of(conv_model, tmp_path / "older")
    sha = file_sha256(model)
    shutil.copytree(int8.artifact_dir(conv_model, sha), int8.artifact_dir(model, sha))
    verdict_file = int8.artifact_dir(model, sha) / int8.VERDICT
    saved = json.loads(verdict_file.read_text())
    too_far = int8.GATE.max_mean_alpha_diff * 2  # passed an older, looser gate; fails today's
    verdict_file.write_text(json.dumps({**saved, "mean_alpha_diff": too_far, "passed": True, "gate": {}}))
    verdict = int8.read_verdict(model, sha)
    assert verdict is not None and not verdict.passed
    assert f"> {int8.GATE.max_mean_alpha_diff}" in verdict.reason
    base = choose_engine("openvino", "auto")
    assert int8.plan(model, base, "openvino", "auto").state == "failed"
    strict = {"max_mean_alpha_diff": 0.0, "max_iou_drop": -1.0}  # judged more strictly than today: the verdict stands
    verdict_file.write_text(json.dumps({**saved, "passed": False, "reason": "failed the accuracy gate: strict", "gate": strict}))
    kept = int8.read_verdict(model, sha)
    assert kept is not None and not kept.passed and kept.reason == "failed the accuracy gate: strict"
