"""The registry: the catalog matches rembg's models and downloads, and each family's maths matches rembg's sessions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from skimage import data as skdata

from bgremove.core.engines import image_tensor
from bgremove.core.registry import CATALOG, Birefnet, Cloth, min_max
from bgremove.core.sessions import SessionCache
from tests.conftest import REAL_MODEL_HOME
from tests.core.conftest import build_cloth_model, build_square_model

ROOT = Path(__file__).resolve().parents[2]
RELEASE_MODELS = {"u2net", "u2netp", "u2net_human_seg", "u2net_cloth_seg", "silueta", "isnet-general-use", "isnet-anime",
                  "birefnet-general", "birefnet-general-lite", "birefnet-portrait", "birefnet-dis", "birefnet-hrsod",
                  "birefnet-cod", "birefnet-massive", "bria-rmbg"}  # fmt: skip
# One catalog model per family: rembg's session class for it is the reference.
FAMILY_MODELS = ["u2netp", "isnet-general-use", "isnet-anime", "birefnet-general", "bria-rmbg"]


def test_table_import_stays_cheap():
    """settings validates REMBG_MODEL_NAME against the table, so importing it must not load numpy or the engines."""
    code = "import sys, bgremove.core.settings; print(sorted({'numpy', 'onnxruntime', 'openvino', 'rembg'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_catalog_is_rembgs_local_models_without_sam():
    from rembg.sessions import sessions

    assert set(CATALOG) == RELEASE_MODELS | {"birefnet-general-fp16"}
    assert set(CATALOG) <= set(sessions)  # every entry is a real rembg model name
    for spec in CATALOG.values():
        assert spec.size_mb > 0 and spec.input_size in (320, 768, 1024) and spec.license


def test_downloads_are_rembgs_urls_and_checksums(tmp_path, monkeypatch):
    """Our table carries rembg's URL and checksum for every model (read from rembg's own download code, offline)."""
    import pooch
    from rembg.sessions import sessions

    class Asked(Exception):
        pass

    def record(url: str, known_hash: str | None, **kwargs: object) -> str:
        raise Asked(url, known_hash)

    monkeypatch.setattr(pooch, "retrieve", record)
    monkeypatch.delenv("U2NET_HOME", raising=False)
    monkeypatch.delenv("MODEL_CHECKSUM_DISABLED", raising=False)
    monkeypatch.setenv("REMBG_HOME", str(tmp_path))  # empty: rembg must ask pooch for every file
    for name in sorted(RELEASE_MODELS):
        with pytest.raises(Asked) as asked:
            sessions[name].download_models()
        assert asked.value.args == (CATALOG[name].download.url, CATALOG[name].download.checksum), name
    assert CATALOG["birefnet-general-fp16"].download.converted_from == "birefnet-general"


@pytest.fixture()
def family_home(tmp_path, monkeypatch):
    """A model home where each family's model is a tiny squares graph, visible to rembg and to us."""
    home = tmp_path / "home"
    for name in FAMILY_MODELS:
        build_square_model(home / "models" / name / f"{name}.onnx", CATALOG[name].input_size)
    build_cloth_model(home / "models" / "u2net_cloth_seg" / "u2net_cloth_seg.onnx")
    monkeypatch.delenv("U2NET_HOME", raising=False)
    monkeypatch.setenv("REMBG_HOME", str(home))
    return home


def rembg_session(name: str):
    from rembg.sessions import sessions

    return sessions[name](name, ort.SessionOptions(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_family_maths_match_rembg(name, family_home, make_settings):
    """Preprocessing (LANCZOS, scale, mean/std) and postprocessing (sigmoid, min-max) are rembg's, per family."""
    side = CATALOG[name].input_size
    ours = SessionCache(make_settings(REMBG_SESSION_PATH=str(family_home), INFERENCE_ENGINE="onnxruntime")).get(name)
    theirs = rembg_session(name)
    family = CATALOG[name].family

    odd = Image.fromarray(skdata.astronaut()).resize((333, 211))
    expected = theirs.normalize(odd, family.mean, family.std, (side, side))
    assert np.abs(image_tensor(odd, side, family.mean, family.std) - next(iter(expected.values()))).max() < 1e-5

    photo = Image.fromarray(skdata.astronaut()).resize((side, side))  # rembg's resizes are then identities
    prediction = ours.predict(photo)
    (mask,) = prediction.masks
    assert mask.shape == (side, side) and mask.dtype == np.float32 and mask.min() >= 0 and mask.max() <= 1
    rembg_mask = np.asarray(theirs.predict(photo)[0], dtype=np.float32)
    assert np.abs(mask * 255 - rembg_mask).max() < 1.01  # rembg truncates to uint8

    output = theirs.inner_session.run(None, theirs.normalize(photo, family.mean, family.std, (side, side)))[0][0, 0]
    raw = 1 / (1 + np.exp(-output)) if family is Birefnet else output
    assert np.allclose(prediction.raw, raw, atol=1e-4)  # the first mask before min-max (after sigmoid)
    assert np.allclose(min_max(prediction.raw), mask)


def test_cloth_gives_rembgs_three_masks(family_home, make_settings):
    """Upper body, lower body, full body: rembg's argmax and palettes, at the model's 768x768."""
    pixels = np.zeros((768, 768, 3), dtype=np.uint8)
    pixels[:, :256] = (230, 20, 20)  # red: upper body
    pixels[:, 256:512] = (20, 230, 20)  # green: lower body
    pixels[:, 512:] = (20, 20, 230)  # blue: full body
    pixels[:100] = 0  # black: background (every class score negative)
    photo = Image.fromarray(pixels)
    # No background int8 build: a process of its own that would outlive the test (and could swap the model mid-test).
    settings = make_settings(REMBG_SESSION_PATH=str(family_home), QUANTIZE_ON_LOAD="false")
    ours = SessionCache(settings).get("u2net_cloth_seg")
    prediction = ours.predict(photo)
    rembg_masks = [np.asarray(mask) for mask in rembg_session("u2net_cloth_seg").predict(photo)]
    assert len(prediction.masks) == len(rembg_masks) == 3 and Cloth.mask_names == ("upper body", "lower body", "full body")
    for ours_mask, rembg_mask in zip(prediction.masks, rembg_masks, strict=True):
        assert ours_mask.shape == (768, 768) and ours_mask.dtype == np.float32
        assert np.array_equal(ours_mask * 255, rembg_mask.astype(np.float32))
    assert prediction.masks[0][400, 100] == 1 and prediction.masks[1][400, 400] == 1 and prediction.masks[2][400, 700] == 1
    assert all(mask[:100].max() == 0 for mask in prediction.masks)
    assert prediction.raw[400, 100] > 0.5 > prediction.raw[400, 400]  # softmax probability of "upper body"


def test_constant_output_is_all_background():
    """rembg divides by zero here (NaN, then 0 as uint8); we say so without the NaN."""
    flat = np.full((8, 8), 0.3, dtype=np.float32)
    assert np.array_equal(min_max(flat), np.zeros((8, 8), dtype=np.float32))


@pytest.mark.real_model
@pytest.mark.slow
def test_real_isnet_matches_rembg(make_settings, monkeypatch):
    """The real isnet-general-use: our masks are rembg's new_session(...).predict within 2/255."""
    home = REAL_MODEL_HOME
    assert (home / "models" / "isnet-general-use" / "isnet-general-use.onnx").is_file(), (
        f"isnet-general-use is not in {home}: run `python -m bgremove models pull` (scripts/test.sh does)"
    )
    monkeypatch.setenv("REMBG_HOME", str(home))
    monkeypatch.setenv("U2NET_HOME", str(home))
    from rembg import new_session

    theirs = new_session("isnet-general-use", providers=["CPUExecutionProvider"])
    ours = SessionCache(make_settings(REMBG_SESSION_PATH=str(home), REMBG_MODEL_NAME="isnet-general-use",
                                      INFERENCE_ENGINE="onnxruntime")).get()  # fmt: skip

    square = Image.fromarray(skdata.astronaut()).resize((1024, 1024), Image.Resampling.BICUBIC)
    mask = ours.predict(square).masks[0] * 255
    assert np.abs(mask - np.asarray(theirs.predict(square)[0], dtype=np.float32)).max() <= 2

    odd = Image.fromarray(skdata.coffee())  # 600x400: rembg resizes in and out; we compare after its resize
    ours_odd = Image.fromarray((ours.predict(odd).masks[0] * 255).astype(np.uint8)).resize(odd.size, Image.Resampling.LANCZOS)
    difference = np.abs(np.asarray(ours_odd, dtype=int) - np.asarray(theirs.predict(odd)[0], dtype=int))
    assert difference.max() <= 2 and difference.mean() < 0.05
