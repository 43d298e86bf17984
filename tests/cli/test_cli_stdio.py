"""`cat a.jpg | bgremove remove - > a.png`: stdin in, the image bytes alone on stdout, every log on stderr.

Piping needs a real process (fd 1 is claimed for the image); the refusals of impossible uses of `-` run in-process.
"""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bgremove.cli import main
from tests.conftest import decode_png, encode, square_photo

ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def env(process_env: dict[str, str]) -> dict[str, str]:
    return {**process_env, "LOG_LEVEL": "debug"}  # debug: the most noise, all of it on stderr


def run(*args: str, env: dict[str, str], stdin: bytes = b"", cwd: Path = ROOT) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "bgremove", *args], input=stdin, capture_output=True, env=env, cwd=cwd, timeout=300
    )


def assert_cutout(png: bytes, size: tuple[int, int]) -> None:
    assert png.startswith(PNG_SIGNATURE)
    image = decode_png(png)
    assert image.mode == "RGBA" and image.size == size
    alpha = np.asarray(image)[..., 3]
    assert alpha[size[1] // 2, size[0] // 2] > 200 and alpha[1, 1] < 50


@pytest.mark.slow  # a process of its own
def test_stdin_to_stdout_without_o(env: dict[str, str]) -> None:
    done = run("remove", "-", env=env, stdin=encode(square_photo((90, 60)), "JPEG"))
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert_cutout(done.stdout, (90, 60))  # the whole of stdout is one PNG: no log line before or after it
    assert "1 of 1 images written to stdout" in stderr and "Loaded model" in stderr


@pytest.mark.slow  # a process of its own
def test_one_file_to_stdout_in_the_chosen_format(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "a.webp").write_bytes(encode(square_photo((50, 70)), "WEBP", lossless=True))
    done = run("remove", str(tmp_path / "a.webp"), "-o", "-", "--bg-color", "#0000ff", "--format", "jpg", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    image = Image.open(io.BytesIO(done.stdout))
    assert image.format == "JPEG" and image.size == (50, 70)
    red, green, blue = np.asarray(image.convert("RGB"))[0, 0].astype(int)
    assert red < 20 and green < 20 and blue > 235
    assert not (tmp_path / "-").exists()


@pytest.mark.slow  # a process of its own
def test_stdin_to_a_folder_keeps_the_manifest(tmp_path: Path, env: dict[str, str]) -> None:
    done = run("remove", "-", "-o", str(tmp_path / "out"), "--json", env=env, stdin=encode(square_photo(), "PNG"))
    assert done.returncode == 0, done.stderr.decode()
    manifest = json.loads(done.stdout)
    assert manifest["items"][0]["filename"] == "stdin" and manifest["completed"] == 1
    assert_cutout((tmp_path / "out" / "stdin.png").read_bytes(), (200, 120))
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest


@pytest.mark.slow  # a process of its own
def test_bad_stdin_fails_on_stderr_with_empty_stdout(env: dict[str, str]) -> None:
    done = run("remove", "-", env=env, stdin=b"this is not an image")
    assert done.returncode == 1 and done.stdout == b""
    assert "FAILED stdin: stdin is not a supported image" in done.stderr.decode()


@pytest.mark.slow  # a process of its own
def test_stdin_over_the_size_limit_is_refused(env: dict[str, str]) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    big = encode(Image.fromarray(noise), "PNG")
    assert len(big) > 0.1 * 1024 * 1024
    done = run("remove", "-", env={**env, "MAX_IMAGE_SIZE_MB": "0.1"}, stdin=big)
    assert done.returncode == 1 and done.stdout == b""
    assert "FAILED stdin" in done.stderr.decode() and "MAX_IMAGE_SIZE_MB" in done.stderr.decode()


@pytest.mark.slow  # a process of its own
def test_image_bytes_are_not_written_to_a_terminal(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "a.png").write_bytes(encode(square_photo(), "PNG"))
    main_fd, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bgremove", "remove", str(tmp_path / "a.png"), "-o", "-"],
            stdout=terminal,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            timeout=300,
        )
    finally:
        os.close(terminal)
        os.close(main_fd)
    assert done.returncode == 2
    assert "error: not writing image bytes to a terminal" in done.stderr.decode()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["remove", "a.png"], "-o OUTDIR is required (it may be left out only when the one INPUT is -, stdin)"),
        (["remove", "-", "-"], "- (stdin) can be given once"),
        (["remove", "-", "--json"], "--json prints the manifest on stdout, which -o - uses for the image"),
        (["remove", "-", "--engine", "ray"], "- (stdin/stdout) works with --engine local only"),
    ],
)
def test_impossible_uses_of_dash_stop_with_one_line(
    args: list[str], message: str, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: {message}") and err.count("\n") == 1


def test_dash_o_with_many_images_says_to_use_a_folder(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a.png", "b.png"):
        (cli_env / name).write_bytes(encode(square_photo(), "PNG"))
    assert main(["remove", str(cli_env), "-o", "-"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "error: -o - writes one image to stdout, but there are 2 images: use -o OUTDIR\n"
