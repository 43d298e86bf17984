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

from bgremove.core.settings import get_settings
from bgremove.core.pipeline import remove_background
from tests.conftest import decode_png

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real_settings():
    settings = get_settings()
    assert settings.model_name == "isnet-general-use"
    return settings


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def test_astronaut_person_kept_background_removed(real_settings):
    result = remove_background(jpeg(skdata.astronaut()), "astronaut.jpg", settings=real_settings)
    image = decode_png(result.png)
    assert image.mode == "RGBA" and image.size == (512, 512)
    alpha = np.asarray(image)[..., 3] / 255.0
    assert alpha[300:480, 100:300].mean() > 0.9  # the orange suit
    assert alpha[60:200, 180:280].mean() > 0.9  # face and hair
    # Background: the top corners and the wall at both sides (the suit and helmet reach the bottom corners).
    for patch in (alpha[:20, :20], alpha[:20, -20:], alpha[150:250, :40], alpha[150:250, -40:]):
        assert patch.mean() < 0.05
    assert result.model == "isnet-general-use"


def test_cli_on_a_folder_of_photos_with_no_network(tmp_path, real_settings):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea", "coffee"):
        (photos / f"{name}.jpg").write_bytes(jpeg(getattr(skdata, name)()))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": ""}
    done = subprocess.run([sys.executable, "-m", "bgremove", "remove", str(photos), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    for name, source in (("chelsea", skdata.chelsea()), ("coffee", skdata.coffee())):
        image = decode_png((tmp_path / "out" / f"{name}.png").read_bytes())
        assert image.size == (source.shape[1], source.shape[0])
        alpha = np.asarray(image)[..., 3]
        assert 0.05 < (alpha > 128).mean() < 0.95  # something kept, something removed
    cat = np.asarray(decode_png((tmp_path / "out" / "chelsea.png").read_bytes()))[..., 3] / 255.0
    assert cat[150:250, 150:300].mean() > 0.9  # the cat's face


@pytest.mark.parametrize("photo", ["astronaut", "coffee"])
def test_alpha_matches_rembg_itself(real_settings, photo):
    """Quality guard: the faster engine must not change what users get from rembg."""
    from rembg import new_session, remove

    image = Image.fromarray(getattr(skdata, photo)())
    theirs = np.asarray(remove(image, session=new_session("isnet-general-use")))[..., 3].astype(int)
    ours = np.asarray(decode_png(remove_background(png_bytes(image), settings=real_settings).png))[..., 3].astype(int)
    difference = np.abs(theirs - ours)
    assert difference.mean() < 1 and difference.max() < 8, (difference.mean(), difference.max())


def png_bytes(image: Image.Image) -> bytes:
    """PNG bytes of the same pixels rembg got (a JPEG round trip would change them)."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
