"""MCP_SERVER=1: an MCP client lists the removal tools (every option documented from the schema) and cuts out a
`data:` URI image over streamable HTTP, on one server for the module (the tiny model)."""

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

from bgremove.core.errors import ConfigError
from bgremove.core.options import RemovalOptions
from bgremove.core.settings import load_settings
from tests.conftest import ROOT, encode
from tests.ui.conftest import NOT_AN_IMAGE, LiveUi, product_photo, serve, ui_settings


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[LiveUi]:
    with serve(ui_settings(tmp_path_factory.mktemp("mcp"), tiny_model, MCP_SERVER="1")) as live:
        yield live


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"MCP_SERVER": "1"}, True),
        ({"MCP_SERVER": "off"}, False),
        ({"GRADIO_MCP_SERVER": "True"}, True),
        ({"GRADIO_MCP_SERVER": "true", "MCP_SERVER": "0"}, False),  # ours wins over Gradio's
    ],
)
def test_mcp_server_setting(env: dict[str, str], expected: bool) -> None:
    assert load_settings(env).mcp_server is expected


def test_bad_mcp_server_value_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="MCP_SERVER='maybe' is invalid: expected 1, true, yes, on, 0, false, no or off"):
        load_settings({"MCP_SERVER": "maybe"})


@pytest.mark.slow
def test_mcp_server_without_the_mcp_package_says_what_to_install(tmp_path: Path, tiny_model: Path) -> None:
    code = "import sys; sys.modules['mcp'] = None; import app"  # None in sys.modules: as if not installed
    env = {**os.environ, "MCP_SERVER": "1", "REMBG_MODEL_NAME": str(tiny_model), "REMBG_SESSION_PATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: MCP_SERVER=1 needs the mcp package. Run: pip install -r requirements-mcp.txt"
    )


async def _session(url: str, work: Any) -> Any:
    async with streamable_http_client(f"{url}/gradio_api/mcp/") as (read, write, _), ClientSession(read, write) as session:
        await session.initialize()
        return await work(session)


def call(server: LiveUi, tool: str, arguments: dict[str, Any]) -> Any:
    return asyncio.run(_session(server.url, lambda s: s.call_tool(tool, arguments)))


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_tools_document_every_option_from_the_schema(mcp_server: LiveUi) -> None:
    tools = {tool.name: tool for tool in asyncio.run(_session(mcp_server.url, lambda s: s.list_tools())).tools}
    assert {"remove_image_background", "remove_backgrounds_batch"} <= set(tools), sorted(tools)
    remove = tools["remove_image_background"]
    assert remove.description.startswith("Remove the background of one image (PNG, JPEG or WebP)")
    properties = remove.inputSchema["properties"]
    assert properties["image"]["description"].startswith("the photo to cut out")
    for name, info in RemovalOptions.model_fields.items():
        assert properties[name]["description"] == info.description, name
    assert all(choice in properties["size"]["description"] for choice in ("preview", "medium", "hd", "full"))
    assert remove.inputSchema["required"] == ["image"]
    batch = tools["remove_backgrounds_batch"]
    assert "zip" in batch.description and set(RemovalOptions.model_fields) <= set(batch.inputSchema["properties"])


def test_remove_tool_cuts_out_a_data_uri_image(mcp_server: LiveUi) -> None:
    result = call(mcp_server, "remove_image_background", {"image": data_uri(encode(product_photo((90, 60)), "PNG"))})
    assert not result.isError, result.content
    images = [item for item in result.content if item.type == "image"]
    assert len(images) == 1 and images[0].mimeType == "image/png", result.content
    cutout = Image.open(io.BytesIO(base64.b64decode(images[0].data)))
    assert cutout.format == "PNG" and cutout.mode == "RGBA" and cutout.size == (90, 60)
    alpha = np.asarray(cutout)[..., 3]
    assert alpha[30, 45] > 200 and alpha[2, 2] < 50  # bright centre kept, dark corner transparent


def test_remove_tool_takes_the_options(mcp_server: LiveUi) -> None:
    photo = data_uri(encode(product_photo((90, 60)), "PNG"))
    result = call(mcp_server, "remove_image_background", {"image": photo, "format": "jpg", "bg_color": "00ff00"})
    assert not result.isError, result.content
    images = [item for item in result.content if item.type == "image"]
    assert len(images) == 1 and images[0].mimeType == "image/jpeg", result.content
    corner = np.asarray(Image.open(io.BytesIO(base64.b64decode(images[0].data))))[1, 1].astype(int)
    assert np.abs(corner - [0, 255, 0]).max() <= 8, corner


def test_remove_tool_reports_a_bad_image_as_a_tool_error(mcp_server: LiveUi) -> None:
    result = call(mcp_server, "remove_image_background", {"image": data_uri(NOT_AN_IMAGE)})
    assert result.isError
    text = result.content[0].text
    assert "is not a supported image" in text and "Accepted: png" in text and "Traceback" not in text


def test_remove_tool_refuses_a_bad_option_with_the_schemas_words(mcp_server: LiveUi) -> None:
    result = call(
        mcp_server, "remove_image_background", {"image": data_uri(encode(product_photo((90, 60)), "PNG")), "size": "huge"}
    )
    assert result.isError
    assert "size='huge' is not valid" in result.content[0].text and "Use preview, medium, hd or full." in result.content[0].text


def test_remove_tool_takes_touch_up_hints(mcp_server: LiveUi) -> None:
    from tests.touchup_cases import MISSED, region_alpha, touchup_case

    case = touchup_case()
    tools = {tool.name: tool for tool in asyncio.run(_session(mcp_server.url, lambda s: s.list_tools())).tools}
    assert {"keep_mask", "remove_mask"} <= set(tools["remove_image_background"].inputSchema["properties"])
    result = call(mcp_server, "remove_image_background", {"image": data_uri(case.photo), "keep_mask": data_uri(case.keep_mask)})
    assert not result.isError, result.content
    images = [item for item in result.content if item.type == "image"]
    alpha = np.asarray(Image.open(io.BytesIO(base64.b64decode(images[0].data))).getchannel("A"))
    assert region_alpha(alpha, MISSED) > 0.95
