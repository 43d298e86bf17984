"""Touch-up hints: strokes bring back what the model dropped and remove what it kept, change nothing outside the
regions they touch, reuse the cached prediction, and a hint that is not usable is refused before the model runs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bgremove.core import touchup
from bgremove.core.errors import InvalidHint
from bgremove.core.options import IMAGE_INPUTS, parse_options
from bgremove.core.pipeline import remove_background
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from tests.conftest import decode_png, encode
from tests.core.test_predictions import CountingCache
from tests.touchup_cases import HEIGHT, LEFTOVER, MISSED, SUBJECT, WIDTH, region_alpha, touchup_case


def _alpha(data: bytes) -> np.ndarray:
    return np.asarray(decode_png(data).getchannel("A"))


def test_the_hints_are_image_inputs_of_one_photo() -> None:
    assert IMAGE_INPUTS["keep_mask"].per_photo and IMAGE_INPUTS["remove_mask"].per_photo
    assert not IMAGE_INPUTS["bg_image"].per_photo


def test_strokes_fix_both_mistakes_and_nothing_else(settings: Settings) -> None:
    case, cache, options = touchup_case(), SessionCache(settings), parse_options()
    before = _alpha(remove_background(case.photo, "p.png", options, settings=settings, cache=cache).data)
    assert region_alpha(before, MISSED) < 0.5 and region_alpha(before, LEFTOVER) > 0.9  # the model's two mistakes

    result = remove_background(
        case.photo, "p.png", options, settings=settings, cache=cache, keep_mask=case.keep_mask, remove_mask=case.remove_mask
    )
    after = _alpha(result.data)
    assert region_alpha(after, MISSED) > 0.95
    assert region_alpha(after, LEFTOVER) < 0.05
    np.testing.assert_array_equal(after[SUBJECT], before[SUBJECT])
    outside = np.ones(after.shape, bool)
    for rows, cols in (MISSED, LEFTOVER):  # the touched regions and a few px of edge around them
        outside[max(0, rows.start - 6) : rows.stop + 6, max(0, cols.start - 6) : cols.stop + 6] = False
    np.testing.assert_array_equal(after[outside], before[outside])


def test_a_touch_up_reuses_the_prediction(settings: Settings) -> None:
    case, cache, options = touchup_case(), CountingCache(settings), parse_options()
    first = remove_background(case.photo, "p.png", options, settings=settings, cache=cache)
    touched = remove_background(case.photo, "p.png", options, settings=settings, cache=cache, keep_mask=case.keep_mask)
    assert cache.forward_passes == 1
    assert not first.prediction_reused and touched.prediction_reused


def test_strokes_on_a_transparent_layer_of_another_size_work_like_white_on_black(settings: Settings) -> None:
    case, cache, options = touchup_case(), SessionCache(settings), parse_options()
    layer = _alpha(
        remove_background(case.photo, "p.png", options, settings=settings, cache=cache, keep_mask=case.keep_layer).data
    )
    assert region_alpha(layer, MISSED) > 0.95


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_a_hint_without_marks_changes_no_byte(settings: Settings, mode: str) -> None:
    case, cache = touchup_case(), SessionCache(settings)
    blank = encode(Image.new(mode, (WIDTH, HEIGHT), 0), "PNG")  # all black / fully transparent
    for options in (parse_options(), parse_options(format="webp", size="preview", bg_color="ffffff")):
        plain = remove_background(case.photo, "p.png", options, settings=settings, cache=cache)
        hinted = remove_background(
            case.photo, "p.png", options, settings=settings, cache=cache, keep_mask=blank, remove_mask=blank
        )
        assert hinted.data == plain.data


def test_a_hint_that_is_not_an_image_is_refused_before_the_model_runs(settings: Settings) -> None:
    case, cache = touchup_case(), CountingCache(settings)
    with pytest.raises(InvalidHint) as refused:
        remove_background(case.photo, "p.png", parse_options(), settings=settings, cache=cache, remove_mask=b"not a png")
    assert "remove_mask" in refused.value.message and refused.value.hint
    assert cache.forward_passes == 0


@pytest.mark.parametrize(("size", "accepted"), [((150, 100), True), ((302, 200), True), ((310, 200), False), ((200, 300), False)])
def test_the_aspect_ratio_must_be_the_photos_within_one_percent(
    settings: Settings, size: tuple[int, int], accepted: bool
) -> None:
    hint = encode(Image.new("L", size, 0), "PNG")
    if accepted:
        assert not touchup.read_hint(hint, "keep_mask", (WIDTH, HEIGHT), settings).any()
        return
    with pytest.raises(InvalidHint) as refused:
        touchup.read_hint(hint, "keep_mask", (WIDTH, HEIGHT), settings)
    assert f"{size[0]}x{size[1]}" in refused.value.message and "photo" in refused.value.hint


def test_a_stroke_on_what_is_already_right_changes_nothing_around_it() -> None:
    alpha = np.zeros((120, 160), np.float32)
    alpha[30:90, 40:120] = 1.0
    rgb = np.zeros((120, 160, 3), np.uint8)
    rgb[30:90, 40:120] = 220
    keep = np.zeros(alpha.shape, bool)
    keep[55:60, 60:100] = True  # inside the subject
    remove = np.zeros(alpha.shape, bool)
    remove[5:10, 5:30] = True  # on the background
    np.testing.assert_array_equal(touchup.apply(alpha, rgb, keep, remove), alpha)


def test_a_pixel_marked_by_both_hints_is_kept() -> None:
    alpha = np.zeros((40, 40), np.float32)
    rgb = np.zeros((40, 40, 3), np.uint8)
    both = np.zeros(alpha.shape, bool)
    both[20, 20] = True
    assert touchup.apply(alpha, rgb, both, both)[20, 20] == 1.0
