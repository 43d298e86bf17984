"""Edges: full-resolution alpha, foreground colour estimation and subject confidence, on composites whose truth
is known by construction (no model), plus one real-model check of the no-subject signal."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bgremove.core import edges

HEIGHT, WIDTH = 360, 480


def textured(colour: tuple[int, int, int], seed: int, shape: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    """A colour with blotchy texture (a fabric or fur stand-in), float in [0, 1]."""
    rng = np.random.default_rng(seed)
    noise = cv2.resize(rng.normal(0, 1, (shape[0] // 12, shape[1] // 12)).astype(np.float32), shape[::-1])
    base = np.asarray(colour, np.float32)[None, None] / 255
    return np.clip(base + noise[..., None] * 0.08, 0, 1)


def disc(soft: float, shape: tuple[int, int] = (HEIGHT, WIDTH), radius: float = 110.0) -> np.ndarray:
    """Alpha of a centred disc whose edge ramps from 1 to 0 over `soft` px."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    distance = np.hypot(yy - shape[0] / 2, xx - shape[1] / 2)
    return np.clip((radius - distance) / soft + 0.5, 0, 1).astype(np.float32)


def composite(alpha: np.ndarray, fore: np.ndarray, back: np.ndarray | tuple[int, int, int]) -> np.ndarray:
    """Straight-alpha over: float 0..255."""
    back_f = np.asarray(back, np.float32) / 255 if isinstance(back, tuple) else back
    a = alpha[..., None]
    return (a * fore + (1 - a) * back_f) * 255


@pytest.fixture(scope="module")
def red_disc_on_blue() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photo uint8, true alpha, true foreground float): a red textured disc with a 20 px soft edge on dark blue."""
    alpha = disc(soft=20)
    fore = textured((200, 40, 30), seed=1)
    back = textured((20, 40, 150), seed=2)
    photo = np.clip(composite(alpha, fore, back) + 0.5, 0, 255).astype(np.uint8)
    return photo, alpha, fore


# ---------------------------------------------------------------- full_resolution_alpha
def test_confident_pixels_are_exactly_zero_and_one_and_the_edge_stays_float(
    red_disc_on_blue: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    photo, true_alpha, _ = red_disc_on_blue
    mask = cv2.resize(true_alpha, (256, 256), interpolation=cv2.INTER_AREA)
    mask = np.clip(mask * 0.996 + 0.002, 0, 1)  # the model's 'nearly': interior 0.998, background 0.002
    for refine in (True, False):
        alpha = edges.full_resolution_alpha(mask, photo, refine=refine)
        assert alpha.dtype == np.float32 and alpha.shape == (HEIGHT, WIDTH)
        assert np.all(alpha[true_alpha == 1.0] == 1.0)  # issue 17.10: 255, not 254
        assert np.all(alpha[true_alpha == 0.0] == 0.0)
        edge = alpha[(alpha > 0) & (alpha < 1)]
        assert edge.size > 2000  # a soft 20 px ramp all round, not a hard cut
        assert np.unique(edge).size > 256  # float upsampling, not a uint8 copy
        assert np.abs(alpha - true_alpha).mean() < 0.01


def test_the_subject_core_is_opaque_even_where_the_model_sags() -> None:
    """scikit-image's cat: 40% of the face at 0.9-0.97 from the model; deep inside the subject is 1.0."""
    mask = disc(soft=4, shape=(256, 256), radius=90) * 0.93
    photo = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    alpha = edges.full_resolution_alpha(mask, photo, refine=False)
    centre = alpha[HEIGHT // 2 - 60 : HEIGHT // 2 + 60, WIDTH // 2 - 80 : WIDTH // 2 + 80]
    assert np.all(centre == 1.0)
    without_core = edges.full_resolution_alpha(mask, photo, refine=False, core=0)
    assert without_core[HEIGHT // 2, WIDTH // 2] < 1.0  # the fill, not the stretch, made it opaque


def test_refinement_follows_the_photo_where_the_mask_is_blurry() -> None:
    """A 1024 px mask cannot hold a 12 MP edge: the guided filter takes the edge from the photo's colours."""
    true_alpha = disc(soft=1.5, shape=(720, 960), radius=230)
    photo_f = composite(true_alpha, textured((220, 180, 40), 3, (720, 960)), textured((30, 90, 60), 4, (720, 960)))
    photo = np.clip(photo_f + 0.5, 0, 255).astype(np.uint8)
    small = cv2.resize(true_alpha, (256, 256), interpolation=cv2.INTER_AREA)
    mask = cv2.GaussianBlur(small, (0, 0), 1.5)  # a soft, model-like edge several full-res pixels wide
    plain = edges.full_resolution_alpha(mask, photo, refine=False)
    refined = edges.full_resolution_alpha(mask, photo, refine=True)
    band = (true_alpha > 0) & (true_alpha < 1) | (np.abs(plain - true_alpha) > 0.05)
    assert np.abs(refined - true_alpha)[band].mean() < 0.6 * np.abs(plain - true_alpha)[band].mean()


# ---------------------------------------------------------------- estimate_foreground
def test_foreground_estimate_removes_the_old_background_from_soft_edges(
    red_disc_on_blue: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    photo, alpha, fore = red_disc_on_blue
    estimate = edges.estimate_foreground(photo, alpha)
    band = (alpha > 0) & (alpha < 1)
    for new_background in ((255, 255, 255), (0, 0, 0), (0, 255, 0)):
        truth = composite(alpha, fore, new_background)
        naive = np.abs(composite(alpha, photo / 255, new_background) - truth)[band].mean()
        cleaned = np.abs(composite(alpha, estimate / 255, new_background) - truth)[band].mean()
        assert cleaned < 0.5 * naive, new_background  # blue fringe on white: at least halved


def test_pixels_outside_the_band_are_the_photos_own(red_disc_on_blue: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    photo, alpha, _ = red_disc_on_blue
    before = photo.copy()
    estimate = edges.estimate_foreground(photo, alpha)
    assert np.array_equal(photo, before)  # the input is not touched
    near = cv2.dilate(((alpha > 0) & (alpha < 1)).astype(np.uint8), np.ones((2 * edges.BAND_DILATION + 3,) * 2, np.uint8))
    assert np.array_equal(estimate[near == 0], photo[near == 0])
    assert not np.array_equal(estimate[near == 1], photo[near == 1])


def test_a_hard_mask_leaves_every_pixel_alone() -> None:
    photo = (np.random.default_rng(5).random((120, 160, 3)) * 255).astype(np.uint8)
    alpha = np.zeros((120, 160), np.float32)
    alpha[30:90, 40:120] = 1.0
    assert np.array_equal(edges.estimate_foreground(photo, alpha), photo)


# ---------------------------------------------------------------- subject_confidence
def test_a_clear_blob_is_a_subject() -> None:
    raw = np.where(disc(soft=6, shape=(1024, 1024), radius=300) > 0.5, 0.995, 0.001).astype(np.float32)
    raw = cv2.GaussianBlur(raw, (0, 0), 3)
    confidence, found = edges.subject_confidence(raw[None, None])  # the model's (1, 1, H, W) shape is fine too
    assert found and confidence > 0.9


@pytest.mark.parametrize(
    "kind",
    ["haze", "noise", "speck", "bricks", "stripes"],
)
def test_no_subject_maps_are_not_a_subject(kind: str) -> None:
    """What isnet gives for subject-less photos: a near-zero haze (sky, blank scans, grass: peaks 0.01-0.4), a weak
    speck, or a repeating pattern it half believes (bricks' mortar, stripes) covering the whole frame."""
    rng = np.random.default_rng(7)
    size = 1024
    if kind == "haze":
        raw = np.clip(0.01 + rng.normal(0, 0.005, (size, size)), 0, 1)
    elif kind == "noise":
        raw = np.clip(cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 4) * 1.2 - 0.2, 0, 1)
    elif kind == "speck":
        raw = np.full((size, size), 0.002)
        raw[500:580, 500:560] = 0.75  # 0.5% of the frame, weakly
    elif kind == "bricks":
        raw = np.full((size, size), 0.02)
        for y in range(0, size, 48):
            raw[y : y + 8] = 0.95
            offset = 0 if (y // 48) % 2 else 40
            for x in range(offset, size, 80):
                raw[y : y + 48, x : x + 8] = 0.95
    else:
        yy, xx = np.mgrid[0:size, 0:size]
        raw = np.where(((xx + yy) // 40) % 2 == 0, 0.93, 0.03)
    confidence, found = edges.subject_confidence(raw.astype(np.float32))
    assert not found and confidence < edges.CONFIDENCE_MIN


def test_an_all_zero_map_has_no_subject() -> None:
    assert edges.subject_confidence(np.zeros((320, 320), np.float32)) == (0.0, False)


# ---------------------------------------------------------------- the real model
@pytest.mark.slow
@pytest.mark.real_model
def test_real_model_finds_the_astronaut_but_not_a_blank_page_or_gravel() -> None:
    from PIL import Image
    from skimage import data

    from bgremove.core.settings import load_settings
    from bgremove.core.store import find_model_file
    from tests.conftest import REAL_MODEL_HOME

    settings = load_settings({"DATA_DIR": "/tmp/bgremove-test-data", "REMBG_SESSION_PATH": str(REAL_MODEL_HOME)})
    path = find_model_file("isnet-general-use", settings)
    assert path is not None, "isnet-general-use is not on disk: run `python -m bgremove models pull` (scripts/test.sh does)"
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def raw(rgb: np.ndarray) -> np.ndarray:  # rembg's DisSession preprocessing; its first output, sigmoid applied
        image = np.asarray(Image.fromarray(rgb).resize((1024, 1024), Image.Resampling.LANCZOS), np.float32)
        batch = (image / max(float(image.max()), 1e-6) - 0.5).transpose(2, 0, 1)[None]
        return np.asarray(session.run(None, {session.get_inputs()[0].name: batch})[0])

    rng = np.random.default_rng(3)
    blank = np.clip(240 + rng.normal(0, 2.5, (900, 1200, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)
    gravel = np.stack([data.gravel()] * 3, axis=-1)
    for name, photo in (("blank page", blank), ("gravel", gravel)):
        confidence, found = edges.subject_confidence(raw(photo))
        assert not found, (name, confidence)
    confidence, found = edges.subject_confidence(raw(data.astronaut()))
    assert found and confidence > 0.9
