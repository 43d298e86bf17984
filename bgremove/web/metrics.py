"""Metrics labelled by the route the router matched (`/api/jobs/{job_id}`, `/v1.0/removebg`, Gradio's
`/gradio_api/queue/join`), and the /metrics endpoint.

The label is the route's template, read from the ASGI scope after the app handled the request, so the label set
is bounded by the app's routes and a new route gets its own label with no edit anywhere. A request a guard
refused before routing is matched here against the app's routes, so it is counted under the same label.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.routing import Match, Mount

from bgremove.core.observability import Metrics
from bgremove.core.sessions import SessionCache

UNMATCHED = "unmatched"


def route_template(scope: dict[str, Any]) -> str:
    """The template of the route that served (or would serve) this request, mount prefixes included."""
    route = scope.get("route")
    if route is None:
        route = _match(scope)
        if route is None:
            return UNMATCHED
        prefix = ""
    else:  # inside a mounted app (Gradio at /) the scope's root_path has grown by the mount's prefix
        outer = scope.get("app_root_path", "")
        prefix = str(scope.get("root_path", ""))[len(outer) :]
    if isinstance(route, Mount):  # a mount whose app matched nothing by name (static files, Gradio's fallbacks)
        return f"{prefix}{route.path}/{{path}}"
    return f"{prefix}{getattr(route, 'path', UNMATCHED)}"


def _match(scope: dict[str, Any]) -> Any:
    """The first route of the app that matches fully (then partially: a 405), as the router would pick it."""
    app = scope.get("app")
    partial = None
    for route in _routes(getattr(getattr(app, "router", None), "routes", ())):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


def _routes(routes: Iterable[Any]) -> Iterator[Any]:
    """Routes in routing order, the routes of included routers in their place (FastAPI wraps an included router
    in one entry whose `original_router` holds its routes, paths already prefixed)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)
        else:
            yield route


def metrics(request: Request) -> Response:
    """Prometheus metrics of this app (protected by API_KEYS like the rest of the API)."""
    cache: SessionCache = request.app.state.cache
    app_metrics: Metrics = request.app.state.metrics

    def refresh() -> None:
        app_metrics.waiting.set(cache.waiting)
        app_metrics.loaded.set(len(cache.loaded_names()))

    payload, content_type = app_metrics.payload(refresh)
    return Response(payload, media_type=content_type)
