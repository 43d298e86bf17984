"""Fixtures for the model layer: tiny graphs shaped like each family, a local file server, catalog rows aimed at it."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bgremove.core import registry


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_square_model(path: Path, side: int) -> Path:
    """A family-shaped graph whose mask is the channel mean of the squared input: non-linear in the input, so a
    wrong mean or std changes the min-max normalised mask. A second output (the channel max) must be ignored."""
    nodes = [
        helper.make_node("Mul", ["input", "input"], ["squared"]),
        helper.make_node("ReduceMean", ["squared"], ["output"], axes=[1], keepdims=1),
        helper.make_node("ReduceMax", ["input"], ["aux"], axes=[1], keepdims=1),
    ]
    shape = [1, 1, side, side]
    graph = helper.make_graph(
        nodes,
        "squares",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, side, side])],
        [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("aux", TensorProto.FLOAT, shape),
        ],
    )
    return _save(graph, path)


def build_cloth_model(path: Path) -> Path:
    """u2net_cloth_seg-shaped: [1, 3, 768, 768] in, [1, 4, 768, 768] class scores out (background, upper, lower,
    full body = 0, R, G, B of the normalised input), plus a second output that must be ignored."""
    weights = np.zeros((4, 3, 1, 1), dtype=np.float32)
    weights[1, 0] = weights[2, 1] = weights[3, 2] = 1.0
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["output"]),
        helper.make_node("ReduceMean", ["input"], ["aux"], axes=[1], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cloth",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 768, 768])],
        [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 768, 768]),
            helper.make_tensor_value_info("aux", TensorProto.FLOAT, [1, 1, 768, 768]),
        ],
        [numpy_helper.from_array(weights, "w")],
    )
    return _save(graph, path)


@pytest.fixture()
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to 127.0.0.1 go straight there, whatever proxy the shell has."""
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def file_server(tmp_path: Path, no_proxy: None) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a folder: (base URL, folder)."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", folder
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture()
def release_at(monkeypatch: pytest.MonkeyPatch, no_proxy: None) -> Callable[[str, str, str], None]:
    """Point a catalog model's download at another URL and checksum, for this test only."""

    def point(name: str, url: str, checksum: str) -> None:
        spec = registry.CATALOG[name]
        monkeypatch.setitem(
            registry.CATALOG,
            name,
            dataclasses.replace(spec, download=dataclasses.replace(spec.download, url=url, checksum=checksum)),
        )

    return point


CLOSED_PORT = "http://127.0.0.1:9/"  # discard port: nothing listens, the connection is refused at once
