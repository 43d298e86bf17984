"""image_url and bg_image_url through the remove.bg door under the SSRF rules, against a loopback listener that
records every connection: a refused URL opens no connection and says why; URL_ALLOW_PRIVATE_NETWORKS=true lets the
same URL through.

Network rule: every address here is 127.0.0.0/8 or [::1], spelled in the ways an attacker would spell it; no test
touches a real private, link-local or public address, not even one that expects a refusal.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.removebg.conftest import Listener, SettingsFactory, build_app, decode, error_of, photo
from tests.web.conftest import running

LOOPBACK_SPELLINGS = [
    "http://127.0.0.1:{port}/photo.png",
    "http://localhost:{port}/photo.png",
    "http://LOCALHOST.:{port}/photo.png",
    "http://127.1:{port}/photo.png",
    "http://2130706433:{port}/photo.png",  # decimal
    "http://0x7f000001:{port}/photo.png",  # hex
    "http://0177.0.0.1:{port}/photo.png",  # octal
    "http://127.0.0.2:{port}/photo.png",  # anywhere in 127.0.0.0/8
    "http://[::1]:{port}/photo.png",
    "http://[::ffff:127.0.0.1]:{port}/photo.png",  # IPv4-mapped IPv6
    "https://127.0.0.1:{port}/photo.png",
]


@pytest.fixture(scope="module")
def private_client(removebg_settings: SettingsFactory) -> Iterator[TestClient]:
    """A LAN deployment: URL_ALLOW_PRIVATE_NETWORKS=true."""
    with running(build_app(removebg_settings(URL_ALLOW_PRIVATE_NETWORKS="true"))) as test_client:
        yield test_client


def port_of(listener: Listener) -> int:
    return int(listener.url.rsplit(":", 1)[1])


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_loopback_image_url_is_refused_without_a_connection(client: TestClient, listener: Listener, spelling: str) -> None:
    listener.reset()
    url = spelling.format(port=port_of(listener))
    error = error_of(client.post("/v1.0/removebg", data={"image_url": url}), 400)
    assert error["code"] == "invalid_image_url"
    assert "loopback" in error["title"] and "URL_ALLOW_PRIVATE_NETWORKS" in error["detail"]
    assert listener.connections == []


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS[:4] + LOOPBACK_SPELLINGS[-3:-1])
def test_loopback_bg_image_url_is_refused_without_a_connection(client: TestClient, listener: Listener, spelling: str) -> None:
    listener.reset()
    url = spelling.format(port=port_of(listener)).replace("photo.png", "green.png")
    body = {"image_file_b64": base64.b64encode(photo()).decode(), "bg_image_url": url}
    error = error_of(client.post("/v1.0/removebg", json=body), 400)
    assert error["code"] == "invalid_bg_image_url" and "loopback" in error["title"]
    assert listener.connections == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [("file:///etc/passwd", "only http and https"), ("http://user:secret@127.0.0.1/photo.png", "user name or password")],
)
def test_other_refusals_say_why(client: TestClient, listener: Listener, url: str, reason: str) -> None:
    listener.reset()
    error = error_of(client.post("/v1.0/removebg", json={"image_url": url}), 400)
    assert error["code"] == "invalid_image_url" and reason in error["title"]
    assert listener.connections == []


def test_private_networks_allowed_fetches_image_and_background(private_client: TestClient, listener: Listener) -> None:
    listener.reset()
    response = private_client.post(
        "/v1.0/removebg",
        json={"image_url": f"{listener.url}/photo.png", "bg_image_url": f"{listener.url}/green.png", "format": "png"},
    )
    assert response.status_code == 200, response.text
    assert len(listener.connections) == 2  # the photo and the background, one connection each
    image = decode(response.content).convert("RGB")
    assert image.size == (400, 300) and image.getpixel((0, 0)) == (0, 200, 0)


def test_private_networks_allowed_via_localhost_spelling(private_client: TestClient, listener: Listener) -> None:
    listener.reset()
    response = private_client.post("/v1.0/removebg", data={"image_url": f"http://localhost:{port_of(listener)}/photo.png"})
    assert response.status_code == 200, response.text
    assert listener.connections


def test_a_failed_download_is_failed_image_download(private_client: TestClient, listener: Listener) -> None:
    error = error_of(private_client.post("/v1.0/removebg", data={"image_url": f"{listener.url}/missing.png"}), 400)
    assert error["code"] == "failed_image_download" and "404" in error["title"]
    body = {"image_file_b64": base64.b64encode(photo()).decode(), "bg_image_url": f"{listener.url}/missing.png"}
    assert error_of(private_client.post("/v1.0/removebg", json=body), 400)["code"] == "failed_bg_download"
