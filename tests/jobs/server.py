"""A small server for the jobs tests: the /api/jobs router and its JobRunner on FastAPI, without Gradio.

In-process tests wrap `build_app` in TestClient; the crash test runs this module as a real process
(`python -m tests.jobs.server PORT`, settings from the environment only) so that it can be SIGKILLed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from bgremove.batch.jobs import JobRunner
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import ENV_NAMES, Settings, load_settings
from bgremove.web import jobs as jobs_api
from bgremove.web.admission import Admission
from bgremove.web.errors import install_error_handlers
from bgremove.web.guard import DoorGuard, native_door


def build_app(settings: Settings, cache: SessionCache | None = None, **runner_options: Any) -> FastAPI:
    """The jobs router wired as the app factory wires it: state, router, error mapping, guard, lifespan."""
    cache = cache or SessionCache(settings)
    runner = JobRunner(settings, cache, **runner_options)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runner.start()
        yield
        runner.close()

    app = FastAPI(lifespan=lifespan)
    app.state.settings = settings
    app.state.cache = cache
    app.state.jobs = runner
    app.include_router(jobs_api.router)
    install_error_handlers(app)
    app.add_middleware(DoorGuard, settings=settings, admission=Admission.for_settings(settings), door=native_door(settings))
    return app


if __name__ == "__main__":
    import uvicorn

    environment = {name: os.environ[name] for name in ENV_NAMES.values() if name in os.environ}
    uvicorn.run(
        build_app(load_settings(environment), poll_seconds=0.2), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning"
    )
