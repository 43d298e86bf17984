"""The CLI says which engine and precision ran (--json) and would run (models list)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bgremove.cli import main
from bgremove.core.settings import get_settings
from tests.conftest import encode, square_photo


def test_json_manifest_names_engine_and_precision(
    cli_env: Path, int8_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INFERENCE_PRECISION", "int8")
    (cli_env / "in.png").write_bytes(encode(square_photo(), "PNG"))
    assert main(["remove", "in.png", "-o", "out", "-m", str(int8_model), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert (manifest["engine"], manifest["precision"]) == ("openvino", "int8")


def test_models_list_names_what_each_model_runs_on(
    cli_env: Path, int8_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = cli_env / "home" / "models" / "u2netp" / "u2netp.onnx"
    target.parent.mkdir(parents=True)
    target.write_bytes(int8_model.read_bytes())  # weights with no int8 build beside them
    monkeypatch.setenv("INFERENCE_ENGINE", "openvino")
    assert main(["models", "list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["u2netp"]["int8"].startswith("not built yet") and rows["u2netp"]["engine"] == "openvino"
    assert rows["u2net"]["int8"] == "model not on disk"
    monkeypatch.setenv("INFERENCE_PRECISION", "f32")
    get_settings.cache_clear()  # main() reads the process settings once
    assert main(["models", "list"]) == 0
    assert "u2netp: int8 off: INFERENCE_PRECISION=f32" in capsys.readouterr().out
