"""The documentation stays true: the README is a front page, the generated tables match the code, every relative
link and anchor resolves, and the README's door examples run as written against a live `python app.py`."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from bgremove.core import registry
from bgremove.core.options import IMAGE_INPUTS, RemovalOptions
from bgremove.core.settings import Settings, setting
from scripts import gen_docs
from tests.conftest import encode, square_photo, start_server, stop_server

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def code_blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


# --- the front page -----------------------------------------------------------------------------------------------


def test_readme_is_a_front_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    commands = [line.strip() for block in code_blocks(text, "bash") for line in block.splitlines()]
    assert "pip install -e . && python app.py" in commands  # start
    assert "bash scripts/test.sh" in commands  # test
    assert 'python -m pytest -m "not slow" -n auto' in commands  # the fast tier
    for screenshot in ("assets/screenshot-single.png", "assets/screenshot-batch.png"):
        assert f"]({screenshot})" in text
    for page in ("removebg", "jobs", "configuration", "models", "deploying", "security", "performance", "troubleshooting",
                 "architecture"):  # fmt: skip
        assert f"](docs/{page}.md)" in text, page


# --- generated pages ----------------------------------------------------------------------------------------------


def test_generated_pages_match_the_code(tmp_path: Path) -> None:
    """Regenerated into a temporary folder (never over the tracked files) and compared."""
    assert gen_docs.main(["--out", str(tmp_path)]) == 0
    for page in gen_docs.PAGES:
        fresh, tracked = (tmp_path / page).read_text(), (ROOT / "docs" / page).read_text()
        assert fresh == tracked, f"docs/{page} is stale: run python scripts/gen_docs.py"


def test_check_fails_on_a_stale_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", copy)
    page = copy / "configuration.md"
    page.write_text(page.read_text().replace("| `MAX_IMAGE_PIXELS` | `64000000` |", "| `MAX_IMAGE_PIXELS` | `1` |"))
    assert gen_docs.main(["--check", "--docs", str(copy)]) == 1
    assert "configuration.md is stale" in capsys.readouterr().err
    assert gen_docs.main(["--check", "--docs", str(ROOT / "docs")]) == 0


def test_a_new_setting_model_or_option_needs_no_generator_edit(monkeypatch: pytest.MonkeyPatch) -> None:
    class More(Settings):
        future_knob: int = setting(3, "FUTURE_KNOB", "a whole number >= 1", ge=1)
        """Something added later."""

    assert "| `FUTURE_KNOB` | `3` | a whole number >= 1 | Something added later. |" in gen_docs.settings_table(More)

    spec = registry.CATALOG["u2netp"]
    monkeypatch.setitem(registry.CATALOG, "u2netp-next", registry.ModelSpec("u2netp-next", spec.family, "next", "tests", 7,
                                                                             spec.download))  # fmt: skip
    assert "| `u2netp-next` | tests | u2net | 320 | 7 MB | Apache-2.0 |" in gen_docs.models_table()

    rows = gen_docs.options_table().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == [*RemovalOptions.model_fields, *IMAGE_INPUTS]


# --- links --------------------------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: inline markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        target_path = (page.parent / path_part).resolve() if path_part else page
        if not target_path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and target_path.suffix == ".md" and anchor not in anchors(target_path):
            broken.append(f"{target}: no heading #{anchor} in {target_path.name}")
    assert not broken, broken


def test_the_link_checker_sees_links_and_anchors() -> None:
    """The checker above would catch a broken link: it finds the README's links and GitHub's anchor spellings."""
    assert "docs/removebg.md" in relative_links(README)
    assert slug("Python (`gradio_client`) and MCP") == "python-gradio_client-and-mcp"
    assert slug("Scale out with Ray (`--engine ray`)") == "scale-out-with-ray---engine-ray"
    assert "mcp-tools-for-ai-assistants" in anchors(ROOT / "docs" / "python.md")


# --- the README's examples, run as written --------------------------------------------------------------------------


def door_examples() -> tuple[list[str], list[str]]:
    """The README's shell commands that talk to a door (curl, the CLI) and its Python snippets."""
    text = README.read_text()
    shell = [
        line.strip()
        for block in code_blocks(text, "bash")
        for line in block.splitlines()
        if line.strip().startswith(("curl ", "python -m bgremove "))
    ]
    return shell, code_blocks(text, "python")


@pytest.mark.slow  # a live server, subprocesses
def test_readme_door_examples_run_as_written(tmp_path: Path, tiny_model: Path) -> None:
    shell, snippets = door_examples()
    assert any("/api/remove" in line for line in shell) and any("/api/jobs" in line for line in shell)
    assert any(" remove " in line for line in shell) and any(" jobs " in line for line in shell)
    assert any("gradio_client" in snippet for snippet in snippets) and any("/v1.0/removebg" in s for s in snippets)

    work = tmp_path / "work"
    (work / "photos").mkdir(parents=True)
    (work / "photo.jpg").write_bytes(encode(square_photo((200, 120)), "JPEG"))
    for name in ("a.png", "b.png"):
        (work / "photos" / name).write_bytes(encode(square_photo((90, 60)), "PNG"))
    model_env = {"REMBG_MODEL_NAME": str(tiny_model), "REMBG_SESSION_PATH": str(tmp_path / "home")}
    server = start_server(tmp_path / "server", **model_env, API_KEYS="", MCP_SERVER="0", LOG_LEVEL="info", LOG_FORMAT="text")
    shell_settings = {"LOG_LEVEL", "LOG_FORMAT", "API_KEYS", "BGREMOVE_API_KEY", "MAX_IMAGE_SIZE_MB", "MAX_IMAGE_PIXELS"}
    env = {key: value for key, value in os.environ.items() if key not in shell_settings}
    env.update(model_env, BGREMOVE_SERVER=server.url, PYTHONPATH=str(ROOT))
    outputs: dict[str, str] = {}
    try:
        for line in shell:
            command = line.replace("http://127.0.0.1:7860", server.url)
            command = re.sub(r"^python ", shlex.quote(sys.executable) + " ", command)
            done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
            outputs[line] = done.stdout
        for index, snippet in enumerate(snippets):
            script = work / f"snippet{index}.py"
            script.write_text(snippet.replace("http://127.0.0.1:7860", server.url))
            done = subprocess.run([sys.executable, script.name], cwd=work, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{snippet}\n{done.stdout}\n{done.stderr}"
            outputs[snippet] = done.stdout
    finally:
        stop_server(server)

    cutout = Image.open(work / "cutout.png")
    assert (cutout.format, cutout.mode, cutout.size) == ("PNG", "RGBA", (200, 120))
    assert Image.open(work / "product.jpg").format == "JPEG"
    no_bg = Image.open(work / "no-bg.png")  # the remove.bg snippet saved its answer
    assert (no_bg.format, no_bg.mode) == ("PNG", "RGBA")
    [gradio_out] = [out for snippet, out in outputs.items() if "gradio_client" in snippet]
    saved = Path(gradio_out.strip().splitlines()[-1])
    assert saved.name == "photo-nobg.webp" and Image.open(saved).format == "WEBP"
    [job] = [json.loads(out) for line, out in outputs.items() if line.startswith("curl") and "/api/jobs" in line]
    assert job["status"] in ("queued", "running", "done") and job["total"] == 1
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    assert (manifest["count"], manifest["completed"]) == (3, 3)
    assert {item["output"] for item in manifest["items"]} == {"photo.webp", "a.webp", "b.webp"}
    results = json.loads((work / "results" / "manifest.json").read_text())
    assert results["completed"] == 2 and {p.name for p in (work / "results").iterdir()} >= {"a.png", "b.png"}

    log = server.log()
    assert "POST /api/remove" in log  # requests are logged at INFO ...
    assert "GET /api/health" not in log  # ... health polls (start_server polled until ready) are not
