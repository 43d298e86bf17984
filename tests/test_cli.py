"""`python -m bgremove` as a user runs it: a folder with a bad file, config errors, a light --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import decode_png, encode, square_photo

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "bgremove", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=300)


def test_folder_with_one_bad_file(tmp_path, tiny_model):
    photos = tmp_path / "photos"
    (photos / "nested").mkdir(parents=True)
    (photos / "a.jpg").write_bytes(encode(square_photo((90, 60)), "JPEG"))
    (photos / "nested" / "b.png").write_bytes(encode(square_photo((50, 70)), "PNG"))
    (photos / "broken.png").write_bytes(encode(square_photo(), "PNG")[:100])
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    env = {"REMBG_MODEL_NAME": str(tiny_model), "REMBG_SESSION_PATH": str(tmp_path / "home")}
    done = run_cli("remove", str(photos), "-o", str(out), env=env)
    assert done.returncode == 1, done.stderr
    assert "2 of 3 images written" in done.stderr
    assert "FAILED broken.png" in done.stderr and "cannot be decoded" in done.stderr
    assert decode_png((out / "a.png").read_bytes()).size == (90, 60)
    nested = decode_png((out / "nested" / "b.png").read_bytes())
    assert nested.size == (50, 70) and np.asarray(nested)[..., 3][35, 25] > 200
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["count"], manifest["completed"], manifest["failed"]) == (3, 2, 1)
    failed = [item for item in manifest["items"] if item["status"] == "failed"]
    assert failed[0]["filename"] == "broken.png" and failed[0]["hint"]
    assert not (out / "notes.png").exists()


def test_all_good_exits_zero_with_options(tmp_path, tiny_model):
    src = tmp_path / "one.webp"
    src.write_bytes(encode(square_photo(), "WEBP"))
    env = {"REMBG_MODEL_NAME": str(tiny_model), "REMBG_SESSION_PATH": str(tmp_path / "home")}
    done = run_cli("remove", str(src), "-o", str(tmp_path / "out"), "--bg-color", "0,0,255", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["completed"] == 1
    assert tuple(np.asarray(decode_png((tmp_path / "out" / "one.png").read_bytes()))[0, 0]) == (0, 0, 255, 255)


def test_bad_setting_stops_with_one_line(tmp_path):
    done = run_cli("models", "list", env={"BATCH_CONCURRENCY": "abc"})
    assert done.returncode == 2
    assert done.stderr.strip() == "error: BATCH_CONCURRENCY='abc' is invalid: expected a whole number >= 1."


def test_unavailable_model_fails_fast_with_the_fix(tmp_path):
    src = tmp_path / "x.png"
    src.write_bytes(encode(square_photo(), "PNG"))
    env = {"REMBG_SESSION_PATH": str(tmp_path / "home"), "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    done = run_cli("remove", str(src), "-o", str(tmp_path / "out"), "--model", "u2netp", env=env)
    assert done.returncode == 2
    assert "python -m bgremove models pull u2netp" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_does_not_load_onnxruntime():
    code = "import sys; from bgremove.cli import build_parser; build_parser().format_help(); print('onnxruntime' in sys.modules, 'rembg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert "remove" in run_cli("--help").stdout


def test_models_list_shows_disk_state(tmp_path, tiny_model):
    home = tmp_path / "home"
    (home / "models" / "u2netp").mkdir(parents=True)
    (home / "models" / "u2netp" / "u2netp.onnx").write_bytes(tiny_model.read_bytes())
    done = run_cli("models", "list", "--json", env={"REMBG_SESSION_PATH": str(home)})
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["u2netp"]["on_disk"] is True and rows["u2net"]["on_disk"] is False
    assert rows["isnet-general-use"]["is_default"] is True
