"""Headless Chromium (Debian's /usr/bin/chromium) uses the Gradio UI of `create_app` as a person would: drop a photo,
look at the result, change the common choices, download; at a laptop's 1366x768 and a phone's 390x844. The server
runs once for the module on the tiny model (one slow test picks the real isnet-general-use model). Downloads are
captured and checked; screenshots go to tmp_path only (README screenshots: `python scripts/screenshots.py`)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Download, Locator, Page, expect
from skimage import data as skdata

from bgremove.core.errors import BgRemoveError
from bgremove.core.options import parse_options
from bgremove.core.pipeline import remove_background
from scripts.screenshots import wait_images
from tests.ui.conftest import NOT_AN_IMAGE, LiveUi, product_photo, write_photo

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DESKTOP = {"width": 1366, "height": 768}  # a laptop: the result must be on the first screen
PHONE = {"width": 390, "height": 844}
SCREENS = {"desktop": DESKTOP, "phone": PHONE}
RUN_TIMEOUT_MS = 60_000
SKY = (0x81, 0xD4, 0xFA)  # the "Sky" swatch
GREEN = (0, 200, 0)


class Opened:
    """A page on the app and the errors it threw (the test fails on any)."""

    def __init__(self, browser: Browser, live_ui: LiveUi, viewport: Any) -> None:
        self.page = browser.new_page(viewport=viewport, accept_downloads=True)
        self.page.set_default_timeout(30_000)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(live_ui.url + "/")
        expect(self.page.locator("#single-photo")).to_be_visible()

    def close(self) -> None:
        self.page.close()
        assert self.errors == [], self.errors


@pytest.fixture(params=list(SCREENS))
def page(request: pytest.FixtureRequest, browser: Browser, live_ui: LiveUi) -> Iterator[Page]:
    """A fresh page on the app at a laptop's and at a phone's size."""
    opened = Opened(browser, live_ui, SCREENS[request.param])
    yield opened.page
    opened.close()


@pytest.fixture()
def desktop(browser: Browser, live_ui: LiveUi) -> Iterator[Page]:
    opened = Opened(browser, live_ui, DESKTOP)
    yield opened.page
    opened.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser-files")
    write_photo(folder / "product.jpg", quality=95)
    write_photo(folder / "tall.png", product_photo((200, 300)))
    (folder / "notes.png").write_bytes(NOT_AN_IMAGE)
    (folder / "empty.jpg").write_bytes(b"")
    whole = (folder / "product.jpg").read_bytes()
    (folder / "half.jpg").write_bytes(whole[: len(whole) // 2])  # an interrupted download
    write_photo(folder / "backdrop.png", Image.new("RGB", (64, 64), GREEN))
    Image.fromarray(skdata.astronaut()).save(folder / "astronaut.jpg", quality=95)
    return folder


def result_src(page: Page) -> str | None:
    images = page.locator("#single-result img")
    return images.last.get_attribute("src") if images.count() else None


def wait_result(page: Page, before: str | None = None) -> Locator:
    """The status says Done and the before/after view shows a result other than `before`."""
    page.wait_for_function(
        """(before) => {
            const status = document.querySelector('#single-status').innerText.trim();
            const images = [...document.querySelectorAll('#single-result img')];
            const src = images.length ? images[images.length - 1].getAttribute('src') : null;
            return /^Done in/.test(status) && src && src !== before && images.every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=before,
        timeout=RUN_TIMEOUT_MS,
    )
    return page.locator("#single-status")


def drop_photo(page: Page, path: Path) -> Locator:
    """What a person does: drop the photo; nothing else is needed for the result."""
    page.locator("#single-photo input[type=file]").set_input_files(path)
    return wait_result(page)


def change(page: Page, act: Callable[[], Any]) -> Locator:
    """Change an option and wait for the re-composed result."""
    before = result_src(page)
    act()
    return wait_result(page, before)


def choose(page: Page, elem_id: str, label: str) -> None:
    page.locator(f"#{elem_id}").get_by_label(label, exact=True).check()


def open_more_options(page: Page) -> None:
    page.locator("#single-advanced").click()
    expect(page.locator("#single-size")).to_be_visible()


def download(page: Page, selector: str, target: Path) -> tuple[Download, Path]:
    button = page.locator(selector)
    expect(button).to_be_enabled()
    button.scroll_into_view_if_needed()
    with page.expect_download() as info:
        button.click()
    saved = info.value
    assert saved.failure() is None, saved.failure()
    saved.save_as(target)
    return saved, target


def downloaded(page: Page, target: Path) -> Image.Image:
    _, path = download(page, "#single-download", target)
    image = Image.open(path)
    image.load()
    return image


def corners(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGBA"))[[0, 0, -1, -1], [0, -1, 0, -1]].astype(int)


def shot(locator: Locator, path: Path) -> np.ndarray:
    locator.screenshot(path=path)
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def share_near(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 3) -> float:
    return float((np.abs(pixels - colour).max(axis=-1) <= tolerance).mean())


def assert_no_error_shown(page: Page) -> None:
    page.wait_for_timeout(300)  # a toast, had one been raised, would be on screen by now
    text = page.locator("body").inner_text()
    assert "Traceback" not in text and "/tmp" not in text and "Error" not in text and "Failed" not in text, text
    assert page.locator("[data-testid=toast-body]").count() == 0
    expect(page.locator("#single-photo-problem")).to_be_hidden()


# --- Single image -----------------------------------------------------------------------------------------------------


def test_a_dropped_photo_is_cut_out_at_once_on_the_first_screen(page: Page, files: Path, tmp_path: Path) -> None:
    status = drop_photo(page, files / "product.jpg")
    expect(status).to_contain_text("transparent PNG, 320 × 240 px")
    viewport = page.viewport_size
    assert viewport is not None
    result = page.locator("#single-result").bounding_box()
    assert result is not None and result["x"] >= 0 and result["x"] + result["width"] <= viewport["width"]
    if viewport["width"] > 640:  # beside the photo, whole on a laptop's first screen, the choices right under it
        photo = page.locator("#single-photo").bounding_box()
        assert photo is not None and photo["x"] + photo["width"] <= result["x"]
        assert result["y"] + result["height"] <= viewport["height"], result
        choices = page.locator("#single-bg-mode").bounding_box()
        assert choices is not None and choices["y"] < viewport["height"], choices
    else:  # one column: under the photo, and brought into view once it is there
        page.wait_for_function("() => document.getElementById('single-status').getBoundingClientRect().top < 200")
    # nothing runs past the right edge of the screen
    assert page.evaluate("() => document.documentElement.scrollWidth") <= viewport["width"]
    # transparency shows as a checkerboard on the "after" half of the slider
    page.locator("#single-result").scroll_into_view_if_needed()
    after = shot(page.locator("#single-result img").last, tmp_path / "after.png")
    right = after[:, after.shape[1] // 2 + 10 :]
    assert share_near(right, (217, 217, 217)) > 0.1 and share_near(right, (255, 255, 255)) > 0.1
    # one download button, and the file is the transparent cutout
    expect(page.locator("#single-download")).to_have_text("Download PNG")
    expect(page.locator("#single-result").get_by_role("button", name="Download")).to_have_count(0)
    saved, path = download(page, "#single-download", tmp_path / "cutout.png")
    assert saved.suggested_filename == "product-nobg.png"
    image = Image.open(path)
    assert image.mode == "RGBA" and image.size == (320, 240) and corners(image)[:, 3].max() == 0
    assert np.asarray(image)[120, 160, 3] > 200
    assert_no_error_shown(page)


def test_every_common_choice_changes_the_download(page: Page, files: Path, tmp_path: Path) -> None:
    drop_photo(page, files / "product.jpg")
    status = change(page, lambda: choose(page, "single-bg-mode", "White"))
    expect(status).to_contain_text("model did not run again")  # re-composed from the cached prediction
    assert np.abs(corners(downloaded(page, tmp_path / "white"))[:, :3] - 255).max() <= 2
    # Colour starts at white (the same file: Gradio serves it under the same address), then a named swatch
    change(page, lambda: (choose(page, "single-bg-mode", "Colour"), page.locator("#single-swatch-sky").click()))
    assert np.abs(corners(downloaded(page, tmp_path / "sky"))[:, :3] - SKY).max() <= 3
    expect(change(page, lambda: choose(page, "single-format", "JPG"))).to_contain_text("JPG on sky")
    expect(page.locator("#single-download")).to_have_text("Download JPG")
    jpg = downloaded(page, tmp_path / "sky.jpg")
    assert jpg.format == "JPEG" and jpg.mode == "RGB" and np.abs(corners(jpg)[:, :3] - SKY).max() <= 6
    change(page, lambda: choose(page, "single-bg-mode", "Image"))  # no image chosen yet: as transparent
    change(page, lambda: page.locator("#single-bg-image input[type=file]").set_input_files(files / "backdrop.png"))
    assert np.abs(corners(downloaded(page, tmp_path / "green.jpg"))[:, :3] - GREEN).max() <= 8
    change(page, lambda: page.locator("#single-crop input[type=checkbox]").check())
    cropped = downloaded(page, tmp_path / "cropped.jpg")
    assert cropped.width < 200 and cropped.height < 200, cropped.size  # the box is 107 x 120 of 320 x 240
    change(page, lambda: page.locator("#single-crop input[type=checkbox]").uncheck())
    change(page, lambda: choose(page, "single-bg-mode", "Transparent"))
    change(page, lambda: choose(page, "single-format", "WebP"))
    webp = downloaded(page, tmp_path / "cutout.webp")
    assert webp.format == "WEBP" and webp.mode == "RGBA" and corners(webp)[:, 3].max() == 0
    assert_no_error_shown(page)


def test_more_options_reach_margin_mask_and_position(desktop: Page, files: Path, tmp_path: Path) -> None:
    page = desktop
    drop_photo(page, files / "product.jpg")
    change(page, lambda: page.locator("#single-crop input[type=checkbox]").check())
    tight = downloaded(page, tmp_path / "tight.png").size
    open_more_options(page)
    expect(page.locator("#single-model-info")).to_contain_text("Licence")  # where the model is chosen
    margin = page.locator("#single-crop-margin-top input")
    change(page, lambda: (margin.fill("10"), margin.press("Enter")))
    assert downloaded(page, tmp_path / "margin.png").size == (tight[0], tight[1] + 10)
    change(page, lambda: choose(page, "single-channels", "Only the mask (white subject on black)"))
    assert downloaded(page, tmp_path / "mask.png").mode == "L"
    change(page, lambda: choose(page, "single-channels", "The cutout"))
    change(page, lambda: page.locator("#single-crop input[type=checkbox]").uncheck())
    across = page.locator("#single-position-0 input[type=number]")
    # switched on, the subject is centred (where it already is), then moved to the left edge
    change(page, lambda: (page.locator("#single-position input[type=checkbox]").check(), across.fill("0"), across.press("Enter")))
    alpha = np.asarray(downloaded(page, tmp_path / "left.png"))[..., 3]
    columns = np.nonzero(alpha.max(axis=0) > 128)[0]
    assert columns.min() <= 2, columns.min()  # moved to the left edge (it started a third of the way in)
    assert_no_error_shown(page)


def test_an_example_photo_is_cut_out_when_clicked(desktop: Page, tmp_path: Path) -> None:
    desktop.locator("#single-examples img").first.click()
    expect(wait_result(desktop)).to_contain_text("transparent PNG")
    image = downloaded(desktop, tmp_path / "example.png")
    assert image.mode == "RGBA" and image.size[0] > 100


@pytest.mark.parametrize("name", ["notes.png", "empty.jpg", "half.jpg"])
def test_a_bad_file_is_explained_where_it_was_dropped(page: Page, files: Path, live_ui: LiveUi, name: str) -> None:
    data = (files / name).read_bytes()
    with pytest.raises(BgRemoveError) as expected:  # REST answers the same bytes with these words
        remove_background(data, name, parse_options(), settings=live_ui.settings, cache=live_ui.cache)
    page.locator("#single-photo input[type=file]").set_input_files(files / name)
    problem = page.locator("#single-photo-problem")
    expect(problem).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(problem).to_contain_text(expected.value.message)
    expect(problem).to_contain_text(expected.value.hint)
    box, photo = problem.bounding_box(), page.locator("#single-photo").bounding_box()
    assert box is not None and photo is not None and box["y"] + box["height"] <= photo["y"] + 20  # at the drop zone
    expect(page.locator("#single-photo img")).to_have_count(0)  # no broken-image sliver
    expect(page.locator("#single-download")).to_be_disabled()
    text = page.locator("body").inner_text()
    assert "Traceback" not in text and "/tmp" not in text and page.locator("[data-testid=toast-body]").count() == 0

    drop_photo(page, files / "product.jpg")  # the next photo works as usual, and the message goes
    expect(problem).to_be_hidden()


def test_crop_margin_and_matting_sliders_wait_for_their_switch(desktop: Page) -> None:
    page = desktop
    open_more_options(page)
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
    margin = page.locator("#single-crop-margin-top input")
    expect(margin).to_be_disabled()  # the same rule: the crop margin needs crop
    page.locator("#single-crop input[type=checkbox]").check()
    expect(margin).to_be_enabled()
    expect(margin).to_have_value("0")  # ticking the box leaves the margin's value alone


def test_on_a_phone_the_model_chooser_stays_clear_of_its_arrow_and_shows_the_licence(
    browser: Browser, live_ui: LiveUi, tmp_path: Path
) -> None:
    page = browser.new_page(viewport=PHONE)
    try:
        page.goto(live_ui.url + "/")
        open_more_options(page)
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
        expect(page.locator("#single-model-info")).to_contain_text("Licence of these weights")
        page.locator("#single-details").click()
        expect(page.locator("#single-model-details")).to_contain_text("birefnet-general-lite")
        expect(page.locator("#single-model-details")).to_contain_text("Licence: MIT")
        expect(page.locator("#single-model-details")).to_contain_text("Source: https://")
    finally:
        page.close()


def test_the_page_speaks_to_people_not_developers(desktop: Page, files: Path) -> None:
    page = desktop
    drop_photo(page, files / "product.jpg")
    open_more_options(page)
    page.locator("#single-details").click()
    expect(page.locator("#single-model-details")).to_contain_text("Runs on:")  # the engine, folded away
    text = page.locator("body").inner_text()
    for jargon in ("GET /api", "REMBG_MODEL_NAME", "CSS order", "alpha above", "engine:", "pymatting", "rgba:"):
        assert jargon not in text, jargon


@pytest.mark.real_model
def test_the_real_model_cuts_out_the_astronaut(desktop: Page, files: Path, tmp_path: Path) -> None:
    page = desktop
    open_more_options(page)
    dropdown = page.locator("#single-model")
    dropdown.locator("input").click()
    page.get_by_role("option", name="isnet-general-use", exact=False).click()
    expect(page.locator("#single-model-info")).to_contain_text("Licence of these weights")
    status = drop_photo(page, files / "astronaut.jpg")
    expect(status).to_contain_text("transparent PNG, 512 × 512 px")
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
    choose(page, "batch-format", "WebP")
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
