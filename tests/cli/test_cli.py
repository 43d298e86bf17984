"""`bgremove ...` as a user runs it, in-process (`main([...])`): folders with a bad file, the output-folder rule,
every output option at once, models list / pull, settings errors, and a --help that loads nothing heavy."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bgremove.cli import main
from bgremove.core.pipeline import METADATA_KEYS
from tests.conftest import decode_png, encode, square_photo, zip_of

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_folder_with_one_bad_file(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos = cli_env / "photos"
    (photos / "nested").mkdir(parents=True)
    (photos / "a.jpg").write_bytes(encode(square_photo((90, 60)), "JPEG"))
    (photos / "nested" / "b.png").write_bytes(encode(square_photo((50, 70)), "PNG"))
    (photos / "broken.png").write_bytes(encode(square_photo(), "PNG")[:100])
    (photos / "notes.txt").write_text("not an image")
    out = cli_env / "out"

    code, _, err = run(capsys, "remove", str(photos), "-o", str(out))

    assert code == 1, err
    assert "2 of 3 images written" in err and "skipped 1 non-image files" in err
    assert "FAILED broken.png" in err and "cannot be decoded" in err
    assert decode_png((out / "a.png").read_bytes()).size == (90, 60)
    nested = decode_png((out / "nested" / "b.png").read_bytes())
    assert nested.size == (50, 70) and np.asarray(nested)[..., 3][35, 25] > 200
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["count"], manifest["completed"], manifest["failed"]) == (3, 2, 1)
    failed = [item for item in manifest["items"] if item["status"] == "failed"]
    assert failed[0]["filename"] == "broken.png" and failed[0]["hint"]
    assert not (out / "notes.png").exists()


def test_the_issue_example_with_every_output_option(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cli_env / "in.jpg").write_bytes(encode(square_photo((400, 240)), "JPEG", quality=95))
    (cli_env / "bg.jpg").write_bytes(encode(Image.new("RGB", (40, 40), (200, 30, 30)), "JPEG"))

    code, out, err = run(
        capsys,
        "remove",
        "in.jpg",
        "-o",
        "out/",
        "--size",
        "hd",
        "--crop",
        "--crop-margin",
        "20px",
        "--format",
        "webp",
        "--bg-color",
        "ffffff",
        "--bg-image",
        "bg.jpg",
        "--scale",
        "80%",
        "--position",
        "center",
        "--add-shadow",
        "--channels",
        "alpha",
        "--roi",
        "0% 0% 100% 100%",
        "--quality",
        "90",
        "--json",
    )

    assert code == 0, err
    manifest = json.loads(out)
    [item] = manifest["items"]
    assert set(METADATA_KEYS) - {"error", "hint"} <= set(item)  # the shared keys, as at every door
    assert item["output"] == "in.webp" and item["format"] == "webp" and item["foreground_found"] is True
    with Image.open(cli_env / "out" / "in.webp") as image:
        assert image.format == "WEBP" and image.size == (item["width"], item["height"])
    # Cropped to the 200x120 subject plus 20 px a side, then the subject scaled to 80% of that canvas.
    assert (item["width"], item["height"]) == (240, 160)
    assert json.loads((cli_env / "out" / "manifest.json").read_text()) == manifest


def test_one_output_folder_rule_for_folders_zips_and_files(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every input's images keep their paths relative to that input, at the root of OUTDIR; repeats get -2, -3."""
    photo = encode(square_photo((60, 40)), "PNG")
    (cli_env / "photos" / "sub").mkdir(parents=True)
    (cli_env / "photos" / "a.jpg").write_bytes(encode(square_photo((60, 40)), "JPEG"))
    (cli_env / "photos" / "sub" / "b.png").write_bytes(photo)
    (cli_env / "shots.zip").write_bytes(zip_of({"a.png": photo, "nested/c.webp": encode(square_photo(), "WEBP")}))
    (cli_env / "single").mkdir()
    (cli_env / "single" / "a.webp").write_bytes(encode(square_photo(), "WEBP"))

    code, _, err = run(capsys, "remove", "photos", "shots.zip", "single/a.webp", "-o", "out", "--format", "jpg")

    assert code == 0, err
    out = cli_env / "out"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a-2.jpg", "a-3.jpg", "a.jpg", "manifest.json", "nested/c.jpg", "sub/b.jpg"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(item["filename"], item["output"]) for item in manifest["items"]] == [
        ("a.jpg", "a.jpg"),
        ("sub/b.png", "sub/b.jpg"),
        ("a.png", "a-2.jpg"),
        ("nested/c.webp", "nested/c.jpg"),
        ("a.webp", "a-3.jpg"),
    ]
    assert Image.open(out / "nested" / "c.jpg").format == "JPEG"


def test_bg_image_lies_behind_the_subject(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cli_env / "in.png").write_bytes(encode(square_photo((80, 60)), "PNG"))
    (cli_env / "bg.png").write_bytes(encode(Image.new("RGB", (20, 20), (0, 0, 255)), "PNG"))

    code, _, err = run(capsys, "remove", "in.png", "-o", "out", "--bg-image", "bg.png")
    assert code == 0, err
    pixels = np.asarray(decode_png((cli_env / "out" / "in.png").read_bytes()).convert("RGBA"))
    assert tuple(pixels[0, 0]) == (0, 0, 255, 255) and pixels[30, 40, 0] > 200  # blue corner, the grey subject

    code, _, err = run(capsys, "remove", "in.png", "-o", "out", "--bg-image", "missing.png")
    assert code == 2 and err.startswith("error: --bg-image missing.png cannot be read") and err.count("\n") == 1


def test_custom_model_path_is_the_runs_model(
    cli_env: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REMBG_MODEL_NAME")
    (cli_env / "in.png").write_bytes(encode(square_photo(), "PNG"))

    code, out, err = run(capsys, "remove", "in.png", "-o", "out", "-m", str(tiny_model), "--json")

    assert code == 0, err
    manifest = json.loads(out)
    assert manifest["model"] == str(tiny_model.resolve()) and manifest["items"][0]["model"] == tiny_model.name
    assert "REMBG_MODEL_NAME" not in os.environ  # the run's settings, not the process environment


def test_unavailable_model_fails_fast_in_one_line(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    (cli_env / "x.png").write_bytes(encode(square_photo(), "PNG"))

    code, _, err = run(capsys, "remove", "x.png", "-o", "out", "--model", "u2netp")

    assert code == 2
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert "u2netp" in line and str(cli_env / "home" / "models" / "u2netp" / "u2netp.onnx") in line
    assert "Traceback" not in err and not (cli_env / "out").exists()


def test_bad_setting_stops_with_one_line(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BATCH_CONCURRENCY", "abc")
    code, _, err = run(capsys, "models", "list")
    assert code == 2
    assert err == "error: BATCH_CONCURRENCY='abc' is invalid: expected a whole number >= 1.\n"


def test_models_list_reports_the_weights_on_disk(cli_env: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Licence, source and checksum are those of the file on disk: an unrecognised file says `unknown`."""
    target = cli_env / "home" / "models" / "u2netp" / "u2netp.onnx"
    target.parent.mkdir(parents=True)
    target.write_bytes(tiny_model.read_bytes())

    code, out, _ = run(capsys, "models", "list", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["u2netp"]["on_disk"] is True and rows["u2net"]["on_disk"] is False
    assert (rows["u2netp"]["license"], rows["u2netp"]["source"]) == ("unknown", "unknown")
    assert rows["u2netp"]["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()
    assert rows["u2net"]["sha256"] is None and rows["u2net"]["source"].startswith("https://")
    assert rows["isnet-general-use"]["is_default"] is False  # the tiny model is the default here

    code, out, _ = run(capsys, "models", "list")
    table = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip() and not line.startswith("*")}
    assert table["u2netp"].split()[1:2] == ["yes"] and "unknown" in table["u2netp"]
    assert "Apache-2.0" in table["u2net"] and "github.com" in table["u2net"]


def test_models_pull_tries_every_name(
    cli_env: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    present = cli_env / "home" / "models" / "u2netp" / "u2netp.onnx"
    present.parent.mkdir(parents=True)
    present.write_bytes(tiny_model.read_bytes())

    code, out, err = run(capsys, "models", "pull", "silueta", "u2netp", "u2net_human_seg")

    assert code == 1
    assert out == f"u2netp: {present}\n"  # the one on disk, although the name before it failed
    failures = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(failures) == 2
    assert "'silueta'" in failures[0] and "'u2net_human_seg'" in failures[1]
    assert all("refused" in line for line in failures)

    code, _, err = run(capsys, "models", "pull", "no-such-model")
    assert code == 2 and err.startswith("error: Unknown model 'no-such-model'.")


def test_missing_inputs_and_uris_without_ray(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "remove", "nowhere.png", "-o", "out")
    assert (code, err) == (2, "error: no such file or folder: nowhere.png\n")
    code, _, err = run(capsys, "remove", "s3://bucket/photos", "-o", "out")
    assert (code, err) == (2, "error: URIs need --engine ray: s3://bucket/photos\n")
    assert not (cli_env / "out").exists()


def test_help_loads_nothing_heavy_and_states_the_folder_rule() -> None:
    code = (
        "import json, sys\n"
        "from bgremove.cli import main\n"
        "try:\n    main(['remove', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('onnxruntime', 'openvino', 'gradio', 'fastapi', 'rembg', 'ray', 'cv2', 'bgremove.core.pipeline', 'httpx')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert json.loads(done.stderr.strip().splitlines()[-1]) == []
    text = " ".join(done.stdout.split())
    assert "every input's images keep their paths relative to that input" in text and "a name given twice gets -2" in text
    assert "--size {preview,medium,hd,full}" in text and "--no-decontaminate" in text


def test_version() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0


def test_output_bytes_match_the_chosen_format(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cli_env / "in.png").write_bytes(encode(square_photo((64, 48)), "PNG"))
    code, _, err = run(capsys, "remove", "in.png", "-o", "out", "--format", "zip")
    assert code == 0, err
    with zipfile.ZipFile(io.BytesIO((cli_env / "out" / "in.zip").read_bytes())) as archive:
        assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
