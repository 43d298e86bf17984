"""gradio_client against a live server (one per module, tiny model by default; one slow test names the real
isnet-general-use model): /remove and /remove_batch with the schema's options as keyword arguments."""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from skimage import data as skdata

from bgremove.core.errors import BgRemoveError
from bgremove.core.options import parse_options
from bgremove.core.pipeline import remove_background
from tests.ui.conftest import LiveUi, product_photo, write_photo

BROKEN_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 50


@pytest.fixture(scope="module")
def client(live_ui: LiveUi) -> Iterator[Client]:
    yield Client(live_ui.url, verbose=False)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    write_photo(folder / "box.jpg", quality=95)
    write_photo(folder / "box.webp", product_photo((200, 300)), lossless=True)
    Image.new("RGB", (64, 64), (0, 128, 255)).save(folder / "blue.png")
    (folder / "broken.png").write_bytes(BROKEN_PNG)
    Image.fromarray(skdata.astronaut()).save(folder / "astronaut.jpg", quality=95)
    return folder


def test_remove_returns_a_transparent_png_named_after_the_photo(client: Client, photos: Path) -> None:
    output = Path(client.predict(handle_file(str(photos / "box.jpg")), api_name="/remove"))
    image = Image.open(output)
    assert output.name == "box-nobg.png" and image.format == "PNG" and image.mode == "RGBA" and image.size == (320, 240)
    alpha = np.asarray(image)[..., 3]
    assert alpha[0, 0] < 10 and alpha[120, 160] > 200


def test_remove_takes_the_options_as_keywords(client: Client, photos: Path) -> None:
    output = client.predict(handle_file(str(photos / "box.jpg")), crop=True, format="jpg", bg_color="ffffff", api_name="/remove")
    image = Image.open(output)
    assert Path(output).name == "box-nobg.jpg" and image.format == "JPEG"
    assert image.width < 320 and image.height < 240  # cropped to the box
    corners = np.asarray(image)[[0, 0, -1, -1], [0, -1, 0, -1]].astype(int)
    assert (corners >= 200).all(), corners


def test_a_background_image_goes_behind_the_subject(client: Client, photos: Path) -> None:
    output = client.predict(
        handle_file(str(photos / "box.webp")), bg_image=handle_file(str(photos / "blue.png")), api_name="/remove"
    )
    image = np.asarray(Image.open(output).convert("RGB")).astype(int)
    assert np.abs(image[0, 0] - [0, 128, 255]).max() <= 3 and image.shape[:2] == (300, 200)


def test_old_positional_clients_still_work(client: Client, photos: Path) -> None:
    # (image, model, alpha_matting, fg, bg, erode, post_process_mask, only_mask, bg_color): the endpoint's old order
    output = client.predict(handle_file(str(photos / "box.webp")), "", False, 240, 10, 10, False, True, "", api_name="/remove")
    mask = Image.open(output)
    assert mask.mode == "L" and mask.size == (200, 300)


def test_remove_reports_a_broken_file_with_the_cores_message(client: Client, photos: Path, live_ui: LiveUi) -> None:
    with pytest.raises(BgRemoveError) as expected:
        remove_background(BROKEN_PNG, "broken.png", parse_options(), settings=live_ui.settings, cache=live_ui.cache)
    with pytest.raises(AppError) as refused:
        client.predict(handle_file(str(photos / "broken.png")), api_name="/remove")

    def same(text: str) -> str:  # the core's message quotes Pillow's, which names an object address
        return re.sub(r"0x[0-9a-f]+", "0x…", text)

    assert same(str(refused.value)) == same(f"{expected.value.message} {expected.value.hint}")
    assert str(photos) not in str(refused.value) and "/tmp/" not in str(refused.value)


def test_remove_batch_returns_the_zip_and_its_manifest(client: Client, photos: Path) -> None:
    zip_path, manifest = client.predict(
        [handle_file(str(photos / name)) for name in ("box.jpg", "box.webp", "broken.png")],
        format="webp",
        api_name="/remove_batch",
    )
    assert (manifest["count"], manifest["completed"], manifest["failed"]) == (3, 2, 1)
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == ["box-2.webp", "box.webp", "manifest.json"]
        assert json.loads(archive.read("manifest.json")) == manifest
        assert Image.open(archive.open("box.webp")).mode == "RGBA"
    failed = next(item for item in manifest["items"] if item["status"] == "failed")
    assert failed["filename"] == "broken.png" and failed["error"] and failed["hint"]


@pytest.mark.slow
@pytest.mark.real_model
def test_the_real_model_cuts_out_the_astronaut(client: Client, photos: Path) -> None:
    output = client.predict(handle_file(str(photos / "astronaut.jpg")), model="isnet-general-use", api_name="/remove")
    image = Image.open(output)
    assert image.mode == "RGBA" and image.size == (512, 512)
    alpha = np.asarray(image)[..., 3]
    assert alpha[:20, :20].mean() < 13 and alpha[300:480, 100:300].mean() > 230


def test_touch_up_hints_are_keyword_arguments_and_reuse_the_prediction(client: Client, tmp_path: Path, live_ui: LiveUi) -> None:
    from tests.touchup_cases import LEFTOVER, MISSED, region_alpha, touchup_case

    case = touchup_case()
    for name, data in (("case.png", case.photo), ("keep.png", case.keep_mask), ("remove.png", case.remove_mask)):
        (tmp_path / name).write_bytes(data)
    photo = handle_file(str(tmp_path / "case.png"))
    before = np.asarray(Image.open(client.predict(photo, api_name="/remove")).getchannel("A"))
    misses = live_ui.cache.predictions.misses
    output = client.predict(
        photo,
        keep_mask=handle_file(str(tmp_path / "keep.png")),
        remove_mask=handle_file(str(tmp_path / "remove.png")),
        api_name="/remove",
    )
    after = np.asarray(Image.open(output).getchannel("A"))
    assert live_ui.cache.predictions.misses == misses  # the touch-up reused the photo's prediction
    assert region_alpha(before, MISSED) < 0.5 and region_alpha(after, MISSED) > 0.95
    assert region_alpha(before, LEFTOVER) > 0.9 and region_alpha(after, LEFTOVER) < 0.05


def test_a_bad_hint_is_refused_with_the_cores_message(client: Client, tmp_path: Path) -> None:
    from tests.touchup_cases import touchup_case

    (tmp_path / "case.png").write_bytes(touchup_case().photo)
    Image.new("L", (50, 50), 255).save(tmp_path / "square.png")
    with pytest.raises(AppError) as refused:
        client.predict(
            handle_file(str(tmp_path / "case.png")), keep_mask=handle_file(str(tmp_path / "square.png")), api_name="/remove"
        )
    assert "keep_mask is 50x50 but the photo is 300x200" in str(refused.value)
