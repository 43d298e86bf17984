"""Importing bgremove turns third-party telemetry off before openvino or gradio load.

Each check runs in a fresh interpreter (the test process imported bgremove long ago) with HOME in a temporary
folder, so OpenVINO's usage counter has somewhere visible to go, and with every proxy variable pointing at a closed
loopback port: had the guard failed, the event OpenVINO posts would go to 127.0.0.1, not to Google.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CI_MARKERS = ("CI", "TF_BUILD", "JENKINS_URL", "NNCF_CI", "NNCF_DEV")  # openvino_telemetry stays quiet under these
REPORT = """
import json, os, sys
{prelude}
import openvino
from openvino.tools.ovc import telemetry_utils
print(json.dumps({{"telemetry": telemetry_utils.tm.__name__, "gradio": os.environ.get("GRADIO_ANALYTICS_ENABLED"),
                  "hub": os.environ.get("HF_HUB_DISABLE_TELEMETRY")}}))
"""


def _run(prelude: str, home: Path, **extra: str) -> dict[str, str | None]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in CI_MARKERS and k not in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_DISABLE_TELEMETRY")
    }
    closed = "http://127.0.0.1:9"
    env.update(
        HOME=str(home),
        PYTHONPATH=str(ROOT),
        http_proxy=closed,
        https_proxy=closed,
        HTTP_PROXY=closed,
        HTTPS_PROXY=closed,
        no_proxy="",
        **extra,
    )
    done = subprocess.run(
        [sys.executable, "-c", REPORT.format(prelude=prelude)], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    result: dict[str, str | None] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_openvino_reports_nothing_once_bgremove_is_imported(tmp_path: Path) -> None:
    plain, guarded = tmp_path / "plain", tmp_path / "guarded"
    plain.mkdir(), guarded.mkdir()
    # The premise: without the guard, OpenVINO's import loads its telemetry and counts the import under ~/intel.
    assert _run("", plain)["telemetry"] == "openvino_telemetry"
    assert (plain / "intel").exists()

    report = _run("import bgremove", guarded)
    assert report["telemetry"] == "openvino.tools.ovc.telemetry_stub"
    assert not (guarded / "intel").exists()


@pytest.mark.parametrize(("given", "expected"), [(None, ("False", "1")), (("True", "0"), ("True", "0"))])
def test_gradio_and_hub_telemetry_default_off_and_an_explicit_choice_wins(
    tmp_path: Path, given: tuple[str, str] | None, expected: tuple[str, str]
) -> None:
    extra = {"GRADIO_ANALYTICS_ENABLED": given[0], "HF_HUB_DISABLE_TELEMETRY": given[1]} if given else {}
    report = _run("import bgremove", tmp_path, **extra)
    assert (report["gradio"], report["hub"]) == expected
