"""The CLI in-process: `bgremove.cli.main([...])` with settings from environment variables, as a shell gives them."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgremove.core.settings import ENV_NAMES, get_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model: Path) -> Iterator[Path]:
    """A shell for `main()`: only REMBG_MODEL_NAME (the tiny model) and REMBG_SESSION_PATH set, run in tmp_path
    (no ./.env of the checkout), settings re-read. Root logging is restored after (main() configures it)."""
    for variable in set(ENV_NAMES.values()) | {"GRADIO_MCP_SERVER", "REMBG_HOME", "U2NET_HOME"}:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("REMBG_MODEL_NAME", str(tiny_model))
    monkeypatch.setenv("REMBG_SESSION_PATH", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture()
def process_env(tmp_path: Path, tiny_model: Path) -> dict[str, str]:
    """The environment for `python -m bgremove` in a subprocess: this checkout importable, the tiny model,
    no other setting from the shell."""
    env = {key: value for key, value in os.environ.items() if key not in ENV_NAMES.values()}
    return {**env, "PYTHONPATH": str(ROOT), "REMBG_MODEL_NAME": str(tiny_model), "REMBG_SESSION_PATH": str(tmp_path / "home")}
