"""The layers: core imports no web framework, batch imports nothing of web, and the CLI's --help stays light."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import bgremove.batch
import bgremove.core

ROOT = Path(__file__).resolve().parents[2]


def _modules_loaded_by(packages: list[str]) -> set[str]:
    """Import every module of `packages` in a fresh interpreter; return the top-level names it loaded."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {packages!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def _all_modules(package: object) -> list[str]:
    path = package.__path__  # type: ignore[attr-defined]
    prefix = package.__name__ + "."  # type: ignore[attr-defined]
    return [info.name for info in pkgutil.walk_packages(path, prefix)]


def test_core_never_imports_a_web_framework() -> None:
    modules = _all_modules(bgremove.core)
    assert "bgremove.core.pipeline" in modules and "bgremove.core.options" in modules
    loaded = _modules_loaded_by(modules)
    assert not loaded & {"fastapi", "gradio", "starlette", "uvicorn"}


def test_batch_layer_imports_no_web_code() -> None:
    modules = [name for name in _all_modules(bgremove.batch) if name != "bgremove.batch.ray"]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('bgremove.web') or m in ('fastapi', 'gradio')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
