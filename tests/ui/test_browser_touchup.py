"""Touch-up in headless Chromium, as a person does it: drop a photo whose cutout misses a block, open Touch up, paint
one Keep stroke with the mouse across the missed block and one Remove stroke across a kept patch, download. The server runs on the tiny model (the photo of
tests/touchup_cases.py: a dark blue block the tiny brightness model drops)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from tests.touchup_cases import LEFTOVER, MISSED, SUBJECT, region_alpha, touchup_case
from tests.ui.conftest import LiveUi
from tests.ui.test_browser import DESKTOP, Opened, assert_no_error_shown, drop_photo, result_src, wait_result

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EDITOR = "#single-touchup-editor"


@pytest.fixture()
def desktop(browser: Browser, live_ui: LiveUi) -> Iterator[Page]:
    opened = Opened(browser, live_ui, DESKTOP)
    yield opened.page
    opened.close()


def download_alpha(page: Page, target: Path) -> np.ndarray:
    button = page.locator("#single-download")
    expect(button).to_be_enabled()
    button.scroll_into_view_if_needed()
    with page.expect_download() as info:
        button.click()
    info.value.save_as(target)
    return np.asarray(Image.open(target).convert("RGBA"))[..., 3]


def open_touchup(page: Page) -> None:
    page.locator("#single-touchup").click()
    canvas = page.locator(f"{EDITOR} canvas").first
    expect(canvas).to_be_visible()
    canvas.scroll_into_view_if_needed()


def on_screen(page: Page, picked: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float, float]:
    """(left, right, middle y) in page pixels of the editor's pixels that `picked` marks (given RGB pixels)."""
    canvas = page.locator(f"{EDITOR} canvas").first
    box = canvas.bounding_box()
    assert box is not None
    pixels = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)
    ys, xs = np.nonzero(picked(pixels))
    assert len(xs), "the photo is not on the editor's canvas"
    per_px = box["width"] / pixels.shape[1]
    return box["x"] + xs.min() * per_px, box["x"] + xs.max() * per_px, box["y"] + ys.mean() * per_px


def stroke(page: Page, left: float, right: float, y: float) -> None:
    """One brush stroke with the mouse, from left to right."""
    page.mouse.move(left, y)
    page.mouse.down()
    page.mouse.move((left + right) / 2, y, steps=10)
    page.mouse.move(right, y, steps=10)
    page.mouse.up()


def test_keep_and_remove_strokes_fix_what_the_model_got_wrong(desktop: Page, tmp_path: Path) -> None:
    photo = tmp_path / "missed.png"
    photo.write_bytes(touchup_case().photo)
    drop_photo(desktop, photo)
    before = download_alpha(desktop, tmp_path / "before.png")
    assert region_alpha(before, MISSED) < 0.3 < 0.9 < region_alpha(before, SUBJECT)
    assert region_alpha(before, LEFTOVER) > 0.7

    open_touchup(desktop)
    # The editor takes the photo's place, beside the before/after view: on a laptop both are whole on one screen,
    # so each stroke's effect shows where the person is looking.
    expect(desktop.locator("#single-photo")).to_be_hidden()
    viewport = desktop.viewport_size
    editor = desktop.locator(f"{EDITOR} canvas").first.bounding_box()
    view = desktop.locator("#single-result").bounding_box()
    assert viewport is not None and editor is not None and view is not None
    assert editor["x"] + editor["width"] <= view["x"], (editor, view)
    for box in (editor, view):
        assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], (box, viewport)
    left, right, y = on_screen(
        desktop, lambda px: (px[..., 2] > 150) & (px[..., :2].max(axis=-1) < 80)
    )  # the blue block the model dropped
    shown = result_src(desktop)
    stroke(desktop, left + 10, right - 10, y)  # the Keep brush (green) is the one picked at first
    status = wait_result(desktop, shown)
    expect(status).to_contain_text("model did not run again")

    after = download_alpha(desktop, tmp_path / "after.png")
    assert region_alpha(after, MISSED) > region_alpha(before, MISSED) + 0.5, region_alpha(after, MISSED)
    assert region_alpha(after, SUBJECT) > 0.9  # the rest of the subject stays
    assert after[0, 0] == before[0, 0]  # the background far from the stroke is as it was
    # The Remove brush (red, from the editor's colour menu) across the light grey patch the model kept, at the top
    # right (not the canvas's white margin).
    toolbar = desktop.locator(f"{EDITOR} .toolbar-wrap")
    toolbar.get_by_role("button", name="Color").click()
    toolbar.locator(".swatch button.color").nth(1).click()
    left, right, y = on_screen(
        desktop,
        lambda px: (px.min(axis=-1) > 225) & (px.max(axis=-1) < 248) & (np.arange(px.shape[1]) > px.shape[1] * 0.6)[None, :],
    )
    shown = result_src(desktop)
    stroke(desktop, left + 5, right - 5, y)
    expect(wait_result(desktop, shown)).to_contain_text("model did not run again")
    removed = download_alpha(desktop, tmp_path / "removed.png")
    assert region_alpha(removed, LEFTOVER) < region_alpha(before, LEFTOVER) - 0.5, region_alpha(removed, LEFTOVER)
    assert region_alpha(removed, MISSED) > region_alpha(before, MISSED) + 0.5  # the Keep stroke still holds
    # The before/after view still shows the photo and the touched-up result.
    expect(desktop.locator("#single-result img")).to_have_count(2)
    assert_no_error_shown(desktop)
    # Closing Touch up brings the photo (and a way to drop another) back; the strokes still hold.
    desktop.locator("#single-touchup").get_by_role("button").first.click()
    expect(desktop.locator("#single-photo")).to_be_visible()
    assert region_alpha(download_alpha(desktop, tmp_path / "closed.png"), LEFTOVER) < 0.2
