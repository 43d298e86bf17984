"""The bgremove server: FastAPI with the /api router first, then the Gradio app mounted at /.

`python app.py` serves on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (0.0.0.0:7860, as Spaces expects);
`uvicorn app:app` works too. Routes added after the mount at / would be shadowed: keep the order.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import gradio as gr
from fastapi import FastAPI

from bgremove import __version__, api
from bgremove.config import get_settings
from bgremove.errors import ConfigError
from bgremove.log import configure_logging
from bgremove.models import use_model_home
from bgremove.sessions import get_cache
from bgremove.startup import start_warmup
from bgremove.ui import CSS, build_ui


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level)
    use_model_home(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        start_warmup(settings, get_cache())  # pulls the default model if missing, then loads it
        yield

    server = FastAPI(
        title="bgremove",
        version=__version__,
        description="Background removal with rembg's ONNX models. POST an image to /api/remove, a zip to /api/remove/batch.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url="/redoc",
    )
    api.install(server, settings)  # before the mount at "/", or its routes would be shadowed
    return gr.mount_gradio_app(server, build_ui(settings), path="/", ssr_mode=False, css=CSS,
                               theme=gr.themes.Soft(), footer_links=["api"],
                               max_file_size=settings.max_batch_uncompressed_bytes)


try:
    app = create_app()
except ConfigError as exc:
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None


if __name__ == "__main__":
    import uvicorn

    settings = get_settings()
    uvicorn.run(app, host=settings.server_name, port=settings.server_port, log_level=settings.log_level)
