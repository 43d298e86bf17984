"""gradio_client against a live server on the real model: the two named endpoints and nothing else public."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from skimage import data as skdata

from tests.conftest import decode_png


@pytest.fixture(scope="module")
def client(real_server):
    return Client(real_server.url, verbose=False)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(skdata.astronaut()).save(folder / "astronaut.jpg")
    Image.fromarray(skdata.rocket()).save(folder / "rocket.webp")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    return folder


def test_only_the_named_endpoints_are_public(client):
    endpoints = client.view_api(print_info=False, return_format="dict")
    assert set(endpoints["named_endpoints"]) == {"/remove", "/remove_batch"}
    assert endpoints["unnamed_endpoints"] == {}


def test_remove_returns_a_transparent_png(client, photos):
    path = client.predict(handle_file(str(photos / "astronaut.jpg")), api_name="/remove")
    with open(path, "rb") as handle:
        image = decode_png(handle.read())
    assert image.mode == "RGBA" and image.size == (512, 512)
    alpha = np.asarray(image)[..., 3]
    assert alpha[:20, :20].mean() < 13 and alpha[300:480, 100:300].mean() > 230


def test_remove_with_options(client, photos):
    path = client.predict(handle_file(str(photos / "rocket.webp")), only_mask=True, api_name="/remove")
    mask = Image.open(path)
    assert mask.mode == "L" and mask.size == (skdata.rocket().shape[1], skdata.rocket().shape[0])


def test_remove_reports_bad_input(client, photos):
    with pytest.raises(Exception, match="cannot be decoded"):
        client.predict(handle_file(str(photos / "broken.png")), api_name="/remove")


def test_remove_batch_returns_zip_and_manifest(client, photos):
    zip_path, manifest = client.predict(
        [handle_file(str(photos / name)) for name in ("astronaut.jpg", "rocket.webp", "broken.png")],
        api_name="/remove_batch",
    )
    assert (manifest["completed"], manifest["failed"]) == (2, 1)
    with zipfile.ZipFile(zip_path) as archive:
        assert set(archive.namelist()) == {"astronaut.png", "rocket.png", "manifest.json"}
        assert json.loads(archive.read("manifest.json")) == manifest
        rocket = Image.open(archive.open("rocket.png"))
        assert rocket.mode == "RGBA" and rocket.size == (skdata.rocket().shape[1], skdata.rocket().shape[0])
    failed = next(item for item in manifest["items"] if item["status"] == "failed")
    assert failed["filename"] == "broken.png" and failed["error"] and failed["hint"]
