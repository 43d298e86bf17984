"""The real isnet-general-use end to end (CI provisions it with `python -m bgremove models pull`)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from bgremove.core.options import parse_options
from bgremove.core.pipeline import Result, decode, remove_background
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings, load_settings
from tests.conftest import REAL_MODEL_HOME, decode_png

pytestmark = [pytest.mark.slow, pytest.mark.real_model]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def real() -> tuple[Settings, SessionCache]:
    settings = load_settings({"DATA_DIR": "/tmp/bgremove-test-data", "REMBG_SESSION_PATH": str(REAL_MODEL_HOME)})
    assert settings.model_name == "isnet-general-use"
    return settings, SessionCache(settings)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def run(real: tuple[Settings, SessionCache], array: np.ndarray, **options: object) -> Result:
    settings, cache = real
    return remove_background(png_bytes(array), "photo.png", parse_options(options), settings=settings, cache=cache)


def test_astronaut_person_kept_background_removed(real: tuple[Settings, SessionCache]) -> None:
    result = run(real, skdata.astronaut())
    image = decode_png(result.data)
    assert image.mode == "RGBA" and image.size == (512, 512)
    alpha = np.asarray(image)[..., 3] / 255.0
    assert alpha[300:480, 100:300].mean() > 0.9  # the orange suit
    assert alpha[60:200, 180:280].mean() > 0.9  # face and hair
    for patch in (alpha[:20, :20], alpha[:20, -20:], alpha[150:250, :40], alpha[150:250, -40:]):
        assert patch.mean() < 0.05
    assert result.model == "isnet-general-use" and result.foreground_found


@pytest.mark.parametrize("photo", ["astronaut", "chelsea", "coffee"])
def test_confident_subject_is_fully_opaque_and_background_fully_clear(real: tuple[Settings, SessionCache], photo: str) -> None:
    """Issue 17.10: rembg's scaling left ~96% of near-opaque pixels at 254; confident pixels are now exactly 255 / 0.

    What stays between 250 and 254 is where the model itself is less sure (inside fur, say), not a scaling artefact.
    """
    alpha = np.asarray(decode_png(run(real, getattr(skdata, photo)(), channels="alpha").data)).astype(int)
    near_opaque = alpha >= 250
    assert (alpha[near_opaque] == 255).mean() > 0.75
    assert (alpha == 254).sum() < 0.05 * near_opaque.sum()
    near_clear = alpha <= 5
    assert (alpha[near_clear] == 0).mean() > 0.95


@pytest.mark.parametrize("photo", ["astronaut", "coffee"])
def test_alpha_agrees_with_rembg_on_the_same_model(real: tuple[Settings, SessionCache], photo: str) -> None:
    """Quality guard: the mask is rembg's (same model, same maths); edges are refined, not moved."""
    from rembg import new_session, remove

    image = getattr(skdata, photo)()
    theirs = np.asarray(remove(Image.fromarray(image), session=new_session("isnet-general-use")))[..., 3].astype(int)
    ours = np.asarray(decode_png(run(real, image, channels="alpha").data)).astype(int)
    intersection = ((theirs > 127) & (ours > 127)).sum()
    union = ((theirs > 127) | (ours > 127)).sum()
    assert intersection / union > 0.98
    assert np.abs(theirs - ours).mean() < 4


def test_a_drafted_jpeg_gives_the_full_decodes_preview(real: tuple[Settings, SessionCache]) -> None:
    """size=preview of a 4800x3600 JPEG is decoded at 1/2 (2400x1800, still above the model's 1024): the same cutout."""
    settings, cache = real
    buffer = io.BytesIO()
    Image.fromarray(skdata.astronaut()).resize((4800, 3600), Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=92)
    data = buffer.getvalue()
    options = parse_options({"size": "preview"})
    assert decode(data, "astronaut.jpg", options, settings).image.size == (2400, 1800)
    full_pixels = png_bytes(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))  # a PNG is never drafted
    drafted, full = (
        remove_background(photo, name, options, settings=settings, cache=cache)
        for photo, name in ((data, "astronaut.jpg"), (full_pixels, "astronaut.png"))
    )
    assert (drafted.width, drafted.height) == (full.width, full.height) == (577, 433)
    mine, theirs = (np.asarray(decode_png(r.data))[..., 3].astype(float) for r in (drafted, full))
    error = np.abs(mine - theirs)
    assert error.mean() < 0.5 and np.quantile(error, 0.999) < 32  # measured: 0.055 and 10


def test_cli_on_a_folder_of_photos_with_no_network(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea", "coffee"):
        Image.fromarray(getattr(skdata, name)()).save(photos / f"{name}.jpg", quality=95)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
        "DATA_DIR": str(tmp_path / "data"),
        "REMBG_SESSION_PATH": str(REAL_MODEL_HOME),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bgremove", "remove", str(photos), "-o", str(tmp_path / "out"), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for name, source in (("chelsea", skdata.chelsea()), ("coffee", skdata.coffee())):
        image = decode_png((tmp_path / "out" / f"{name}.png").read_bytes())
        assert image.size == (source.shape[1], source.shape[0])
        alpha = np.asarray(image)[..., 3]
        assert 0.05 < (alpha > 128).mean() < 0.95  # something kept, something removed
    cat = np.asarray(decode_png((tmp_path / "out" / "chelsea.png").read_bytes()))[..., 3] / 255.0
    assert cat[150:250, 150:300].mean() > 0.9  # the cat's face
