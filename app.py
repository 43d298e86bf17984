"""The bgremove server: FastAPI with the /api router first, then the Gradio app mounted at /.

`python app.py` serves on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (0.0.0.0:7860, as Spaces expects);
`uvicorn app:app` works too. Routes added after the mount at / would be shadowed: keep the order.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import gradio as gr
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from bgremove import __version__, api
from bgremove.config import get_settings
from bgremove.errors import ConfigError
from bgremove.observability import RequestContext, configure_logging
from bgremove.models import use_model_home
from bgremove.sessions import get_cache
from bgremove.startup import limit_heap_growth, start_warmup
from bgremove.ui import CSS, build_ui, remove_work_files, start_sweeper, ui_login


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    limit_heap_growth()
    use_model_home(settings)
    if settings.mcp_server and importlib.util.find_spec("mcp") is None:  # Gradio would fail with a traceback
        raise ConfigError("MCP_SERVER=1 needs the mcp package.", hint="Run: pip install -r requirements-mcp.txt")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        start_warmup(settings, get_cache())  # pulls the default model if missing, then loads it
        start_sweeper(settings)  # uploads and results live RESULT_TTL_SECONDS at most
        yield
        remove_work_files()

    server = FastAPI(
        title="bgremove",
        version=__version__,
        description="Background removal with rembg's ONNX models. POST an image to /api/remove, a zip to /api/remove/batch.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url="/redoc",
    )
    api.install(server, settings)  # before the mount at "/", or its routes would be shadowed
    # Outermost last: request ids and metrics see every response; CORS answers preflights before the key check.
    # An explicit CORSMiddleware also stops Gradio adding its own permissive one. No origins: same-origin only.
    server.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                          allow_headers=["X-API-Key", "Authorization", "Content-Type", "X-Request-ID"],
                          expose_headers=["Content-Disposition", "X-Request-ID", "X-Processing-Seconds", "X-Model",
                                          "X-Image-Width", "X-Image-Height", "X-Batch-Count", "X-Batch-Completed",
                                          "X-Batch-Failed"])
    server.add_middleware(RequestContext)
    return gr.mount_gradio_app(server, build_ui(settings), path="/", ssr_mode=False, css=CSS,
                               theme=gr.themes.Soft(), footer_links=["api"],
                               max_file_size=settings.max_batch_uncompressed_bytes,
                               mcp_server=settings.mcp_server,  # tools at /gradio_api/mcp/ from the named endpoints' docstrings
                               auth=ui_login(settings) if settings.api_keys else None,
                               auth_message="Enter any user name and one of the server's API keys as the password.")


try:
    app = create_app()
except ConfigError as exc:
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None


if __name__ == "__main__":
    import uvicorn

    settings = get_settings()
    uvicorn.run(app, host=settings.server_name, port=settings.server_port, log_level=settings.log_level,
                log_config=None)  # keep our handlers: request ids, LOG_FORMAT=json
