"""Headless Chromium (Debian's /usr/bin/chromium) drives the Gradio UI of `create_app`, served once for the module
on the tiny model (one slow test picks the real isnet-general-use model in the dropdown). Downloads are captured
and checked; screenshots go to tmp_path only (README screenshots: `python scripts/screenshots.py`)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Download, Locator, Page, expect
from skimage import data as skdata

from bgremove.core.errors import UnsupportedFormat
from bgremove.core.options import parse_options
from bgremove.core.pipeline import remove_background
from scripts.screenshots import wait_images
from tests.ui.conftest import NOT_AN_IMAGE, LiveUi, product_photo, write_photo

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DESKTOP = {"width": 1280, "height": 1000}
PHONE = {"width": 390, "height": 844}
RUN_TIMEOUT_MS = 60_000
SKY = (0x81, 0xD4, 0xFA)  # the "sky" swatch


@pytest.fixture()
def page(browser: Browser, live_ui: LiveUi) -> Iterator[Page]:
    """A fresh page on the app; fails the test if the page threw."""
    page = browser.new_page(viewport=DESKTOP, accept_downloads=True)
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live_ui.url + "/")
    expect(page.locator("#single-run")).to_be_visible()
    yield page
    page.close()
    assert errors == [], errors


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser-files")
    write_photo(folder / "product.jpg", quality=95)
    write_photo(folder / "tall.png", product_photo((200, 300)))
    (folder / "notes.png").write_bytes(NOT_AN_IMAGE)
    Image.fromarray(skdata.astronaut()).save(folder / "astronaut.jpg", quality=95)
    return folder


def upload_photo(page: Page, path: Path) -> None:
    page.locator("#single-photo input[type=file]").set_input_files(path)
    expect(page.locator(f"#single-photo img[src*='{path.stem}']")).to_be_attached()


def choose(page: Page, elem_id: str, label: str) -> None:
    page.locator(f"#{elem_id}").get_by_label(label, exact=True).check()


def run_single(page: Page) -> Locator:
    page.locator("#single-run").click()
    page.wait_for_function(
        "() => /^(Done in|Failed)/.test(document.querySelector('#single-status').innerText.trim())", timeout=RUN_TIMEOUT_MS
    )
    return page.locator("#single-status")


def download(page: Page, selector: str, target: Path) -> tuple[Download, Path]:
    button = page.locator(selector)
    expect(button).to_be_enabled()
    with page.expect_download() as info:
        button.click()
    saved = info.value
    assert saved.failure() is None, saved.failure()
    saved.save_as(target)
    return saved, target


def shot(locator: Locator, path: Path) -> np.ndarray:
    locator.screenshot(path=path)
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def share_near(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 3) -> float:
    return float((np.abs(pixels - colour).max(axis=-1) <= tolerance).mean())


# --- Single image -----------------------------------------------------------------------------------------------------


def test_pick_a_colour_choose_jpg_and_download_it(page: Page, files: Path, tmp_path: Path) -> None:
    upload_photo(page, files / "product.jpg")
    choose(page, "single-bg-mode", "Colour")
    picker = page.locator("#single-bg-color button.dialog-button")
    expect(picker).to_be_visible()
    # The swatch of the picked colour is visible on the white card: it has a dark border.
    border = picker.evaluate("e => [getComputedStyle(e).borderTopWidth, getComputedStyle(e).borderTopColor]")
    assert float(border[0].removesuffix("px")) >= 1 and border[1] != "rgb(255, 255, 255)", border
    page.locator("#single-swatch-sky").click()
    expect(picker).to_have_attribute("style", "background: rgb(129, 212, 250);")
    choose(page, "single-format", "jpg")

    status = run_single(page)
    expect(status).to_contain_text("Done in")
    expect(status).to_contain_text("320 x 240 px JPG")
    expect(page.locator("#single-cutout")).to_contain_text("Cutout on #81d4fa (JPG)")
    cutout_src = page.locator("#single-cutout img").get_attribute("src") or ""
    assert cutout_src.endswith("/product-nobg.jpg"), cutout_src  # the preview is the file to download
    expect(page.locator("#single-download")).to_have_text("Download JPG")
    expect(page.locator("#single-metadata")).to_contain_text('"foreground_found": true')

    saved, path = download(page, "#single-download", tmp_path / "download")
    assert saved.suggested_filename == "product-nobg.jpg"
    image = Image.open(io.BytesIO(path.read_bytes()))
    assert image.format == "JPEG" and image.size == (320, 240)
    corners = np.asarray(image.convert("RGB"))[[0, 0, -1, -1], [0, -1, 0, -1]].astype(int)
    assert np.abs(corners - SKY).max() <= 6, corners
    page.screenshot(path=tmp_path / "single.png", full_page=True)


def test_transparency_shows_as_a_checkerboard(page: Page, files: Path, tmp_path: Path) -> None:
    upload_photo(page, files / "product.jpg")
    expect(run_single(page)).to_contain_text("Done in")
    expect(page.locator("#single-cutout")).to_contain_text("Cutout (transparent PNG)")
    wait_images(page, "#single-cutout", 1, timeout=None)
    wait_images(page, "#single-compare", 2, timeout=None)
    cutout = shot(page.locator("#single-cutout img"), tmp_path / "cutout.png")
    assert share_near(cutout, (217, 217, 217)) > 0.15 and share_near(cutout, (255, 255, 255)) > 0.15
    after = shot(page.locator("#single-compare img").last, tmp_path / "compare.png")
    right = after[:, after.shape[1] // 2 + 10 :]  # the slider starts in the middle: the right half is "after"
    assert share_near(right, (217, 217, 217)) > 0.15, "the before/after slider shows transparency as white"


def test_a_text_file_gets_a_clean_message_and_the_status_resets(page: Page, files: Path, live_ui: LiveUi) -> None:
    page.locator("#single-photo input[type=file]").set_input_files(files / "notes.png")
    status = run_single(page)
    with pytest.raises(UnsupportedFormat) as expected:  # REST answers the same bytes with these words
        remove_background(NOT_AN_IMAGE, "notes.png", parse_options(), settings=live_ui.settings, cache=live_ui.cache)
    expect(status).to_have_text(f"Failed: {expected.value.message} {expected.value.hint}")
    page.wait_for_timeout(500)  # a toast, had one been raised, would be on screen by now
    text = page.locator("body").inner_text()
    assert "Traceback" not in text and "/tmp" not in text and "Error" not in text, text
    assert page.locator("[data-testid=toast-body]").count() == 0
    expect(page.locator("#single-download")).to_be_disabled()

    upload_photo(page, files / "product.jpg")  # and the next photo works as usual
    expect(page.locator("#single-status")).to_be_empty()
    expect(run_single(page)).to_contain_text("Done in")


def test_alpha_matting_sliders_are_inactive_until_matting_is_on(page: Page) -> None:
    page.locator("#single-advanced").click()
    sliders = [
        page.locator(f"#single-alpha-matting-{name} input[type=range]")
        for name in ("foreground-threshold", "background-threshold", "erode-size")
    ]
    for slider in sliders:
        expect(slider).to_be_disabled()
    opacity = page.locator("#single-alpha-matting-erode-size").evaluate("e => getComputedStyle(e).opacity")
    assert float(opacity) < 0.7, opacity  # it looks inactive, not just refuses input
    page.locator("#single-alpha-matting input[type=checkbox]").check()
    for slider in sliders:
        expect(slider).to_be_enabled()
    expect(page.locator("#single-crop-margin textarea")).to_be_disabled()  # the same rule: crop_margin needs crop


def test_on_a_phone_the_dropdown_text_stays_clear_of_its_arrow(browser: Browser, live_ui: LiveUi, tmp_path: Path) -> None:
    page = browser.new_page(viewport=PHONE)
    try:
        page.goto(live_ui.url + "/")
        dropdown = page.locator("#single-model")
        dropdown.locator("input").click()
        page.get_by_role("option", name="birefnet-general-lite", exact=False).click()
        geometry: dict[str, Any] = dropdown.evaluate(
            """e => { const input = e.querySelector('input'), arrow = e.querySelector('.icon-wrap');
                      const style = getComputedStyle(input), box = input.getBoundingClientRect();
                      return {textEnd: box.right - parseFloat(style.paddingRight), arrowLeft: arrow.getBoundingClientRect().left,
                              overflow: style.textOverflow, clipped: input.scrollWidth > input.clientWidth}; }"""
        )
        assert geometry["clipped"], geometry  # the label is longer than a phone is wide...
        assert geometry["textEnd"] <= geometry["arrowLeft"] and geometry["overflow"] == "ellipsis", geometry  # ...and ends in …
        dropdown.screenshot(path=tmp_path / "phone-dropdown.png")
        expect(page.locator("#single-model-info")).to_contain_text("birefnet-general-lite")
        expect(page.locator("#single-model-info")).to_contain_text("licence")
    finally:
        page.close()


def test_footer_names_the_engine(page: Page) -> None:
    footer = page.locator("#footer")
    expect(footer).to_contain_text("engine:")
    assert "provider" not in footer.inner_text()


@pytest.mark.real_model
def test_the_real_model_cuts_out_the_astronaut(page: Page, files: Path, tmp_path: Path) -> None:
    dropdown = page.locator("#single-model")
    dropdown.locator("input").click()
    page.get_by_role("option", name="isnet-general-use", exact=False).click()
    expect(page.locator("#single-model-info")).to_contain_text("isnet-general-use")
    upload_photo(page, files / "astronaut.jpg")
    status = run_single(page)
    expect(status).to_contain_text("Done in")
    expect(status).to_contain_text("512 x 512 px PNG - model isnet-general-use")
    saved, path = download(page, "#single-download", tmp_path / "astronaut.png")
    assert saved.suggested_filename == "astronaut-nobg.png"
    image = Image.open(path)
    assert image.format == "PNG" and image.mode == "RGBA" and image.size == (512, 512)
    alpha = np.asarray(image)[..., 3]
    assert alpha[:20, :20].mean() < 25 and alpha[300:480, 100:300].mean() > 230


# --- Batch --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_batch(browser: Browser, live_ui: LiveUi, files: Path) -> Iterator[Page]:
    """The Batch tab after a WebP run over two photos and a text file named notes.png."""
    page = browser.new_page(viewport=DESKTOP, accept_downloads=True)
    page.set_default_timeout(30_000)
    page.goto(live_ui.url + "/")
    page.get_by_role("tab", name="Batch").click()
    uploads = page.locator("#batch-files")
    uploads.locator("input[type=file]").set_input_files([files / "product.jpg", files / "tall.png", files / "notes.png"])
    for name in ("product", "tall", "notes"):
        expect(uploads).to_contain_text(name)
    choose(page, "batch-format", "webp")
    expect(page.locator("#batch-download-zip")).to_be_disabled()
    page.locator("#batch-run").click()
    expect(page.locator("#batch-status")).to_contain_text("of 3.", timeout=RUN_TIMEOUT_MS)
    wait_images(page, "#batch-gallery", 2, timeout=None)
    yield page
    page.close()


def test_a_partial_batch_is_reported_as_partial(finished_batch: Page) -> None:
    status = finished_batch.locator("#batch-status").inner_text()
    assert status.startswith("Partly done: 2 completed, 1 failed of 3."), status
    assert "notes.png" in status and "not a supported image" in status
    table = finished_batch.locator("#batch-table").inner_text()
    assert table.count("Completed") == 2 and table.count("Failed") == 1, table
    assert "Queued" not in table and "Processing" not in table


def test_the_gallery_leaves_no_blank_space(finished_batch: Page, tmp_path: Path) -> None:
    gallery = finished_batch.locator("#batch-gallery")
    expect(gallery.locator("img")).to_have_count(2)
    box = gallery.bounding_box()
    assert box is not None
    bottoms = []
    for img in gallery.locator("img").all():
        shown = img.bounding_box()
        natural = img.evaluate("e => e.naturalWidth / e.naturalHeight")
        assert shown is not None and abs(shown["width"] / shown["height"] - natural) < 0.03 * natural, (shown, natural)
        bottoms.append(shown["y"] + shown["height"])  # each thumbnail has its photo's shape: no letterbox bands
    assert box["y"] + box["height"] - max(bottoms) < 40, (box, bottoms)  # and no empty rows under them
    gallery.screenshot(path=tmp_path / "gallery.png")


def test_download_all_and_the_manifest(finished_batch: Page, tmp_path: Path) -> None:
    saved, zipped = download(finished_batch, "#batch-download-zip", tmp_path / "results.zip")
    assert saved.suggested_filename.endswith(".zip")
    with zipfile.ZipFile(zipped) as archive:
        assert sorted(archive.namelist()) == ["manifest.json", "product.webp", "tall.webp"]
        manifest = json.loads(archive.read("manifest.json"))
        assert Image.open(io.BytesIO(archive.read("tall.webp"))).size == (200, 300)
    assert (manifest["count"], manifest["completed"], manifest["failed"]) == (3, 2, 1)
    _, listed = download(finished_batch, "#batch-download-json", tmp_path / "results.json")
    assert json.loads(listed.read_text()) == manifest


def test_crop_to_the_subject_crops_the_download(page: Page, files: Path, tmp_path: Path) -> None:
    upload_photo(page, files / "product.jpg")
    page.locator("#single-crop input[type=checkbox]").check()
    margin = page.locator("#single-crop-margin textarea")
    expect(margin).to_be_enabled()
    expect(margin).to_have_value("0")  # ticking the box leaves the margin's value alone
    expect(run_single(page)).to_contain_text("Done in")
    _, path = download(page, "#single-download", tmp_path / "cropped.png")
    image = Image.open(path)
    # The box is a third of the width and half the height of the 320 x 240 photo.
    assert image.size[0] < 200 and image.size[1] < 200, image.size
    assert np.asarray(image)[..., 3][image.size[1] // 2, image.size[0] // 2] > 200
