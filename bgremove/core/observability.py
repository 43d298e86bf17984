"""Request ids, structured logs and Prometheus metrics (no web-framework imports: plain ASGI and logging).

Every response carries `X-Request-ID` (the client's, when it sent a sane one) and every log line written
while serving it carries the same id. Logs never contain image bytes or API keys.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

request_id: ContextVar[str] = ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

# Process-wide: the pipeline has no app to report to. Everything labelled by route is per app (`Metrics`).
INFERENCE = Histogram(
    "bgremove_inference_seconds", "Forward pass (mask) time by model", ["model"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16)
)


class Metrics:
    """One app's metrics in a registry of its own, so a second app in the same process (tests, a worker that builds
    two) registers its own series instead of colliding with the first's. `payload` adds the process-wide ones."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "bgremove_requests_total",
            "HTTP requests by route, method and status code",
            ["route", "method", "code"],
            registry=registry,
        )
        self.errors = Counter(
            "bgremove_errors_total", "HTTP responses with status >= 400 by route and code", ["route", "code"], registry=registry
        )
        self.latency = Histogram(
            "bgremove_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
            registry=registry,
        )
        self.waiting = Gauge("bgremove_waiting_for_inference", "Requests waiting for an inference slot", registry=registry)
        self.in_flight = Gauge(
            "bgremove_api_in_flight",
            "Removals being served or queued, every door and the job workers together",
            registry=registry,
        )
        self.loaded = Gauge("bgremove_loaded_models", "Models loaded in memory", registry=registry)
        self.rejected = Counter(
            "bgremove_overload_rejections_total", "Requests refused because the queue was full", ["route"], registry=registry
        )

    def payload(self, refresh: Callable[[], None] | None = None) -> tuple[bytes, str]:
        if refresh is not None:
            refresh()
        return generate_latest(self.registry) + generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class RequestContext:
    """ASGI middleware: request id in, out and in the logs; request counts, errors and latency by route.

    `route_of(scope)` names the route after the app has handled the request (the web layer reads the route
    template the router matched, e.g. `/api/jobs/{job_id}`), so the labels stay bounded and no list of paths
    is kept here.
    """

    def __init__(self, app: Any, metrics: Metrics, route_of: Callable[[dict[str, Any]], str]) -> None:
        self.app = app
        self.metrics = metrics
        self.route_of = route_of

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _SANE_ID.fullmatch(incoming) else uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = self.route_of(scope)
            code = str(status["code"])
            self.metrics.requests.labels(route, scope.get("method", ""), code).inc()
            if status["code"] >= 400:
                self.metrics.errors.labels(route, code).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
            request_id.reset(token)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request_id, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, fmt: str = "text") -> None:
    """Root logging for the CLI and the server; uvicorn's loggers get the same format and request ids."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        logger.disabled = False  # a library's dictConfig(disable_existing_loggers=True) may have switched it off
        logger.setLevel(logging.NOTSET)  # LOG_LEVEL (the root's) governs, whatever an earlier uvicorn.Config set
