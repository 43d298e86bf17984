"""`remove --engine ray` on a real local Ray (2 CPUs): the local engine's outputs and manifest, resuming, URIs,
the CLI door. Starting Ray takes a while, so the tests that need it are `slow`; the two that prove Ray's absence
or an unreachable cluster end in one line are fast."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from skimage import data as photos_data

from bgremove.batch.engine import inputs_from_paths
from bgremove.core.options import RemovalOptions, parse_options
from bgremove.core.settings import ENV_NAMES, Settings, load_settings
from tests.conftest import encode, free_port, square_photo

ROOT = Path(__file__).resolve().parents[2]
EXIF_ORIENTATION = 0x0112
OPTIONS = ["--format", "webp", "--quality", "80"]  # outputs take the format's extension at both engines
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's own deprecated defaults


def run_cli(*args: str, env: dict[str, str], code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "bgremove", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def shipped_modules() -> set[str]:
    """The bgremove modules a Ray worker finds in the job's runtime_env upload (none when nothing was shipped).

    Looked for on the worker's path rather than by importing: on this machine the driver's folder (the checkout)
    is on the workers' path too, while a remote node has only the upload."""
    import ray

    @ray.remote
    def shipped() -> list[str]:
        found: list[str] = []
        for entry in map(Path, sys.path):
            if "py_modules_files" in entry.parts and (entry / "bgremove" / "__init__.py").is_file():
                found.extend(path.relative_to(entry).as_posix() for path in (entry / "bgremove").rglob("*.py"))
        return found

    return set(ray.get(shipped.remote()))


def assert_the_package_is_shipped() -> None:
    """The one Ray recipe's mark (bgremove.batch.executors.ray_init_arguments): this package as a py_module."""
    import ray

    shipped = ray.get_runtime_context().runtime_env.get("py_modules") or []
    assert len(shipped) == 1 and shipped[0].endswith(".zip"), shipped  # gcs://_ray_pkg_<hash of bgremove/>.zip
    checkout = {path.relative_to(ROOT).as_posix() for path in (ROOT / "bgremove").rglob("*.py")}
    assert shipped_modules() == checkout


def without_seconds(manifest: dict[str, Any]) -> dict[str, Any]:
    return {**manifest, "items": [{k: v for k, v in item.items() if k != "seconds"} for item in manifest["items"]]}


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.webp"))}


def mtimes(folder: Path) -> dict[str, int]:
    return {name: (folder / name).stat().st_mtime_ns for name in outputs(folder)}


def manifest_of(folder: Path) -> dict[str, Any]:
    return without_seconds(json.loads((folder / "manifest.json").read_text()))


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
    base = {key: value for key, value in os.environ.items() if key not in ENV_NAMES.values()}
    return {
        **base,
        "PYTHONPATH": str(ROOT),
        "REMBG_MODEL_NAME": str(tiny_model),
        "REMBG_SESSION_PATH": str(tmp_path_factory.mktemp("rembg-home")),
    }


@pytest.fixture(scope="module")
def settings(env: dict[str, str]) -> Settings:
    """What `python -m bgremove` builds from the same environment."""
    return load_settings({"REMBG_MODEL_NAME": env["REMBG_MODEL_NAME"], "REMBG_SESSION_PATH": env["REMBG_SESSION_PATH"]})


@pytest.fixture(scope="module")
def options() -> RemovalOptions:
    return parse_options({"format": "webp", "quality": "80"})


@pytest.fixture(scope="module")
def local_run(photos: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the local engine, as a user runs it."""
    out = tmp_path_factory.mktemp("local") / "out"
    done = run_cli("remove", str(photos), "-o", str(out), *OPTIONS, env=env)
    assert done.returncode == 1, done.stderr  # 1: one file failed
    return out


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """One local Ray with 2 CPUs for the module; yields its address for `--address`."""
    import ray  # requirements-dev installs requirements-ray.txt: CI always has it

    from bgremove.batch import ray as ray_engine

    environ = dict(os.environ)  # ray.init sets RAY_AUTH_MODE; the CLI subprocess below inherits it to join
    ray_engine.connect(num_cpus=2)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(environ)


def run_ray(
    source: Path | str,
    out: Path | str,
    settings: Settings,
    options: RemovalOptions,
    on_result: Callable[[Any], None] | None = None,
) -> Any:
    from bgremove.batch import ray as ray_engine

    plan = ray_engine.plan_batch([source], out, options, settings=settings)
    return ray_engine.run_ray_batch(plan, workers=2, on_result=on_result)


@pytest.mark.slow
def test_the_engine_ships_this_package_to_the_workers(ray_cluster: str) -> None:
    """`connect` (the CLI's --engine ray) joins with the recipe JOB_EXECUTOR=ray uses (tests/jobs/test_ray.py)."""
    assert_the_package_is_shipped()


@pytest.mark.slow
def test_same_outputs_and_manifest_as_the_local_engine(
    ray_cluster: str, photos: Path, local_run: Path, settings: Settings, options: RemovalOptions, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    report = run_ray(photos, out, settings, options)

    assert report.workers == 2 and report.resumed == 0
    assert report.skipped_files == [str(photos / "notes.txt")]
    expected = outputs(local_run)
    assert sorted(expected) == [
        "astronaut.webp",
        "camera.webp",
        "chelsea-2.webp",
        "chelsea.webp",
        "nested/coffee.webp",
        "nested/deeper/rocket.webp",
    ]
    assert outputs(out) == expected  # byte for byte
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == report.manifest
    assert without_seconds(manifest) == manifest_of(local_run)
    assert (manifest["count"], manifest["completed"], manifest["failed"]) == (7, 6, 1)
    broken = next(item for item in manifest["items"] if item["filename"] == "broken.jpg")
    assert broken["status"] == "failed" and "cannot be decoded" in broken["error"] and broken["hint"]
    rotated = next(item for item in manifest["items"] if item["filename"] == "chelsea.jpg")
    assert (rotated["width"], rotated["height"], rotated["format"]) == (300, 451, "webp")
    with Image.open(out / "camera.webp") as camera:
        assert camera.size == (512, 512) and np.asarray(camera.convert("RGBA")).shape == (512, 512, 4)


@pytest.mark.slow
def test_an_actor_reads_the_next_photo_while_one_is_in_the_model(
    ray_cluster: str, settings: Settings, options: RemovalOptions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One actor, six photos: every forward pass but the last finds another photo of the same actor being read,
    decoded, encoded or written, and the actor never holds more photos than BATCH_CONCURRENCY (tests/batch/ray_probe.py)."""
    from ray import cloudpickle

    from bgremove.batch import ray as ray_engine
    from tests.batch import ray_probe

    source = tmp_path / "in"
    source.mkdir()
    for number in range(ray_probe.ROWS):  # all different: a repeated photo would reuse its cached prediction
        (source / f"p{number}.png").write_bytes(encode(square_photo((120 + 8 * number, 90)), "PNG"))
    monkeypatch.setattr(ray_engine, "RemovalWorker", ray_probe.WatchedWorker)
    cloudpickle.register_pickle_by_value(ray_probe)
    try:
        plan = ray_engine.plan_batch([source], tmp_path / "out", options, settings=settings)
        report = ray_engine.run_ray_batch(plan, workers=1)
    finally:
        cloudpickle.unregister_pickle_by_value(ray_probe)

    assert report.manifest["completed"] == ray_probe.ROWS
    assert len(outputs(tmp_path / "out")) == ray_probe.ROWS
    tallies = [json.loads(path.read_text()) for path in (tmp_path / "out.probe").glob("*.json")]
    assert len(tallies) == 1  # one actor did it all
    assert tallies[0]["reads"] == tallies[0]["passes"] == ray_probe.ROWS
    assert tallies[0]["alone"] == 0  # no pass ran with nothing else in work (one row at a time: 5 of 6 would)
    assert tallies[0]["peak"] == settings.batch_concurrency == 2  # overlapped, and bounded


@pytest.mark.slow
def test_a_killed_run_leaves_the_manifest_of_what_it_finished(
    ray_cluster: str, photos: Path, settings: Settings, options: RemovalOptions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """manifest.json is rewritten while the batch runs (here after every item), so a rerun can resume."""
    from bgremove.batch import ray as ray_engine

    monkeypatch.setattr(ray_engine, "CHECKPOINT_SECONDS", 0.0)
    out = tmp_path / "out"
    seen: list[tuple[int, bool]] = []

    def look(_: Any) -> None:  # what a kill at this moment would leave behind
        if (out / "manifest.json").is_file():
            manifest = json.loads((out / "manifest.json").read_text())
            done = [item for item in manifest["items"] if item["status"] == "completed"]
            seen.append((manifest["count"], all((out / item["output"]).is_file() for item in done)))

    report = run_ray(photos, out, settings, options, on_result=look)
    assert report.manifest["count"] == 7
    counts = [count for count, _ in seen]
    assert counts == sorted(counts) and counts[0] > 0 and counts[-1] >= 5 and all(whole for _, whole in seen)


@pytest.mark.slow
def test_rerun_keeps_whole_outputs_and_redoes_damaged_ones(
    ray_cluster: str, photos: Path, local_run: Path, settings: Settings, options: RemovalOptions, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(local_run, out)  # a local engine's run resumes too: same names, same manifest
    (out / "camera.webp").write_bytes((local_run / "camera.webp").read_bytes()[:3000])  # truncated by a kill
    (out / "nested" / "coffee.webp").unlink()
    (out / "chelsea.webp").write_bytes(encode(Image.new("RGBA", (10, 10)), "WEBP"))  # whole, but not the listed size
    kept = {name: stamp for name, stamp in mtimes(out).items() if name not in ("camera.webp", "chelsea.webp")}

    report = run_ray(photos, out, settings, options)
    assert report.resumed == 3  # astronaut, chelsea-2, rocket
    assert outputs(out) == outputs(local_run)
    assert {name: stamp for name, stamp in mtimes(out).items() if name in kept} == kept
    assert manifest_of(out) == manifest_of(local_run)  # the kept items' entries carried over whole

    before = mtimes(out)
    again = run_ray(photos, out, settings, options)
    assert again.resumed == 6  # nothing left to do; the bad file fails again, as it should
    assert mtimes(out) == before and manifest_of(out) == manifest_of(local_run)
    assert not list(out.rglob("*.partial"))

    other_format = run_ray(photos, out, settings, parse_options({"format": "png"}))
    assert other_format.resumed == 0 and (out / "camera.png").is_file()  # other names: nothing to keep


@pytest.mark.slow
def test_uris_go_through_pyarrow_fs(
    ray_cluster: str, photos: Path, local_run: Path, settings: Settings, options: RemovalOptions, tmp_path: Path
) -> None:
    """file:// takes the s3:// code path: listing, reading and writing through a pyarrow FileSystem."""
    from bgremove.batch import ray as ray_engine

    by_uri, skipped = ray_engine.inputs_from_uri(photos.as_uri(), settings)
    by_path, _ = inputs_from_paths([photos], settings)
    assert [item.name for item in by_uri] == [item.name for item in by_path]
    assert skipped == [photos.as_uri() + "/notes.txt"]

    out = tmp_path / "out"
    report = run_ray(photos.as_uri(), out.as_uri(), settings, options)
    assert report.manifest["completed"] == 6
    assert outputs(out) == outputs(local_run)
    assert manifest_of(out) == manifest_of(local_run)


@pytest.mark.slow
def test_cli_joins_a_running_cluster(
    ray_cluster: str, photos: Path, local_run: Path, env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = run_cli(
        "remove",
        str(photos),
        "-o",
        str(out),
        *OPTIONS,
        "--engine",
        "ray",
        "--address",
        ray_cluster,
        "--workers",
        "2",
        "--json",
        env=env,
    )
    assert done.returncode == 1, done.stderr
    assert "6 of 7 images written" in done.stderr and "FAILED broken.jpg" in done.stderr
    assert without_seconds(json.loads(done.stdout)) == manifest_of(local_run)
    assert outputs(out) == outputs(local_run)


def test_without_ray_the_cli_says_what_to_install(photos: Path, env: dict[str, str], tmp_path: Path) -> None:
    block_ray = "import sys; sys.modules['ray'] = None; from bgremove.cli import main; sys.exit(main(sys.argv[1:]))"
    done = run_cli("remove", str(photos), "-o", str(tmp_path / "out"), "--engine", "ray", env=env, code=block_ray)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "pip install -r requirements-ray.txt" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # imports Ray in a subprocess
def test_unreachable_cluster_fails_in_one_line(photos: Path, env: dict[str, str], tmp_path: Path) -> None:
    done = run_cli(
        "remove", str(photos), "-o", str(tmp_path / "out"), "--engine", "ray", "--address", f"127.0.0.1:{free_port()}", env=env
    )
    assert done.returncode == 2, done.stderr
    assert "No Ray cluster answers at 127.0.0.1:" in done.stderr and "ray start --head" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()
