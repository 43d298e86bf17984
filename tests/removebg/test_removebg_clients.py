"""Published remove.bg clients, installed from their registries, against one real uvicorn server on 127.0.0.1:

- PyPI `remove-bg-api` (by the author of carvekit): its base URL is the module constant `API_URL`. It calls
  GET /v1.0/account from its constructor and POST /v1.0/removebg with multipart, form and base64 inputs, and maps
  400/403/429 to its own exception classes.
- npm `remove.bg` (the most used Node client): it hard-codes https://api.remove.bg/v1.0/removebg and has no option
  for the base URL, so the driver script points its HTTP library's `post()` at the local server. It sends JSON
  bodies with JSON booleans, `Accept: application/json`, and multipart uploads with unset fields.

Neither is skipped when missing: the Python one is installed with pip into a temporary folder (requirements-dev.txt
normally has it already), the Node one with npm into a temporary folder.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image

from bgremove.web.removebg import UNLIMITED
from tests.conftest import encode, square_photo
from tests.removebg.conftest import KEY, blank, decode

pytestmark = pytest.mark.slow

PYTHON_CLIENT = "remove-bg-api==0.2.1"
NODE_CLIENT = "remove.bg@1.3.0"
NO_PROXY_ENV = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}

# The npm client hard-codes remove.bg's host; its HTTP library (unirest) is shared through require()'s cache, so
# wrapping unirest.post before the client is loaded sends every call to REMOVEBG_BASE_URL instead.
NODE_DRIVER = """
const unirest = require("unirest");
const post = unirest.post;
unirest.post = (url, ...rest) => post(url.replace("https://api.remove.bg", process.env.REMOVEBG_BASE_URL), ...rest);
const removebg = require("remove.bg");
(async () => {
  const results = [];
  for (const [method, options] of JSON.parse(process.argv[2])) {
    try { results.push({ ok: true, result: await removebg[method](options) }); }
    catch (error) { results.push({ ok: false, error: error === undefined ? null : error }); }
  }
  process.stdout.write(JSON.stringify(results));
})();
"""


@pytest.fixture(scope="session")
def remove_bg_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The PyPI client: imported as installed, else pip-installed into a temporary folder for this session."""
    added = None
    try:
        module = importlib.import_module("remove_bg_api")
    except ImportError:
        target = tmp_path_factory.mktemp("pypi-client")
        has_requests = importlib.util.find_spec("requests") is not None
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
                str(target),
                *(["--no-deps"] if has_requests else []),
                PYTHON_CLIENT,
            ],
            check=True,
            timeout=300,
            env=NO_PROXY_ENV | {"PIP_NO_INPUT": "1"},
        )
        added = str(target)
        sys.path.insert(0, added)
        module = importlib.import_module("remove_bg_api")
    yield module
    if added:
        sys.path.remove(added)


@pytest.fixture()
def python_client(remove_bg_api: ModuleType, removebg_server: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The client's one base-URL setting (a module constant), pointed at the local server."""
    monkeypatch.setattr(remove_bg_api, "API_URL", f"{removebg_server}/v1.0")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return remove_bg_api


@pytest.fixture(scope="session")
def node_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The npm client installed into a temporary folder, with the driver script beside it."""
    npm = shutil.which("npm")
    assert npm, "npm is needed to install the remove.bg Node client (apt-get install npm)"
    folder = tmp_path_factory.mktemp("npm-client")
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(folder), NODE_CLIENT],
        check=True,
        timeout=300,
        env=NO_PROXY_ENV,
        capture_output=True,
    )
    (folder / "drive.js").write_text(NODE_DRIVER)
    return folder


def run_node(folder: Path, base_url: str, calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node, "node is needed for the remove.bg Node client"
    done = subprocess.run(
        [node, str(folder / "drive.js"), json.dumps(calls)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        env=NO_PROXY_ENV | {"REMOVEBG_BASE_URL": base_url},
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


# --- PyPI: remove-bg-api ----------------------------------------------------------------------------------------


def test_python_client_reads_the_account_balance(python_client: ModuleType) -> None:
    client = python_client.RemoveBg(KEY)  # the constructor calls GET /v1.0/account
    assert client.account.balance() == UNLIMITED
    assert client.account.get_balance_dict() == {"total": UNLIMITED, "subscription": 0, "payg": 0, "enterprise": UNLIMITED}
    assert client.account.free_api_calls() == UNLIMITED


def test_python_client_removes_from_a_file_at_its_default_size(python_client: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    square_photo((800, 600)).save(path, quality=95)
    result = python_client.RemoveBg(KEY).remove_bg_file(str(path))  # multipart image_file, size=preview, format=auto
    image = decode(result)
    assert image.format == "PNG" and image.mode == "RGBA"
    assert image.width * image.height <= 250_000 and image.size == (577, 433)


def test_python_client_base64_with_options(python_client: ModuleType) -> None:
    photo = base64.b64encode(encode(square_photo((400, 300)), "PNG")).decode()
    options = {"size": "full", "format": "auto", "bg_color": "ff0000", "crop": "true", "crop_margin": "10px"}
    image = decode(python_client.RemoveBg(KEY).remove_bg_base64(photo, data=options))
    assert image.format == "JPEG" and image.size == (220, 170)  # auto + a background = JPG
    red, green, blue = image.getpixel((0, 0))  # type: ignore[misc]
    assert red > 225 and green < 30 and blue < 30  # pure red after JPEG compression


def test_python_client_saves_to_a_file(python_client: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    returned = python_client.RemoveBg(KEY).remove_bg_bytes(encode(square_photo(), "PNG"), out_path=str(out), raw=False)
    assert returned == str(out) and Image.open(out).size == (200, 120)


def test_python_client_raises_its_own_errors(python_client: ModuleType) -> None:
    errors = python_client.Errors
    client = python_client.RemoveBg(KEY)
    with pytest.raises(errors.ApiErrorCode400):  # unknown_foreground
        client.remove_bg_bytes(blank())
    with pytest.raises(errors.ApiErrorCode400):  # a loopback URL: refused, no connection
        client.remove_bg_url("http://127.0.0.1:9/photo.png")
    with pytest.raises(errors.ApiErrorCode403):  # the constructor's account call with a wrong key
        python_client.RemoveBg("definitely-not-the-key")


# --- npm: remove.bg ----------------------------------------------------------------------------------------------


def test_node_client_json_base64_and_multipart_file(node_client: Path, removebg_server: str, tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    square_photo((400, 300)).save(path)
    photo = base64.b64encode(path.read_bytes()).decode()
    results = run_node(
        node_client,
        removebg_server,
        [
            (
                "removeBackgroundFromImageBase64",
                {"apiKey": KEY, "base64img": photo, "size": "regular", "crop": True, "bg_color": "81d4fa", "type": "product"},
            ),
            ("removeBackgroundFromImageFile", {"apiKey": KEY, "path": str(path), "size": "full", "scale": "80%"}),
        ],
    )
    assert all(result["ok"] for result in results), results
    cropped, scaled = (result["result"] for result in results)
    image = decode(base64.b64decode(cropped["base64img"]))
    assert image.format == "JPEG" and image.size == (200, 150)  # JSON crop=true; auto + bg_color = JPG
    assert (cropped["resultWidth"], cropped["resultHeight"], cropped["creditsCharged"]) == ("200", "150", "0")
    assert cropped["detectedType"] == "product"
    image = decode(base64.b64decode(scaled["base64img"]))
    assert image.format == "PNG" and image.size == (400, 300)
    box = image.getchannel("A").point(lambda value: 255 if value > 128 else 0).getbbox()
    assert box is not None and abs(box[0] - 40) <= 2 and abs(box[2] - 360) <= 2  # scale=80%, centred


def test_node_client_gets_remove_bg_errors(node_client: Path, removebg_server: str) -> None:
    photo = base64.b64encode(encode(square_photo(), "PNG")).decode()
    results = run_node(
        node_client,
        removebg_server,
        [
            ("removeBackgroundFromImageBase64", {"apiKey": "definitely-not-the-key", "base64img": photo}),
            ("removeBackgroundFromImageUrl", {"apiKey": KEY, "url": "http://[::1]:9/photo.png"}),
            ("removeBackgroundFromImageBase64", {"apiKey": KEY, "base64img": photo, "size": "enormous"}),
        ],
    )
    assert not any(result["ok"] for result in results), results
    codes = [result["error"][0]["code"] for result in results]
    assert codes == ["auth_failed", "invalid_image_url", "invalid_size"]
    assert all(result["error"][0]["title"] for result in results)
