"""The browser's touch-up without a browser: an ImageEditor value (as Gradio 6 preprocesses it, type="numpy") goes
through the same functions the page's events call, and the single-image handler applies the strokes on the tiny
model. The browser itself is driven in test_browser_touchup.py."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bgremove.core.sessions import SessionCache
from bgremove.web.ui_controls import ControlSet
from bgremove.web.ui_files import WORK_ROOT, Expired
from bgremove.web.ui_handlers import SingleView
from bgremove.web.ui_touchup import (
    DISPLAY_SIDE,
    KEEP_COLOUR,
    REMOVE_COLOUR,
    editor_background,
    masks_from_editor,
    read_hints,
    strokes_to_hints,
)
from tests.touchup_cases import HEIGHT, KEEP_STROKE, LEFTOVER, MISSED, REMOVE_STROKE, WIDTH, region_alpha, touchup_case
from tests.ui.conftest import product_photo, upload_payload, write_photo
from tests.ui.test_ui_handlers import widget_values

REUSED = "model did not run again"
TTL = 600  # RESULT_TTL_SECONDS as the messages quote it


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def painted_layer(scale: int = 2) -> np.ndarray:
    """The editor's one layer over a display copy `scale` times smaller than the photo: a green stroke across the
    missed block, a red one across the leftover patch, transparent elsewhere (with a half-opaque brush edge)."""
    layer = np.zeros((HEIGHT // scale, WIDTH // scale, 4), np.uint8)
    for region, colour in ((KEEP_STROKE, KEEP_COLOUR), (REMOVE_STROKE, REMOVE_COLOUR)):
        rows, cols = region
        box = slice(rows.start // scale, rows.stop // scale), slice(cols.start // scale, cols.stop // scale)
        layer[box] = (*rgb(colour), 255)
        layer[box[0].stop, box[1]] = (*rgb(colour), 128)  # antialiased edge: same colour, less opaque
    return layer


def editor_value(photo: Path, layers: list[Any]) -> dict[str, Any]:
    value = editor_background(upload_payload(photo))
    assert value is not None
    return {**value, "layers": layers, "composite": None}


def cut_out(cache: SessionCache, controls: ControlSet, photo: Path, hints: str, **changes: Any) -> SingleView:
    """The page's re-compose: the photo, the hints value and the widgets, as `recompose` passes them."""
    from bgremove.batch.jobs import JobRunner
    from bgremove.web.ui_handlers import UiHandlers

    runner = JobRunner(cache.settings, cache)
    try:
        handlers = UiHandlers(cache.settings, cache, runner)
        return handlers.single(controls, upload_payload(photo), widget_values(controls, **changes), hints=read_hints(hints, TTL))
    finally:
        runner.close()


def alpha_of(view: SingleView) -> np.ndarray:
    assert view.download is not None, view.status
    return np.asarray(Image.open(view.download).convert("RGBA"))[..., 3]


def test_strokes_split_by_colour_into_keep_and_remove_masks(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(touchup_case().photo)
    keep, remove = masks_from_editor(editor_value(photo, [painted_layer()]))
    assert keep is not None and remove is not None
    keep_marks = np.asarray(Image.open(io.BytesIO(keep)))
    remove_marks = np.asarray(Image.open(io.BytesIO(remove)))
    assert keep_marks.shape == (HEIGHT // 2, WIDTH // 2)
    rows, cols = KEEP_STROKE
    assert (
        keep_marks[rows.start // 2 + 1, cols.start // 2 + 1] == 255
        and remove_marks[rows.start // 2 + 1, cols.start // 2 + 1] == 0
    )
    rows, cols = REMOVE_STROKE
    assert remove_marks[rows.start // 2, cols.start // 2] == 255 and keep_marks[rows.start // 2, cols.start // 2] == 0
    assert keep_marks.sum() // 255 == ((KEEP_STROKE[0].stop - KEEP_STROKE[0].start) // 2 + 1) * 30  # edge included
    assert masks_from_editor(editor_value(photo, [])) == (None, None)  # no stroke: no hints
    assert masks_from_editor(None) == (None, None)  # a cleared editor


def test_editor_strokes_fix_the_cutout_without_running_the_model_again(
    ui_cache: SessionCache, tmp_path: Path, tab_controls: ControlSet
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(touchup_case().photo)
    before = cut_out(ui_cache, tab_controls, photo, "")  # the photo arrives: the model runs
    assert REUSED not in before.status
    hints = strokes_to_hints(editor_value(photo, [painted_layer()]))
    assert hints and (WORK_ROOT / hints).is_dir()
    after = cut_out(ui_cache, tab_controls, photo, hints)
    assert REUSED in after.status, after.status
    old, new = alpha_of(before), alpha_of(after)
    assert region_alpha(old, MISSED) < 0.3 < 0.9 < region_alpha(new, MISSED)  # the dropped block is back
    assert region_alpha(old, LEFTOVER) > 0.7 > 0.1 > region_alpha(new, LEFTOVER)  # the kept patch is gone
    # An option changed afterwards keeps the strokes: WebP on a colour, still touched up, still no model run.
    changed = cut_out(ui_cache, tab_controls, photo, hints, format="webp")
    assert REUSED in changed.status and changed.download is not None and changed.download.endswith(".webp")
    assert region_alpha(alpha_of(changed), MISSED) > 0.9 and region_alpha(alpha_of(changed), LEFTOVER) < 0.1
    # Undo everything (the editor sends an empty layer list): the cutout is the model's again.
    assert strokes_to_hints(editor_value(photo, [])) == ""
    np.testing.assert_array_equal(alpha_of(cut_out(ui_cache, tab_controls, photo, "")), old)


def test_the_hints_value_names_a_work_folder_never_a_path(tmp_path: Path) -> None:
    secret = tmp_path / "job-x"
    secret.mkdir()
    Image.new("L", (4, 4), 255).save(secret / "keep.png")
    for value in (str(secret), str(secret / "keep.png"), "../job-x", "job-x/../../etc", "", None):
        assert read_hints(value, TTL) == (None, None), value


def test_the_editor_shows_a_display_copy_of_a_large_photo(tmp_path: Path) -> None:
    photo = write_photo(tmp_path / "large.png", product_photo((3000, 2000)))
    value = editor_background(upload_payload(photo))
    assert value is not None and value["layers"] == []
    background = value["background"]
    assert background.shape == (round(DISPLAY_SIDE * 2 / 3), DISPLAY_SIDE, 3)  # the photo's aspect ratio, at most 1024 px
    (tmp_path / "notes.png").write_bytes(b"not an image")
    assert editor_background(upload_payload(tmp_path / "notes.png")) is None  # the drop zone explains that one
    assert editor_background(None) is None


def test_strokes_swept_from_the_server_are_reported_not_dropped(tmp_path: Path) -> None:
    """A page left open past RESULT_TTL_SECONDS (or across a restart) still shows its strokes: a re-compose that
    silently ignored them would undo the touch-up without a word."""
    photo = tmp_path / "photo.png"
    photo.write_bytes(touchup_case().photo)
    hints = strokes_to_hints(editor_value(photo, [painted_layer()]))
    assert read_hints(hints, TTL)[0] is not None
    shutil.rmtree(WORK_ROOT / hints)  # what the sweeper does after RESULT_TTL_SECONDS
    with pytest.raises(Expired) as caught:
        read_hints(hints, TTL)
    assert caught.value.message == (
        "Your touch-up strokes are no longer on the server (they are kept 10 minutes, and not across a restart)."
    )
    assert caught.value.hint == "Clear them with the editor's clear button and paint them again."


def test_a_photo_gone_from_gradios_cache_asks_to_drop_it_again(
    ui_cache: SessionCache, tmp_path: Path, tab_controls: ControlSet
) -> None:
    """Changing an option on a page whose upload Gradio's cache already deleted: a message about the photo, not
    "the server could not read or write a temporary file" with a disk-full hint."""
    photo = tmp_path / "photo.png"
    photo.write_bytes(touchup_case().photo)
    assert cut_out(ui_cache, tab_controls, photo, "").download is not None
    photo.unlink()
    view = cut_out(ui_cache, tab_controls, photo, "", format="webp")
    assert view.download is None and view.result is None
    assert view.status == (
        "**Failed:** This photo is no longer on the server (uploads are kept 10 minutes, and not across a restart). "
        "Drop it again: your options stay as they are."
    )
