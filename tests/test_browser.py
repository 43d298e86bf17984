"""Real-browser end to end: Chromium (Debian's /usr/bin/chromium) drives the Gradio UI of `python app.py`.

Uses the session-scoped `real_server` (the real isnet-general-use model), uploads real photos through the
components' file inputs, waits for the results, captures the downloads and checks their contents. Also writes
assets/screenshot-single.png and assets/screenshot-batch.png for the README.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Download, Page, expect, sync_playwright
from skimage import data as skdata

from tests.conftest import LiveServer

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying to reach Google's services on a closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 1000}
INFERENCE_TIMEOUT_MS = 60_000  # one image takes 2-3 s on 2 cores; leave room for a slow CI machine
BATCH_TIMEOUT_MS = 120_000
NOT_AN_IMAGE = b"Shopping list: milk, eggs, bread.\nThis is a text file wearing a .png name.\n"


def write_jpeg(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path, "JPEG", quality=95)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_app(browser: Browser, server: LiveServer) -> tuple[Page, list[str]]:
    """A fresh page on the app, once Gradio has rendered; also returns the list of uncaught page errors."""
    page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    expect(page.locator("#run-single")).to_be_visible()
    return page, errors


def wait_images_loaded(page: Page, selector: str, count: int) -> None:
    """At least `count` <img> under `selector`, all decoded (so screenshots show them, not empty boxes)."""
    page.wait_for_function(
        """([selector, count]) => {
            const images = [...document.querySelectorAll(selector + " img")];
            return images.length >= count && images.every(img => img.complete && img.naturalWidth > 0);
        }""",
        arg=[selector, count],
    )


def download(page: Page, selector: str, target: Path) -> tuple[Download, Path]:
    button = page.locator(selector)
    expect(button).to_be_enabled()
    with page.expect_download() as info:
        button.click()
    dl = info.value
    assert dl.failure() is None, dl.failure()
    dl.save_as(target)
    return dl, target


def table_rows(page: Page) -> dict[str, str]:
    """The batch table's body rows as {file name: "cell | cell | ..."}, read through the ARIA grid roles
    (Gradio 6 renders the rows as role=row / role=gridcell divs and keeps a hidden <tbody> for sizing)."""
    rows: dict[str, str] = {}
    for row in page.locator("#batch-table [role=row]").filter(has=page.locator("[role=gridcell]")).all():
        cells = [cell.strip() for cell in row.locator("[role=gridcell]").all_inner_texts()]
        if cells and cells[0]:
            rows[cells[0]] = " | ".join(cells)
    return rows


# --- Single image tab ----------------------------------------------------------------------------


def test_single_image_upload_remove_and_download_png(browser: Browser, real_server: LiveServer, tmp_path: Path) -> None:
    photo = write_jpeg(tmp_path / "astronaut.jpg", skdata.astronaut())
    page, errors = open_app(browser, real_server)
    try:
        expect(page.locator("#download-png")).to_be_disabled()  # nothing to download before a run

        page.locator("#photo input[type=file]").set_input_files(photo)
        expect(page.locator("#photo img[src*='astronaut']")).to_be_visible()  # uploaded: the preview shows it
        wait_images_loaded(page, "#photo", 1)
        page.locator("#run-single").click()

        status = page.locator("#status")
        expect(status).to_contain_text("Done in", timeout=INFERENCE_TIMEOUT_MS)
        expect(status).to_contain_text("512 x 512 px")
        expect(status).to_contain_text("isnet-general-use")
        expect(status).not_to_contain_text("Failed")

        cutout = page.locator("#cutout img")
        expect(cutout).to_be_visible()
        assert re.search(r"/astronaut\.png$", cutout.get_attribute("src") or ""), cutout.get_attribute("src")
        wait_images_loaded(page, "#cutout", 1)
        wait_images_loaded(page, "#compare", 2)  # before and after

        ASSETS.mkdir(exist_ok=True)
        page.screenshot(path=ASSETS / "screenshot-single.png", full_page=True)

        dl, saved = download(page, "#download-png", tmp_path / "download.png")
        assert dl.suggested_filename == "astronaut.png"
        image = Image.open(io.BytesIO(saved.read_bytes()))
        assert image.format == "PNG"
        assert image.mode == "RGBA"
        assert image.size == (512, 512)
        alpha = np.asarray(image)[..., 3]
        assert (alpha < 10).mean() > 0.05, "no transparent background in the downloaded cutout"
        assert (alpha > 245).mean() > 0.2, "no opaque subject in the downloaded cutout"
        assert alpha[:20, :20].mean() < 25  # the top-left corner (wall) is removed
        assert alpha[300:480, 100:300].mean() > 230  # the orange suit is kept
        assert errors == []
    finally:
        page.close()


# --- Batch tab -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_batch(browser: Browser, real_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    """The Batch tab after a run over two real photos and one text file named notes.png."""
    folder = tmp_path_factory.mktemp("batch-upload")
    files = [write_jpeg(folder / "chelsea.jpg", skdata.chelsea()), write_jpeg(folder / "coffee.jpg", skdata.coffee())]
    (folder / "notes.png").write_bytes(NOT_AN_IMAGE)
    files.append(folder / "notes.png")

    page, errors = open_app(browser, real_server)
    page.get_by_role("tab", name="Batch").click()
    uploads = page.locator("#batch-files")
    expect(uploads).to_be_visible()
    expect(page.locator("#download-zip")).to_be_disabled()
    expect(page.locator("#download-json")).to_be_disabled()

    uploads.locator("input[type=file]").set_input_files(files)
    for name in ("chelsea", "coffee", "notes"):  # the list shows once the upload finished
        expect(uploads).to_contain_text(name)
    page.locator("#run-batch").click()

    expect(page.locator("#batch-status")).to_contain_text("completed", timeout=BATCH_TIMEOUT_MS)
    wait_images_loaded(page, "#gallery", 2)
    ASSETS.mkdir(exist_ok=True)
    page.screenshot(path=ASSETS / "screenshot-batch.png", full_page=True)
    yield page
    assert errors == [], errors
    page.close()


def test_batch_status_and_table_report_each_file(finished_batch: Page) -> None:
    page = finished_batch
    status = page.locator("#batch-status").inner_text()
    assert "2 completed, 1 failed of 3." in status, status
    assert "notes.png" in status and "not a supported image" in status, status

    rows = table_rows(page)
    assert set(rows) == {"chelsea.jpg", "coffee.jpg", "notes.png"}, rows
    assert "| Completed |" in rows["chelsea.jpg"] and "451 x 300" in rows["chelsea.jpg"], rows
    assert "| Completed |" in rows["coffee.jpg"] and "600 x 400" in rows["coffee.jpg"], rows
    assert "| Failed |" in rows["notes.png"] and "not a supported image" in rows["notes.png"], rows
    table = page.locator("#batch-table").inner_text()
    assert table.count("Completed") == 2 and table.count("Failed") == 1, table
    assert "Queued" not in table and "Processing" not in table, table

    expect(page.locator("#gallery img")).to_have_count(2)


def check_manifest(manifest: dict) -> None:
    assert manifest["model"] == "isnet-general-use"
    assert (manifest["count"], manifest["completed"], manifest["failed"]) == (3, 2, 1), manifest
    items = {item["filename"]: item for item in manifest["items"]}
    assert set(items) == {"chelsea.jpg", "coffee.jpg", "notes.png"}
    for name, size in (("chelsea", (451, 300)), ("coffee", (600, 400))):
        item = items[f"{name}.jpg"]
        assert item["status"] == "completed" and item["output"] == f"{name}.png", item
        assert (item["width"], item["height"]) == size, item
    failed = items["notes.png"]
    assert failed["status"] == "failed" and failed["output"] is None, failed
    assert "not a supported image" in failed["error"], failed
    assert failed["hint"], failed


def test_batch_download_zip(finished_batch: Page, tmp_path: Path) -> None:
    dl, saved = download(finished_batch, "#download-zip", tmp_path / "results.zip")
    assert dl.suggested_filename.endswith(".zip")
    with zipfile.ZipFile(saved) as archive:
        assert sorted(archive.namelist()) == ["chelsea.png", "coffee.png", "manifest.json"]
        manifest = json.loads(archive.read("manifest.json"))
        for name, size in (("chelsea.png", (451, 300)), ("coffee.png", (600, 400))):
            image = Image.open(io.BytesIO(archive.read(name)))
            assert image.format == "PNG" and image.mode == "RGBA" and image.size == size
            alpha = np.asarray(image)[..., 3]
            assert (alpha < 10).any() and (alpha > 245).any(), name
    check_manifest(manifest)


def test_batch_download_json_is_the_manifest(finished_batch: Page, tmp_path: Path) -> None:
    dl, saved = download(finished_batch, "#download-json", tmp_path / "results.json")
    assert dl.suggested_filename.endswith(".json")
    manifest = json.loads(saved.read_text())
    check_manifest(manifest)
    _, zipped = download(finished_batch, "#download-zip", tmp_path / "results.zip")
    with zipfile.ZipFile(zipped) as archive:
        assert json.loads(archive.read("manifest.json")) == manifest
