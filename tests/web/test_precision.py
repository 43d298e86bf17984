"""/api/health says which engine and precision run, and how the default model's int8 build stands."""

from __future__ import annotations

from pathlib import Path

from bgremove.web.app import create_app
from tests.web.conftest import SettingsFactory, running


def test_health_names_engine_precision_and_int8_state(module_settings: SettingsFactory, int8_model: Path) -> None:
    with running(create_app(module_settings(REMBG_MODEL_NAME=str(int8_model), INFERENCE_PRECISION="int8"), ui=False)) as client:
        health = client.get("/api/health").json()
    assert (health["engine"], health["precision"], health["provider"]) == ("openvino", "int8", "OpenVINO CPU int8")
    assert health["int8"].startswith("ready: passed the accuracy gate")


def test_health_says_why_int8_is_off(module_settings: SettingsFactory, int8_model: Path) -> None:
    with running(create_app(module_settings(REMBG_MODEL_NAME=str(int8_model), INFERENCE_PRECISION="f32"), ui=False)) as client:
        health = client.get("/api/health").json()
    assert health["precision"] == "f32" and health["int8"] == "off: INFERENCE_PRECISION=f32"
