"""The suite gives the same answers whatever the developer's shell holds (tests/conftest.py clears it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bgremove.core.settings import ENV_NAMES
from tests.conftest import ROOT, SHELL_VARIABLES


def test_every_documented_variable_is_cleared_for_the_tests() -> None:
    assert set(ENV_NAMES.values()) <= SHELL_VARIABLES and {"GRADIO_MCP_SERVER", "REMBG_HOME", "U2NET_HOME"} <= SHELL_VARIABLES
    assert not SHELL_VARIABLES & set(os.environ)


@pytest.mark.slow  # a process of its own
def test_tests_pass_with_every_documented_variable_set_and_no_python_on_path() -> None:
    """Wrong values for everything (REMBG_SESSION_PATH, API_KEYS, MAX_QUEUE_SIZE=0, ...) and a PATH without this
    interpreter: the settings defaults test and the Dockerfile's `python -m bgremove models pull` line still pass."""
    shell = {name: "0" for name in SHELL_VARIABLES} | {"REMBG_SESSION_PATH": "/nonexistent", "API_KEYS": "k"}
    env = {**os.environ, **shell, "PATH": os.pathsep.join(("/usr/bin", "/bin"))}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:xdist",
            "tests/core/test_settings.py::test_defaults_match_the_documented_ones",
            "tests/test_packaging.py::test_build_stage_pull_command_runs",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 passed" in done.stdout
