"""The app factory: `create_app(settings)` -> FastAPI with the /api router, /metrics, the error mapping, the edge
guard, CORS, request ids, and the Gradio UI mounted at /.

Settings and the session cache go on `app.state`; handlers receive them through `web.deps`. Nothing here reads
the environment unless no settings are given (the entry points: top-level app.py, `uvicorn app:app`), so tests
build as many apps as they like with `create_app(load_settings({...}))`.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from bgremove import __version__
from bgremove.batch.jobs import JobRunner
from bgremove.core.errors import ConfigError
from bgremove.core.observability import Metrics, RequestContext, configure_logging
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings, get_settings
from bgremove.core.warmup import WarmupState, limit_heap_growth, warm
from bgremove.web import api, removebg
from bgremove.web import jobs as jobs_api
from bgremove.web.access_log import log_polls_at_debug
from bgremove.web.admission import Admission, JobSlots
from bgremove.web.api import EXPOSED_HEADERS
from bgremove.web.errors import install_error_handlers
from bgremove.web.guard import DoorGuard, native_door
from bgremove.web.metrics import metrics, route_template

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Background removal with rembg's ONNX models. POST an image to /api/remove, images or a zip to "
    "/api/remove/batch; every option is a form field (see below). Errors are `{detail, hint}`."
)


def create_app(settings: Settings | None = None, *, cache: SessionCache | None = None, ui: bool = True) -> FastAPI:
    """Build the server. `settings` default to the process's (environment over .env); `cache` to a new one.

    `ui=False` leaves Gradio out (REST-only deployments and fast tests); the routes are the same otherwise.
    Raises ConfigError for settings the app cannot start with.
    """
    settings = settings or get_settings()
    cache = cache or SessionCache(settings)
    configure_logging(settings.log_level, settings.log_format)
    limit_heap_growth()
    if ui and settings.mcp_server and importlib.util.find_spec("mcp") is None:  # Gradio would fail with a traceback
        raise ConfigError("MCP_SERVER=1 needs the mcp package.", hint="Run: pip install -r requirements-mcp.txt")
    warmup = WarmupState()
    # Metrics and the admission gate are this app's own: a second app in the process counts apart.
    app_metrics = Metrics()
    admission = Admission.for_settings(settings)
    admission.observe(app_metrics.in_flight.set, lambda door: app_metrics.rejected.labels(door).inc())
    # Durable batch jobs in DATA_DIR (ConfigError if it is unusable); their forward passes wait for admission slots.
    jobs = JobRunner(settings, JobSlots(cache, admission))  # type: ignore[arg-type]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        warn_if_exposed(settings)
        # Pull the default model if missing and load it, off the request path; /api/health reports the phase.
        threading.Thread(target=warm, args=(settings, cache, warmup), name="bgremove-warmup", daemon=True).start()
        jobs.start()  # resumes jobs a crash interrupted, then starts the workers and the retention janitor
        if ui:
            from bgremove.web.ui import start_sweeper

            start_sweeper(settings)  # the UI's uploads and results live RESULT_TTL_SECONDS at most
        yield
        jobs.close()  # the current item finishes; its job resumes at the next start
        if ui:
            from bgremove.web.ui import remove_work_files

            remove_work_files()

    app = FastAPI(
        title="bgremove", version=__version__, description=DESCRIPTION, lifespan=lifespan, docs_url="/docs", redoc_url="/redoc"
    )
    app.state.settings = settings
    app.state.cache = cache
    app.state.warmup = warmup
    app.state.jobs = jobs
    app.state.metrics = app_metrics
    app.state.admission = admission
    app.include_router(api.router)
    app.include_router(jobs_api.router)  # every /api router before install_error_handlers (its /api fallback comes last)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    install_error_handlers(app)
    app.add_middleware(DoorGuard, settings=settings, admission=admission, door=native_door(settings))
    removebg.install_removebg(app, settings, admission)  # /v1.0: remove.bg's shapes, the same gate
    # Outermost last: request ids and metrics see every response; CORS answers preflights before the key check.
    # An explicit CORSMiddleware also stops Gradio adding its own permissive one. No origins: same-origin only.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["X-API-Key", "Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=EXPOSED_HEADERS + removebg.EXPOSED_HEADERS,
    )
    app.add_middleware(RequestContext, metrics=app_metrics, route_of=route_template)
    log_polls_at_debug(app.url_path_for("health"))
    if ui:
        mount_ui(app, settings, cache)  # last: the mount at "/" would shadow any route added after it
    return app


def mount_ui(app: FastAPI, settings: Settings, cache: SessionCache) -> None:
    """The Gradio Blocks at /, its MCP tools at /gradio_api/mcp/ when MCP_SERVER is set."""
    import gradio as gr

    from bgremove.web.ui import CSS, build_ui, ui_login

    gr.mount_gradio_app(
        app,
        build_ui(settings=settings, cache=cache, jobs=app.state.jobs, admission=app.state.admission),
        path="/",
        ssr_mode=False,
        css=CSS,
        theme=gr.themes.Soft(),
        footer_links=["api"],
        max_file_size=settings.max_batch_uncompressed_bytes,
        mcp_server=settings.mcp_server,
        auth=ui_login(settings) if settings.api_keys else None,
        auth_message="Enter any user name and one of the server's API keys as the password.",
    )


def warn_if_exposed(settings: Settings) -> None:
    """Issue 17.7: listening beyond loopback without API keys lets anyone on the network use the server."""
    if settings.listens_beyond_loopback and not settings.api_keys:
        log.warning(
            "Listening on %s without API keys: anyone who can reach this address can use the server. "
            "Set API_KEYS, or GRADIO_SERVER_NAME=127.0.0.1 to listen on this machine only.",
            settings.server_name,
        )
