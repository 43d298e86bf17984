"""Refresh the README's screenshots of the UI (the tests never write into assets/).

    python scripts/screenshots.py                  # into assets/
    python scripts/screenshots.py --out /tmp/shots # somewhere else

The touch-up (`screenshot-touchup-before|strokes|after.png`: a Keep stroke down the model space shuttle).
At a laptop's 1366x768 and a phone's 390x844: the landing screen, a result (assets/example-astronaut.jpg), the
options opened (the whole page), and a file that is not an image (`screenshot-<what>-<desktop|phone>.png`, the
first screen only for the others);
plus the README's full-page `screenshot-single.png` and `screenshot-batch.png` (a batch of every
assets/example-*.jpg). Serves the app in this process (settings from the environment, so the default
isnet-general-use model; it must be on disk: `python -m bgremove models pull`). The batch is a durable job in
DATA_DIR (default ~/.bgremove; set DATA_DIR=/tmp/somewhere to keep it out of your home).
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from playwright.sync_api import Page, ViewportSize, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bgremove.core.settings import load_settings  # noqa: E402  (the checkout's package, not an installed one)
from bgremove.web.app import create_app  # noqa: E402

ASSETS = ROOT / "assets"
CHROMIUM = "/usr/bin/chromium"  # Debian's; launched headless by this script and by tests/ui
# Without the background-networking flags Chromium keeps trying to reach Google's services on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 1000}
SCREENS: dict[str, ViewportSize] = {"desktop": {"width": 1366, "height": 768}, "phone": {"width": 390, "height": 844}}
NOT_AN_IMAGE = b"Shopping list: milk, eggs, bread.\n"
TIMEOUT_MS = 180_000


@contextmanager
def serve() -> Iterator[str]:
    """The app on 127.0.0.1 and a free port, once its default model is loaded."""
    app = create_app(load_settings())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", log_config=None))
    thread = threading.Thread(target=server.run, name="screenshots-uvicorn", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while not (health := httpx.get(f"{url}/api/health", timeout=5).json())["ready"]:
            if health["status"] == "error" or time.monotonic() > deadline:
                raise SystemExit(f"the model did not load: {health.get('error') or health.get('message')}")
            time.sleep(0.5)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_images(page: Page, selector: str, count: int, timeout: float | None = TIMEOUT_MS) -> None:
    """At least `count` decoded <img> under `selector` (so screenshots show them, not empty boxes).

    timeout: ms; None is Playwright's default (what the browser tests use)."""
    page.wait_for_function(
        """([selector, count]) => {
            const images = [...document.querySelectorAll(selector + " img")];
            return images.length >= count && images.every(img => img.complete && img.naturalWidth > 0);
        }""",
        arg=[selector, count],
        timeout=timeout,
    )


def drop_photo(page: Page, path: Path) -> None:
    """What a person does: put a photo on the drop zone; it is processed on arrival."""
    page.locator("#single-photo input[type=file]").set_input_files(path)


def wait_result(page: Page, timeout: float | None = TIMEOUT_MS) -> None:
    """The status says Done (or Failed) and the before/after slider shows both images."""
    page.wait_for_function(
        "() => /^(Done in|Failed)/.test(document.querySelector('#single-status').innerText.trim())", timeout=timeout
    )
    wait_images(page, "#single-result", 2, timeout=timeout)
    if (page.viewport_size or VIEWPORT)["width"] <= 640:  # a phone scrolls the result into view
        page.wait_for_function("() => document.getElementById('single-status').getBoundingClientRect().top < 200")
    page.wait_for_timeout(1000)  # the slider fades its images in


def single(page: Page, url: str, target: Path) -> None:
    page.goto(url + "/")
    drop_photo(page, ASSETS / "example-astronaut.jpg")
    wait_result(page)
    page.screenshot(path=target, full_page=True)


def screens(page: Page, url: str, out: Path, screen: str) -> list[Path]:
    """Landing, result, options open and a bad file, as the first screen shows them."""
    shots = [out / f"screenshot-{what}-{screen}.png" for what in ("landing", "result", "options", "bad-file")]
    page.goto(url + "/")
    expect(page.locator("#single-photo")).to_be_visible()
    page.wait_for_timeout(500)
    page.screenshot(path=shots[0])
    drop_photo(page, ASSETS / "example-astronaut.jpg")
    wait_result(page)
    page.screenshot(path=shots[1])
    page.locator("#single-advanced").click()
    page.wait_for_timeout(500)
    page.screenshot(path=shots[2], full_page=True)  # every option, down to the last
    page.goto(url + "/")
    page.locator("#single-photo input[type=file]").set_input_files(
        {"name": "notes.png", "mimeType": "image/png", "buffer": NOT_AN_IMAGE}
    )
    expect(page.locator("#single-photo-problem")).to_be_visible(timeout=TIMEOUT_MS)
    page.wait_for_timeout(300)
    page.screenshot(path=shots[3])
    return shots


# Where the touch-up strokes go, as fractions of the photo (left, top, right, bottom) of example-astronaut.jpg:
# a Keep stroke down the model space shuttle, which the model leaves out (a user who wants it in the picture paints
# it back), on the right where the before/after slider shows the "after" side.
KEEP_STROKE = (0.87, 0.08, 0.87, 0.45)


def photo_box(page: Page, selector: str, photo: Path) -> tuple[float, float, float, float]:
    """(x, y, width, height) in page pixels of `photo` on the editor's canvas: centred, at the zoom its toolbar shows
    (of the display copy, at most DISPLAY_SIDE px on its longer side)."""
    from PIL import Image

    from bgremove.web.ui_touchup import DISPLAY_SIDE

    canvas = page.locator(f"{selector} canvas").first
    box = canvas.bounding_box()
    assert box is not None
    zoom = float(page.locator(f"{selector} .zoom-number").inner_text().strip().rstrip("%")) / 100
    with Image.open(photo) as image:
        image.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
        width, height = image.width * zoom, image.height * zoom
    return box["x"] + (box["width"] - width) / 2, box["y"] + (box["height"] - height) / 2, width, height


def touchup(page: Page, url: str, out: Path) -> list[Path]:
    """The touch-up: the result with the editor open (before), the strokes painted, the result after them."""
    shots = [out / f"screenshot-touchup-{what}.png" for what in ("before", "strokes", "after")]
    page.goto(url + "/")
    drop_photo(page, ASSETS / "example-astronaut.jpg")
    wait_result(page)
    page.locator("#single-touchup").click()
    editor = "#single-touchup-editor"
    expect(page.locator(f"{editor} canvas").first).to_be_visible()
    page.locator(f"{editor} canvas").first.scroll_into_view_if_needed()  # the mouse paints only on screen
    page.wait_for_timeout(1000)
    page.screenshot(path=shots[0], full_page=True)
    shown = page.locator("#single-result img").last.get_attribute("src")
    x, y, width, height = photo_box(page, editor, ASSETS / "example-astronaut.jpg")
    left, top, right, bottom = KEEP_STROKE
    page.mouse.move(x + left * width, y + top * height)
    page.mouse.down()
    page.mouse.move(x + right * width, y + bottom * height, steps=20)
    page.mouse.up()
    page.screenshot(path=shots[1], full_page=True)
    page.wait_for_function(
        "(before) => { const i = [...document.querySelectorAll('#single-result img')]; "
        "return i.length && i[i.length - 1].getAttribute('src') !== before; }",
        arg=shown,
        timeout=60_000,
    )
    wait_result(page)
    page.screenshot(path=shots[2], full_page=True)
    return shots


def batch(page: Page, url: str, target: Path) -> None:
    photos = sorted(ASSETS.glob("example-*.jpg"))
    page.goto(url + "/")
    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-files input[type=file]").set_input_files(photos)
    for photo in photos:
        expect(page.locator("#batch-files")).to_contain_text(photo.stem)
    page.locator("#batch-run").click()
    # The batch runs as a job the page polls: wait for its summary ("Done: all 4 completed.", "Partly done: ...",
    # "Failed: ..."), not the progress ("Processing: 2 of 4 done."), and for Download All to be offered.
    expect(page.locator("#batch-status")).to_contain_text(re.compile("completed|could be processed"), timeout=TIMEOUT_MS)
    expect(page.locator("#batch-download-zip")).to_be_enabled(timeout=TIMEOUT_MS)
    wait_images(page, "#batch-gallery", len(photos))
    page.screenshot(path=target, full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ASSETS, help="folder for the PNGs (default: assets/)")
    parser.add_argument("--no-batch", action="store_true", help="skip the batch screenshot")
    parser.add_argument("--touchup-only", action="store_true", help="only the touch-up screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with serve() as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            written += touchup(page, url, args.out)
            page.close()
            if args.touchup_only:
                return print(*written, sep="\n")
            for screen, viewport in SCREENS.items():
                page = browser.new_page(viewport=viewport)
                written += screens(page, url, args.out, screen)
                page.close()
            page = browser.new_page(viewport=VIEWPORT)
            single(page, url, args.out / "screenshot-single.png")
            written.append(args.out / "screenshot-single.png")
            if not args.no_batch:
                batch(page, url, args.out / "screenshot-batch.png")
                written.append(args.out / "screenshot-batch.png")
        finally:
            browser.close()
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
