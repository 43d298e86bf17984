"""Time the browser flow as a person meets it: drop a photo -> the result on screen, then a background change ->
the re-composed result on screen, for a 1 MP and a 12 MP photo, with the server's real default model.

    python scripts/ui_latency.py            # prints one line per photo size

Serves the app in this process (settings from the environment; the model must be on disk) and drives Debian's
Chromium headless at 1366x768, through the same steps as tests/ui/test_browser.py. The photos are
assets/example-chelsea.jpg scaled up, written to a temporary folder. Times include the upload and the browser
drawing the images ("shown": the result on screen; "ready": the download offered, which for a photo over
3 MP comes after a medium-size preview); one run each, so expect some noise on a shared machine.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.screenshots import ASSETS, CHROMIUM, CHROMIUM_ARGS, SCREENS, serve  # noqa: E402

SIZES = {"1 MP": (1224, 816), "12 MP": (4240, 2832)}


def result_src(page: Page) -> str | None:
    images = page.locator("#single-result img")
    return images.last.get_attribute("src") if images.count() else None


def timed(page: Page, act: str, path: Path | None = None) -> tuple[float, float, str]:
    """Seconds from the action to the new result on screen, and to the download being ready; the status line."""
    before = result_src(page)
    started = time.perf_counter()
    if path is not None:
        page.locator("#single-photo input[type=file]").set_input_files(path)
    else:
        page.locator("#single-bg-mode").get_by_label(act, exact=True).check()
    page.wait_for_function(
        """(before) => {
            const images = [...document.querySelectorAll('#single-result img')];
            const src = images.length ? images[images.length - 1].getAttribute('src') : null;
            return src && src !== before && images.every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=before,
        timeout=600_000,
    )
    shown = time.perf_counter() - started
    page.wait_for_function(
        "() => /^(Done|Failed)/.test(document.querySelector('#single-status').innerText.trim())", timeout=600_000
    )
    ready = time.perf_counter() - started
    return shown, ready, page.locator("#single-status").inner_text().strip().splitlines()[0]


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="bgremove-latency-"))
    photos = {}
    with Image.open(ASSETS / "example-chelsea.jpg") as source:
        for label, size in SIZES.items():
            photos[label] = folder / f"chelsea-{size[0]}x{size[1]}.jpg"
            source.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(photos[label], quality=90)
    with serve() as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for label, path in photos.items():
                page = browser.new_page(viewport=SCREENS["desktop"])
                page.goto(url + "/")
                drop = timed(page, "", path)
                white = timed(page, "White")
                back = timed(page, "Transparent")
                print(
                    f"{label:>6}: drop -> result shown {drop[0]:5.2f} s, download ready {drop[1]:5.2f} s | "
                    f"background White: shown {white[0]:4.2f} s, ready {white[1]:4.2f} s | "
                    f"back to transparent: shown {back[0]:4.2f} s, ready {back[1]:4.2f} s"
                )
                print(f"        the page said: {drop[2]!r} / {white[2]!r}")
                page.close()
        finally:
            browser.close()


if __name__ == "__main__":
    main()
