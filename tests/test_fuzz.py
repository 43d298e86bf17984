"""The hostile-input fuzz cases (scripts/fuzz.py) through REST (in-process), gradio_client and the CLI on the tiny model."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bgremove.core.settings import load_settings
from bgremove.web.app import create_app
from scripts.fuzz import Case, Outcome, generate_cases, run_cli, run_gradio, run_rest, summarise, temp_files
from tests.web.conftest import live, running


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    generated = generate_cases()
    assert len(generated) >= 300
    return generated


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, str]:
    return {
        "REMBG_MODEL_NAME": str(tiny_model),
        "REMBG_SESSION_PATH": str(tmp_path_factory.mktemp("fuzz-home")),
        "DATA_DIR": str(tmp_path_factory.mktemp("fuzz-data")),
    }


def failures(outcomes: list[Outcome]) -> list[str]:
    return [f"{o.channel} {o.case.name}: {o.status} {o.message}" for o in outcomes if not o.ok]


@pytest.mark.slow
def test_rest_answers_every_hostile_input_with_a_clear_4xx_or_a_valid_png(
    cases: list[Case], env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where uploads and batch zips would spill
    with running(create_app(load_settings(env), ui=False), raise_server_exceptions=False) as client:
        outcomes = run_rest(client, cases)
    assert failures(outcomes) == []
    row = summarise(outcomes)["rest"]
    assert row["cases"] == len(cases) and row["5xx"] == 0 and row["crash"] == 0 and row["4xx"] >= 100
    assert temp_files(tmp_path) == set()


@pytest.fixture(scope="module")
def ui_server(env: dict[str, str]) -> Iterator[str]:
    with live(create_app(load_settings(env))) as url:
        yield url


@pytest.mark.slow
def test_gradio_client_answers_hostile_inputs(ui_server: str, cases: list[Case], tmp_path: Path) -> None:
    sample = [case for index, case in enumerate(c for c in cases if c.endpoint == "single") if index % 4 == 0]
    outcomes = run_gradio(ui_server, sample, tmp_path)
    assert failures(outcomes) == []
    assert summarise(outcomes)["gradio_client"]["crash"] == 0


@pytest.mark.slow
def test_cli_answers_hostile_inputs(cases: list[Case], tmp_path: Path, env: dict[str, str]) -> None:
    outcomes = run_cli(cases, tmp_path, env)
    assert failures(outcomes) == []
    assert len(outcomes) == sum(c.endpoint == "single" for c in cases)


def test_a_fuzz_sample_in_process(env: dict[str, str]) -> None:
    """The fast tier's share, in-process: every tenth quick case, and every batch and malformed-form case."""
    sample = [case for index, case in enumerate(generate_cases(quick=True)) if index % 10 == 0 or case.endpoint != "single"]
    with running(create_app(load_settings(env), ui=False), raise_server_exceptions=False) as client:
        assert isinstance(client, TestClient)
        outcomes = run_rest(client, sample)
    assert failures(outcomes) == []
