"""`remove --engine ray` on a real local Ray (2 CPUs): the local engine's PNGs and manifest, resuming, the CLI door."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
from PIL import Image
from skimage import data as photos_data

from bgremove import ray_engine
from bgremove.batch import inputs_from_paths
from bgremove.config import Settings, load_settings
from bgremove.pipeline import RemovalOptions
from tests.conftest import decode_png, encode, free_port

ROOT = Path(__file__).resolve().parents[1]
EXIF_ORIENTATION = 0x0112
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's own deprecated defaults


def run_cli(*args: str, env: dict[str, str], code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "bgremove", *args]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                          cwd=ROOT, timeout=300)


def without_seconds(manifest: dict[str, Any]) -> dict[str, Any]:
    return {**manifest, "items": [{k: v for k, v in item.items() if k != "seconds"} for item in manifest["items"]]}


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def mtimes(folder: Path) -> dict[str, int]:
    return {name: (folder / name).stat().st_mtime_ns for name in pngs(folder)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 real photos (JPEG with EXIF rotation, PNG, grey PNG, WebP, nested folders, two files both named
    chelsea.*), 1 truncated JPEG and 1 text file."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "nested" / "deeper").mkdir(parents=True)
    (folder / "astronaut.jpg").write_bytes(encode(Image.fromarray(photos_data.astronaut()), "JPEG", quality=90))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored landscape, shown rotated: the output is 300 wide, 451 high
    (folder / "chelsea.jpg").write_bytes(encode(Image.fromarray(photos_data.chelsea()), "JPEG", quality=90, exif=exif))
    (folder / "chelsea.png").write_bytes(encode(Image.fromarray(photos_data.chelsea()), "PNG"))
    (folder / "camera.png").write_bytes(encode(Image.fromarray(photos_data.camera()), "PNG"))
    (folder / "nested" / "coffee.webp").write_bytes(encode(Image.fromarray(photos_data.coffee()), "WEBP", quality=90))
    (folder / "nested" / "deeper" / "rocket.jpg").write_bytes(encode(Image.fromarray(photos_data.rocket()), "JPEG"))
    (folder / "broken.jpg").write_bytes((folder / "astronaut.jpg").read_bytes()[:400])
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, str]:
    return {"REMBG_MODEL_NAME": str(tiny_model), "REMBG_SESSION_PATH": str(tmp_path_factory.mktemp("rembg-home"))}


@pytest.fixture(scope="module")
def settings(env: dict[str, str]) -> Settings:
    """What `python -m bgremove` builds from the same environment."""
    return load_settings({**os.environ, **env})


@pytest.fixture(scope="module")
def local_run(photos: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the local engine, as a user runs it."""
    out = tmp_path_factory.mktemp("local") / "out"
    done = run_cli("remove", str(photos), "-o", str(out), env=env)
    assert done.returncode == 1, done.stderr  # 1: one file failed
    return out


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """One local Ray with 2 CPUs for the module; yields its address for `--address`."""
    environ = dict(os.environ)  # ray.init sets RAY_AUTH_MODE; the CLI subprocess below inherits it to join
    ray_engine.connect(num_cpus=2)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(environ)


def run_ray(photos: Path | str, out: Path | str, settings: Settings) -> ray_engine.RayBatchReport:
    plan = ray_engine.plan_batch([photos], out, RemovalOptions(), settings=settings)
    return ray_engine.run_ray_batch(plan, workers=2)


def test_same_pngs_and_manifest_as_the_local_engine(ray_cluster, photos, local_run, settings, tmp_path):
    out = tmp_path / "out"
    report = run_ray(photos, out, settings)

    assert report.workers == 2 and report.resumed == 0
    assert report.skipped_files == [str(photos / "notes.txt")]
    expected = pngs(local_run)
    assert sorted(expected) == ["astronaut.png", "camera.png", "chelsea-2.png", "chelsea.png",
                                "nested/coffee.png", "nested/deeper/rocket.png"]
    assert pngs(out) == expected  # byte for byte
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == report.manifest
    assert without_seconds(manifest) == without_seconds(json.loads((local_run / "manifest.json").read_text()))
    assert (manifest["count"], manifest["completed"], manifest["failed"]) == (7, 6, 1)
    broken = next(item for item in manifest["items"] if item["filename"] == "broken.jpg")
    assert broken["status"] == "failed" and "cannot be decoded" in broken["error"] and broken["hint"]
    rotated = next(item for item in manifest["items"] if item["filename"] == "chelsea.jpg")
    assert (rotated["width"], rotated["height"]) == (300, 451)
    assert np.asarray(decode_png(expected["camera.png"])).shape == (512, 512, 4)


def test_rerun_skips_valid_outputs_and_redoes_damaged_ones(ray_cluster, photos, local_run, settings, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(local_run, out)  # a local engine's run resumes too: same names, same files
    (out / "manifest.json").unlink()  # as if the earlier run had been killed before writing it
    (out / "camera.png").write_bytes((local_run / "camera.png").read_bytes()[:5000])  # truncated by the kill
    (out / "nested" / "coffee.png").unlink()
    (out / "chelsea.png").write_bytes(encode(Image.new("RGBA", (10, 10)), "PNG"))  # valid PNG, wrong size
    kept = {name: stamp for name, stamp in mtimes(out).items() if name not in ("camera.png", "chelsea.png")}

    report = run_ray(photos, out, settings)
    assert report.resumed == 3  # astronaut, chelsea-2, rocket
    assert pngs(out) == pngs(local_run)
    assert {name: stamp for name, stamp in mtimes(out).items() if name in kept} == kept
    reference = without_seconds(json.loads((local_run / "manifest.json").read_text()))
    assert without_seconds(json.loads((out / "manifest.json").read_text())) == reference

    before = mtimes(out)
    again = run_ray(photos, out, settings)
    assert again.resumed == 6  # nothing left to do; the bad file fails again, as it should
    assert mtimes(out) == before
    assert without_seconds(again.manifest) == reference
    assert not list(out.rglob("*.partial"))


def test_uris_go_through_pyarrow_fs(ray_cluster, photos, local_run, settings, tmp_path):
    """file:// takes the s3:// code path: listing, reading and writing through a pyarrow FileSystem."""
    by_uri, skipped = ray_engine.inputs_from_uri(photos.as_uri(), settings)
    by_path, _ = inputs_from_paths([photos], settings)
    assert [item.name for item in by_uri] == [item.name for item in by_path]
    assert skipped == [photos.as_uri() + "/notes.txt"]

    out = tmp_path / "out"
    report = run_ray(photos.as_uri(), out.as_uri(), settings)
    assert report.manifest["completed"] == 6
    assert pngs(out) == pngs(local_run)
    assert without_seconds(json.loads((out / "manifest.json").read_text())) == without_seconds(
        json.loads((local_run / "manifest.json").read_text()))


def test_cli_joins_a_running_cluster(ray_cluster, photos, local_run, env, tmp_path):
    out = tmp_path / "out"
    done = run_cli("remove", str(photos), "-o", str(out), "--engine", "ray", "--address", ray_cluster,
                   "--workers", "2", "--json", env=env)
    assert done.returncode == 1, done.stderr
    assert "6 of 7 images written" in done.stderr and "FAILED broken.jpg" in done.stderr
    reference = without_seconds(json.loads((local_run / "manifest.json").read_text()))
    assert without_seconds(json.loads(done.stdout)) == reference
    assert pngs(out) == pngs(local_run)


def test_without_ray_the_cli_says_what_to_install(photos, env, tmp_path):
    block_ray = "import sys; sys.modules['ray'] = None; from bgremove.cli import main; sys.exit(main(sys.argv[1:]))"
    done = run_cli("remove", str(photos), "-o", str(tmp_path / "out"), "--engine", "ray", env=env, code=block_ray)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "pip install -r requirements-ray.txt" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_unreachable_cluster_fails_in_seconds(photos, env, tmp_path):
    done = run_cli("remove", str(photos), "-o", str(tmp_path / "out"), "--engine", "ray",
                   "--address", f"127.0.0.1:{free_port()}", env=env)
    assert done.returncode == 2, done.stderr
    assert "No Ray cluster answers at 127.0.0.1:" in done.stderr and "ray start --head" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_local_engine_stays_ray_free(photos, env, tmp_path):
    code = "import sys; from bgremove.cli import build_parser; build_parser().format_help(); print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          check=True).stdout.strip() == "False"
    done = run_cli("remove", "s3://bucket/photos", "-o", str(tmp_path / "out"), env=env)
    assert done.returncode == 2 and "URIs need --engine ray: s3://bucket/photos" in done.stderr
