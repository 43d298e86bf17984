"""`cat a.jpg | python -m bgremove remove - > a.png`: stdin in, PNG bytes alone on stdout, every log on stderr."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import decode_png, encode, square_photo

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def env(tmp_path: Path, tiny_model: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "REMBG_MODEL_NAME": str(tiny_model),
            "REMBG_SESSION_PATH": str(tmp_path / "home"), "LOG_LEVEL": "debug"}  # debug: the most noise, all on stderr


def run(*args: str, env: dict[str, str], stdin: bytes = b"", cwd: Path = ROOT) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "bgremove", *args], input=stdin, capture_output=True, env=env,
                          cwd=cwd, timeout=300)


def assert_cutout(png: bytes, size: tuple[int, int]) -> None:
    assert png.startswith(PNG_SIGNATURE)
    image = decode_png(png)
    assert image.mode == "RGBA" and image.size == size
    alpha = np.asarray(image)[..., 3]
    assert alpha[size[1] // 2, size[0] // 2] > 200 and alpha[1, 1] < 50


def test_stdin_to_stdout_without_o(env):
    done = run("remove", "-", env=env, stdin=encode(square_photo((90, 60)), "JPEG"))
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert_cutout(done.stdout, (90, 60))  # the whole of stdout is one PNG: no log line before or after it
    assert "1 of 1 images written to stdout" in stderr and "Loaded model" in stderr


def test_one_file_to_stdout_with_dash_o(tmp_path, env):
    (tmp_path / "a.webp").write_bytes(encode(square_photo((50, 70)), "WEBP", lossless=True))
    done = run("remove", str(tmp_path / "a.webp"), "-o", "-", "--bg-color", "#0000ff", env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert tuple(np.asarray(decode_png(done.stdout))[0, 0]) == (0, 0, 255, 255)
    assert not (ROOT / "-").exists()


def test_stdin_to_a_folder_keeps_the_manifest(tmp_path, env):
    done = run("remove", "-", "-o", str(tmp_path / "out"), "--json", env=env, stdin=encode(square_photo(), "PNG"))
    assert done.returncode == 0, done.stderr.decode()
    manifest = json.loads(done.stdout)
    assert manifest["items"][0]["filename"] == "stdin" and manifest["completed"] == 1
    assert_cutout((tmp_path / "out" / "stdin.png").read_bytes(), (200, 120))
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest


def test_bad_stdin_fails_on_stderr_with_empty_stdout(env):
    done = run("remove", "-", env=env, stdin=b"this is not an image")
    assert done.returncode == 1 and done.stdout == b""
    assert "FAILED stdin: stdin is not a supported image" in done.stderr.decode()


def test_stdin_over_the_size_limit_is_refused(env):
    noise = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    big = encode(Image.fromarray(noise), "PNG")
    done = run("remove", "-", env={**env, "MAX_IMAGE_SIZE_MB": "0.1"}, stdin=big)
    assert len(big) > 0.1 * 1024 * 1024
    assert done.returncode == 1 and done.stdout == b""
    assert "FAILED stdin" in done.stderr.decode() and "MAX_IMAGE_SIZE_MB" in done.stderr.decode()


@pytest.mark.parametrize(("args", "message"), [
    (["remove", "a.png"], "-o OUTDIR is required (it may be left out only when the one INPUT is -, stdin)"),
    (["remove", "-", "-"], "- (stdin) can be given once"),
    (["remove", "-", "--json"], "--json prints the manifest on stdout, which -o - uses for the PNG"),
    (["remove", "-", "--engine", "ray"], "- (stdin/stdout) works with --engine local only"),
])
def test_impossible_uses_of_dash_stop_with_one_line(env, args, message):
    done = run(*args, env=env)
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode().startswith(f"error: {message}")
    assert "Traceback" not in done.stderr.decode()


def test_dash_o_with_many_images_says_to_use_a_folder(tmp_path, env):
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(encode(square_photo(), "PNG"))
    done = run("remove", str(tmp_path), "-o", "-", env=env)
    assert done.returncode == 2 and done.stdout == b""
    assert "error: -o - writes one PNG to stdout, but there are 2 images: use -o OUTDIR" in done.stderr.decode()


def test_png_is_not_written_to_a_terminal(tmp_path, env):
    (tmp_path / "a.png").write_bytes(encode(square_photo(), "PNG"))
    main_fd, terminal = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "bgremove", "remove", str(tmp_path / "a.png"), "-o", "-"],
                              stdout=terminal, stderr=subprocess.PIPE, env=env, cwd=ROOT, timeout=300)
    finally:
        os.close(terminal)
        os.close(main_fd)
    assert done.returncode == 2
    assert "error: not writing PNG bytes to a terminal" in done.stderr.decode()
