"""The real model's int8 build (made by `python -m bgremove models pull`, or here if missing: minutes) passes its
accuracy gate, loads as int8 and cuts out the same subject as f32."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from bgremove.core import int8
from bgremove.core.registry import CATALOG
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import load_settings
from bgremove.core.store import file_sha256, find_model_file

pytestmark = [pytest.mark.slow, pytest.mark.real_model]
MODEL = "isnet-general-use"


def test_real_model_int8_passes_the_gate_and_matches_f32() -> None:
    settings = load_settings({"DATA_DIR": "/tmp/bgremove-test-data"})
    path = find_model_file(MODEL, settings)
    assert path is not None, "run `python -m bgremove models pull` first"
    verdict = int8.build(path, CATALOG[MODEL].family, file_sha256(path))  # found at once when pull built it
    assert verdict.passed, verdict.reason
    assert verdict.mean_alpha_diff is not None and verdict.mean_alpha_diff <= int8.GATE.max_mean_alpha_diff
    assert verdict.iou_drop is not None and verdict.iou_drop <= int8.GATE.max_iou_drop

    photo = Image.fromarray(skdata.astronaut())
    quantized = SessionCache(load_settings({"INFERENCE_PRECISION": "int8", "DATA_DIR": "/tmp/bgremove-test-data"})).get()
    floats = SessionCache(load_settings({"INFERENCE_PRECISION": "f32", "DATA_DIR": "/tmp/bgremove-test-data"})).get()
    assert quantized.provider == "OpenVINO CPU int8" and floats.precision == "f32"
    a, b = quantized.predict(photo).masks[0], floats.predict(photo).masks[0]
    assert np.abs(a - b).mean() <= int8.GATE.max_mean_alpha_diff
    union = np.count_nonzero((a > 0.5) | (b > 0.5))
    assert np.count_nonzero((a > 0.5) & (b > 0.5)) / union > 0.98
