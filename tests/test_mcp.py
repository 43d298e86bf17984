"""MCP_SERVER=1: an MCP client lists the removal tools and cuts out a `data:` URI image over streamable HTTP."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from PIL import Image

from bgremove.core.settings import load_settings
from bgremove.core.errors import ConfigError
from tests.conftest import ROOT, LiveServer, encode, square_photo, start_server, stop_server


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("mcp-server")
    server = start_server(workdir, MCP_SERVER="1", REMBG_MODEL_NAME=str(tiny_model),
                          REMBG_SESSION_PATH=str(workdir / "home"), NO_PROXY="127.0.0.1,localhost")
    yield server
    stop_server(server)


@pytest.mark.parametrize(("env", "expected"), [
    ({}, False), ({"MCP_SERVER": "1"}, True), ({"MCP_SERVER": "off"}, False), ({"GRADIO_MCP_SERVER": "True"}, True),
    ({"GRADIO_MCP_SERVER": "true", "MCP_SERVER": "0"}, False),  # ours wins over Gradio's
])
def test_mcp_server_setting(env, expected):
    assert load_settings(env).mcp_server is expected


def test_bad_mcp_server_value_stops_start_up():
    with pytest.raises(ConfigError, match="MCP_SERVER='maybe' is invalid: expected 1, true, yes, on, 0, false, no or off"):
        load_settings({"MCP_SERVER": "maybe"})


def test_mcp_server_without_the_mcp_package_says_what_to_install(tmp_path, tiny_model):
    code = "import sys; sys.modules['mcp'] = None; import app"  # None in sys.modules: as if not installed
    env = {**os.environ, "MCP_SERVER": "1", "REMBG_MODEL_NAME": str(tiny_model), "REMBG_SESSION_PATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: MCP_SERVER=1 needs the mcp package. Run: pip install -r requirements-mcp.txt")


async def _session(url: str, work: Any) -> Any:
    async with streamable_http_client(f"{url}/gradio_api/mcp/") as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)


def test_tools_are_listed_with_their_docstrings(mcp_server):
    tools = asyncio.run(_session(mcp_server.url, lambda s: s.list_tools())).tools
    by_name = {tool.name: tool for tool in tools}
    assert {"remove_image_background", "remove_backgrounds_batch"} <= set(by_name), sorted(by_name)
    remove = by_name["remove_image_background"]
    assert remove.description.startswith("Remove the background of one image (PNG, JPEG or WebP).")
    properties = remove.inputSchema["properties"]
    assert properties["image"]["description"].startswith("the photo to cut out")
    assert "#rrggbb" in properties["bg_color"]["description"]
    assert remove.inputSchema["required"] == ["image"]
    assert "zip" in by_name["remove_backgrounds_batch"].description


def test_remove_tool_cuts_out_a_data_uri_image(mcp_server):
    photo = "data:image/png;base64," + base64.b64encode(encode(square_photo((90, 60)), "PNG")).decode()
    result = asyncio.run(_session(mcp_server.url, lambda s: s.call_tool("remove_image_background", {"image": photo})))
    assert not result.isError, result.content
    images = [item for item in result.content if item.type == "image"]
    assert len(images) == 1 and images[0].mimeType == "image/png", result.content
    cutout = Image.open(io.BytesIO(base64.b64decode(images[0].data)))
    assert cutout.format == "PNG" and cutout.mode == "RGBA" and cutout.size == (90, 60)
    alpha = np.asarray(cutout)[..., 3]
    assert alpha[30, 45] > 200 and alpha[2, 2] < 50  # bright centre kept, dark corner transparent
    links = [item.text for item in result.content if item.type == "text"]
    assert links and links[0].startswith("Image URL: http://127.0.0.1:"), links


def test_remove_tool_reports_a_bad_image_as_a_tool_error(mcp_server):
    junk = "data:image/png;base64," + base64.b64encode(b"not an image at all").decode()
    result = asyncio.run(_session(mcp_server.url, lambda s: s.call_tool("remove_image_background", {"image": junk})))
    assert result.isError
    assert "is not a supported image" in result.content[0].text and "Accepted: png" in result.content[0].text
