"""The hostile-input fuzz cases (scripts/fuzz.py) through REST, gradio_client and the CLI on the tiny model."""

from __future__ import annotations


import pytest

from scripts.fuzz import generate_cases, run_cli, run_gradio, run_rest, summarise, temp_files
from tests.conftest import start_server, stop_server


@pytest.fixture(scope="module")
def cases():
    generated = generate_cases()
    assert len(generated) >= 300
    return generated


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory, tiny_model):
    workdir = tmp_path_factory.mktemp("fuzz-server")
    server = start_server(workdir, REMBG_MODEL_NAME=str(tiny_model), REMBG_SESSION_PATH=str(workdir / "home"))
    yield server, workdir
    stop_server(server)


def failures(outcomes) -> list[str]:
    return [f"{o.channel} {o.case.name}: {o.status} {o.message}" for o in outcomes if not o.ok]


def test_rest_answers_every_hostile_input_with_a_clear_4xx_or_a_valid_png(fuzz_server, cases):
    server, workdir = fuzz_server
    before = temp_files(workdir)
    outcomes = run_rest(server.url, cases)
    assert failures(outcomes) == []
    row = summarise(outcomes)["rest"]
    assert row["cases"] == len(cases) and row["5xx"] == 0 and row["crash"] == 0 and row["4xx"] >= 100
    leftovers = {p for p in temp_files(workdir) - before if "gradio" not in p.parts}
    assert leftovers == set()


def test_gradio_client_answers_hostile_inputs(fuzz_server, cases, tmp_path):
    server, _ = fuzz_server
    sample = [case for index, case in enumerate(c for c in cases if c.endpoint == "single") if index % 4 == 0]
    outcomes = run_gradio(server.url, sample, tmp_path)
    assert failures(outcomes) == []
    assert summarise(outcomes)["gradio_client"]["crash"] == 0


def test_cli_answers_hostile_inputs(cases, tmp_path, tiny_model):
    outcomes = run_cli(cases, tmp_path, {"REMBG_MODEL_NAME": str(tiny_model), "REMBG_SESSION_PATH": str(tmp_path / "home")})
    assert failures(outcomes) == []
    assert len(outcomes) == sum(c.endpoint == "single" for c in cases)
