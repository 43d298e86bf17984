"""Start and stop `python app.py` as users run it, on 127.0.0.1 and a free port (for the measuring scripts;
the test suite may reuse it). Lives in scripts/ so scripts never import from tests/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(workdir: Path, timeout: float = 180, **env: str) -> LiveServer:
    """`python app.py` on 127.0.0.1 and a free port, TMPDIR inside `workdir`; returns once /api/health says ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    full_env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "TMPDIR": str(workdir),
        "GRADIO_TEMP_DIR": str(workdir / "gradio"),
        "DATA_DIR": str(workdir / "data"),  # jobs' state stays with this server, never in ~/.bgremove
        **env,
    }
    log_path = workdir / f"server-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path, full_env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            health = httpx.get(f"{server.url}/api/health", timeout=2).json()
            if health["ready"]:
                return server
            if health["status"] == "error":
                stop_server(server)
                raise RuntimeError(f"server could not load its model: {health['error']}")
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"server not ready in {timeout:.0f} s:\n{server.log()}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
