"""`bgremove remove PHOTO --keep-mask PATH --remove-mask PATH`: the strokes fix the cutout; several inputs, a
missing hint file and a bad hint are refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bgremove.cli import main
from tests.conftest import decode_png
from tests.touchup_cases import LEFTOVER, MISSED, region_alpha, touchup_case


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keep_and_remove_masks_fix_the_cutout(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = touchup_case()
    (cli_env / "p.png").write_bytes(case.photo)
    (cli_env / "keep.png").write_bytes(case.keep_mask)
    (cli_env / "remove.png").write_bytes(case.remove_mask)
    code, _, err = run(capsys, "remove", "p.png", "-o", "plain")
    assert code == 0, err
    code, _, err = run(capsys, "remove", "p.png", "-o", "out", "--keep-mask", "keep.png", "--remove-mask", "remove.png")
    assert code == 0, err
    before = np.asarray(decode_png((cli_env / "plain" / "p.png").read_bytes()).getchannel("A"))
    after = np.asarray(decode_png((cli_env / "out" / "p.png").read_bytes()).getchannel("A"))
    assert region_alpha(before, MISSED) < 0.5 and region_alpha(after, MISSED) > 0.95
    assert region_alpha(before, LEFTOVER) > 0.9 and region_alpha(after, LEFTOVER) < 0.05


def test_hints_need_exactly_one_input(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = touchup_case()
    for name in ("a.png", "b.png", "keep.png"):
        (cli_env / name).write_bytes(case.photo if name != "keep.png" else case.keep_mask)
    code, _, err = run(capsys, "remove", "a.png", "b.png", "-o", "out", "--keep-mask", "keep.png")
    assert code == 2
    assert err == "error: --keep-mask is drawn over one photo, but there are 2 images: give one INPUT image\n"
    assert not (cli_env / "out").exists()


def test_unreadable_and_bad_hints_are_refused(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = touchup_case()
    (cli_env / "p.png").write_bytes(case.photo)
    code, _, err = run(capsys, "remove", "p.png", "-o", "out", "--remove-mask", "missing.png")
    assert code == 2 and err.startswith("error: --remove-mask missing.png cannot be read") and err.count("\n") == 1
    (cli_env / "bad.png").write_bytes(b"not an image")
    code, _, err = run(capsys, "remove", "p.png", "-o", "out", "--remove-mask", "bad.png")
    assert code == 1 and "FAILED p.png: remove_mask is not a supported image" in err
