"""The model store: catalog, custom models, offline pull failures, npm assembly, fp16->fp32, atomic writes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bgremove import models
from bgremove.catalog import CATALOG
from bgremove.errors import ModelCorrupt, ModelUnavailable
from bgremove.sessions import SessionCache
from tests.conftest import build_brightness_model

OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


@pytest.fixture()
def offline(monkeypatch):
    """GitHub unreachable for rembg's download, deterministic whether or not this machine has internet."""
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)


def test_catalog_covers_rembg_local_models():
    from rembg.sessions import sessions

    wanted = {"u2net", "u2netp", "u2net_human_seg", "u2net_cloth_seg", "silueta", "isnet-general-use", "isnet-anime",
              "birefnet-general", "birefnet-general-lite", "birefnet-portrait", "birefnet-dis", "birefnet-hrsod",
              "birefnet-cod", "birefnet-massive", "bria-rmbg", "sam"}
    assert wanted <= set(CATALOG)
    assert set(CATALOG) <= set(sessions)  # every entry is a real rembg session
    for spec in CATALOG.values():
        assert spec.size_mb > 0 and spec.input_size in (320, 768, 1024) and spec.license


def test_list_models_reports_disk_state(settings):
    before = {e.name: e.on_disk for e in models.list_models(settings)}
    assert before["u2netp"] is False
    target = models.model_file("u2netp", settings)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    after = {e.name: e.on_disk for e in models.list_models(settings)}
    assert after["u2netp"] is True


def test_custom_model_family_from_input_shape(tmp_path):
    assert models.custom_model_family(build_brightness_model(tmp_path / "a.onnx", 320)) == "u2net"
    assert models.custom_model_family(build_brightness_model(tmp_path / "b.onnx", 1024)) == "isnet"
    with pytest.raises(ModelCorrupt, match="320, 320"):
        models.custom_model_family(build_brightness_model(tmp_path / "c.onnx", 512))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"definitely not protobuf" * 10)
    with pytest.raises(ModelCorrupt, match="not a usable ONNX model"):
        models.custom_model_family(garbage)


def test_isnet_family_custom_model_loads_outside_rembg_home(tmp_path, make_settings):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = build_brightness_model(elsewhere / "isnet-like.onnx", 1024)
    settings = make_settings(REMBG_MODEL_NAME=str(path))
    loaded = SessionCache(settings).get()
    assert loaded.session.size == (1024, 1024) and loaded.session.mean == (0.5, 0.5, 0.5)  # rembg's dis_custom inputs
    assert not str(path).startswith(str(settings.session_path))


def test_offline_pull_of_github_only_model_says_what_to_do(settings, offline):
    with pytest.raises(ModelUnavailable) as caught:
        models.pull("u2netp", settings)
    err = caught.value
    assert "rembg's download from GitHub failed" in err.message
    assert "python -m bgremove models pull u2netp" in err.hint
    model_dir = settings.session_path / "models" / "u2netp"
    assert not model_dir.exists() or not any(model_dir.iterdir())  # nothing half-written


def test_offline_pull_without_npm_says_so(settings, offline, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ModelUnavailable) as caught:
        models.pull("isnet-general-use", settings)
    assert "npm is not installed" in caught.value.message
    assert not models.is_on_disk("isnet-general-use", settings)


def test_offline_pull_with_unreachable_registry_says_so(settings, offline, monkeypatch, tmp_path):
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "empty-npm-cache"))
    with pytest.raises(ModelUnavailable) as caught:
        models.pull("isnet-general-use", settings)
    assert "npm pack @imgly/background-removal-data@1.4.5" in caught.value.message
    assert not models.is_on_disk("isnet-general-use", settings)
    leftovers = list((settings.session_path / "models" / "isnet-general-use").iterdir())
    assert leftovers == []  # the temporary download folder is gone


def test_force_pull_that_fails_keeps_the_old_file(settings, offline):
    target = models.model_file("u2netp", settings)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"old model")
    with pytest.raises(ModelUnavailable):
        models.pull("u2netp", settings, force=True)
    assert target.read_bytes() == b"old model"


def test_corrupt_model_on_disk_names_the_fix(settings):
    target = models.model_file("u2netp", settings)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\x08\x01garbage" * 100)
    with pytest.raises(ModelCorrupt) as caught:
        SessionCache(settings).get("u2netp")
    assert "corrupt or incomplete" in caught.value.message
    assert "python -m bgremove models pull u2netp --force" in caught.value.hint


def _fake_npm_tarball(path: Path, payload: bytes, chunk: int, tamper: bool = False) -> Path:
    chunks, index = [], []
    for start in range(0, len(payload), chunk):
        blob = payload[start : start + chunk]
        digest = hashlib.sha256(blob).hexdigest()
        chunks.append((digest, blob if not tamper or start else blob[::-1]))
        index.append({"hash": digest, "offsets": [start, start + len(blob)]})
    resources = {"/models/medium": {"chunks": index, "size": len(payload), "mime": "application/octet-stream"}}
    with tarfile.open(path, "w:gz") as archive:
        for name, blob in [("package/dist/resources.json", json.dumps(resources).encode()), *[(f"package/dist/{d}", b) for d, b in chunks]]:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    return path


def test_assemble_checks_every_chunk(tmp_path):
    payload = os.urandom(10_000)
    assert models.assemble_npm_model(_fake_npm_tarball(tmp_path / "ok.tgz", payload, 4096)) == payload
    with pytest.raises(ModelUnavailable, match="sha256"):
        models.assemble_npm_model(_fake_npm_tarball(tmp_path / "bad.tgz", payload, 4096, tamper=True))


def test_fp16_to_fp32_keeps_outputs(tmp_path):
    weights = np.random.RandomState(0).rand(4, 3, 3, 3).astype(np.float16)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input"], ["x16"], to=TensorProto.FLOAT16),
            helper.make_node("Conv", ["x16", "w"], ["y16"], pads=[1, 1, 1, 1]),
            helper.make_node("Cast", ["y16"], ["output"], to=TensorProto.FLOAT),
        ],
        "fp16",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    fp16_bytes = model.SerializeToString()
    fp32_bytes = models.fp16_to_fp32(fp16_bytes)
    converted = onnx.load_from_string(fp32_bytes)
    assert all(init.data_type == TensorProto.FLOAT for init in converted.graph.initializer)
    x = np.random.RandomState(1).rand(1, 3, 8, 8).astype(np.float32)
    run = lambda blob: ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]  # noqa: E731
    assert np.abs(run(fp16_bytes) - run(fp32_bytes)).max() < 0.01
