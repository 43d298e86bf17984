"""The one error table, and the native API's one error shape `{"detail": str, "hint": str}` for every status.

`TABLE` maps each typed error to its HTTP status, its Retry-After and remove.bg's code for it; the message and the
hint are the error's own (`client_hint`: what a remote client may see). Every door reads it: the native handlers
below, the guards (401/413/503 before a body is read), the jobs router and the remove.bg door, which only renames
codes, changes the envelope, and answers the few statuses remove.bg's protocol fixes differently (`removebg_status`).

FastAPI's validation errors are worded by `core.options.describe_error`, so a bad option reads the same as at the
CLI or the UI; 404/405 under /api and unexpected exceptions (500, logged, no traceback sent) get the same shape.
Gradio's own routes are a separate app mounted at / and keep their own errors.
"""

from __future__ import annotations

import errno
import logging
import tempfile
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from bgremove.batch.jobs import JobNotFinished, JobNotFound, JobQueueFull
from bgremove.core.errors import (
    BgRemoveError,
    ConfigError,
    CorruptImage,
    ImageTooLarge,
    InvalidHint,
    InvalidOption,
    ModelUnavailable,
    ModelUnreachable,
    NoForeground,
    ServerBusy,
    StorageFull,
    UnsupportedFormat,
    UrlFetchFailed,
    UrlRefused,
)
from bgremove.core.observability import request_id
from bgremove.core.options import IMAGE_INPUTS, describe_error
from bgremove.web.keys import KeyRequired

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    """How every door answers one kind of error."""

    status: int
    code: str  # remove.bg's name for it
    retry_after: int | None = None  # seconds; None: retrying soon will not help
    removebg_status: int | None = None  # remove.bg's protocol answers this one with another status
    challenge: bool = False  # ask for credentials (WWW-Authenticate)

    @property
    def removebg(self) -> int:
        return self.removebg_status or self.status

    def headers(self) -> dict[str, str]:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        return headers | ({"WWW-Authenticate": "Bearer"} if self.challenge else {})


BUSY_SECONDS = 5
# The nearest class in an error's MRO wins, so a subclass listed here overrides its parent's row.
TABLE: dict[type[BgRemoveError], Rule] = {
    ServerBusy: Rule(503, "rate_limit_exceeded", retry_after=BUSY_SECONDS, removebg_status=429),
    KeyRequired: Rule(401, "auth_failed", removebg_status=403, challenge=True),
    ImageTooLarge: Rule(413, "file_too_large", removebg_status=400),
    UnsupportedFormat: Rule(400, "invalid_file_type"),
    CorruptImage: Rule(400, "failed_to_read_image"),
    InvalidOption: Rule(422, "invalid_parameter", removebg_status=400),
    InvalidHint: Rule(400, "invalid_parameter"),  # touch-up strokes that are not an image of this photo: a bad file
    UrlRefused: Rule(400, "invalid_parameter"),  # a refused URL: 400 that says why, as remove.bg answers
    UrlFetchFailed: Rule(400, "failed_image_download"),
    NoForeground: Rule(400, "unknown_foreground"),
    ModelUnavailable: Rule(503, "model_unavailable", retry_after=30),  # e.g. a corrupt file a pull can fix
    ModelUnreachable: Rule(503, "model_unavailable"),  # a failed download: no retry promise it cannot keep
    StorageFull: Rule(507, "storage_full", retry_after=60),  # a disk is not freed in seconds
    JobNotFound: Rule(404, "not_found"),
    JobNotFinished: Rule(409, "job_not_finished", retry_after=5),
    JobQueueFull: Rule(429, "rate_limit_exceeded", retry_after=30),
    ConfigError: Rule(500, "internal_error"),
}
UNEXPECTED = Rule(500, "internal_error")
# HTTP-level refusals that are not typed errors (routing, FastAPI's form parser).
HTTP_RULES: dict[int, Rule] = {
    400: Rule(400, "invalid_request"),
    404: Rule(404, "not_found"),
    405: Rule(405, "method_not_allowed"),
    413: TABLE[ImageTooLarge],
    422: TABLE[InvalidOption],
}
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)  # a full or read-only TMPDIR
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

# Hints for the HTTP-level refusals that carry no hint of their own.
STATUS_HINTS: dict[int, str] = {
    400: "Check the request against GET /docs.",
    401: KeyRequired.default_hint,
    404: "See GET /docs for the API's endpoints.",
    413: "Send a smaller file or raise MAX_IMAGE_SIZE_MB / MAX_BATCH_UNCOMPRESSED_MB.",
    422: "Check the request against GET /docs.",
}
UPLOAD_FIELDS: dict[str, str] = {
    "file": "Send the image as a multipart/form-data file field named `file`, e.g. `curl -F file=@photo.jpg ...`.",
    "files": "Send images or zips as multipart/form-data file fields named `files`, e.g. `curl -F files=@photos.zip ...`.",
    **{name: spec.hint for name, spec in IMAGE_INPUTS.items()},
}


def rule_for(exc: BgRemoveError) -> Rule:
    """The row of the nearest class in the error's MRO; an untyped BgRemoveError is a 500."""
    return next((TABLE[cls] for cls in type(exc).__mro__ if cls in TABLE), UNEXPECTED)


def status_for(exc: BgRemoveError) -> int:
    return rule_for(exc).status


def client_hint(exc: BgRemoveError) -> str:
    """The hint a remote client sees: never the server's paths (the server log keeps the operator's hint)."""
    public = getattr(exc, "public_hint", "") or exc.hint
    if public != exc.hint:
        log.warning("%s %s", exc.message, exc.hint)
    return public


def error_response(status: int, detail: str, hint: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The one error body of the native API."""
    return JSONResponse({"detail": detail, "hint": hint}, status_code=status, headers=dict(headers or {}) or None)


def native_response(exc: BgRemoveError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A typed error as the native API answers it: the table's status and Retry-After, the error's words."""
    rule = rule_for(exc)
    return error_response(rule.status, exc.message, client_hint(exc), {**rule.headers(), **(headers or {})})


def answer_native(exc: Exception) -> Response:
    """A refusal made before the app saw the request (the guard), in the native shape."""
    if isinstance(exc, BgRemoveError):
        return native_response(exc)
    if isinstance(exc, StarletteHTTPException):
        hint = getattr(exc, "hint", None) or STATUS_HINTS.get(exc.status_code, "")
        return error_response(exc.status_code, str(exc.detail), hint, exc.headers)
    return internal_error_response()


def is_native_path(path: str) -> bool:
    """Paths whose errors this module shapes (Gradio's and remove.bg's routes answer their own way)."""
    return path == "/api" or path.startswith("/api/") or path == "/metrics"


async def core_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, BgRemoveError)
    return native_response(exc)


async def validation_error(_: Request, exc: Exception) -> Response:
    """FastAPI's 422 in our shape: a missing upload says which field to send; anything else is worded by the schema."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if not errors:
        return error_response(422, "The request is not valid.", STATUS_HINTS[422])
    first = errors[0]
    location = [part for part in first.get("loc", ()) if isinstance(part, str) and part not in ("body", "query", "form")]
    name = location[0] if location else ""  # ("body", "files", 0): the field, not the list index
    if first.get("type") == "missing":
        return error_response(422, f"The form field {name!r} is required.", UPLOAD_FIELDS.get(name, STATUS_HINTS[422]))
    if name in UPLOAD_FIELDS:
        return error_response(422, f"The form field {name!r} must be a file upload.", UPLOAD_FIELDS[name])
    problem = describe_error(first)
    return error_response(422, problem.message, problem.hint)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's HTTP errors (404, 405, 413 while streaming, ...) in our shape under /api; elsewhere FastAPI's."""
    assert isinstance(exc, StarletteHTTPException)
    if not is_native_path(request.url.path):
        return await http_exception_handler(request, exc)
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.errno in DISK_ERRNOS:  # FastAPI's 400 when the upload cannot be spooled
        return await core_error(
            request,
            StorageFull(
                f"The temporary directory {tempfile.gettempdir()} is full or read-only ({cause.strerror}); "
                "the upload could not be stored."
            ),
        )
    hint = getattr(exc, "hint", None) or STATUS_HINTS.get(exc.status_code, "")
    return error_response(exc.status_code, str(exc.detail), hint, exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """Last resort (an exception outside any route, e.g. in a middleware): logged, never sent to the client."""
    log.error("Unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return internal_error_response()


def internal_error_response() -> JSONResponse:
    return error_response(
        500,
        "Internal error: the request could not be completed.",
        f"Retry; if it happens again, report request id {request_id.get()} with the server log.",
    )


class ApiRoute(APIRoute):
    """A route whose unexpected exceptions become our 500 inside the app, so request ids, metrics and CORS still
    apply (Starlette sends `Exception` handlers' responses from its outermost middleware, outside all of those)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except (StarletteHTTPException, RequestValidationError, BgRemoveError):
                raise  # mapped by the handlers above
            except Exception:
                log.exception("Unexpected error on %s %s", request.method, request.url.path)
                return internal_error_response()

        return guarded


async def not_found(request: Request) -> Response:
    """Any other /api path: 405 with Allow when the path exists for other methods, else 404."""
    path = request.url.path
    allowed = allowed_methods(request)
    if allowed:
        return error_response(
            405, f"{request.method} is not allowed on {path}.", f"Use {', '.join(allowed)}.", {"Allow": ", ".join(allowed)}
        )
    return error_response(404, f"There is no endpoint at {path}.", STATUS_HINTS[404])


def allowed_methods(request: Request) -> list[str]:
    """The methods some real route answers at this path (asked through Starlette's own matching, so routers
    included at any depth count; the Gradio mount and this fallback do not)."""
    routes = [
        route
        for route in request.app.router.routes
        if not isinstance(route, Mount) and getattr(route, "endpoint", None) is not not_found
    ]
    return [
        method
        for method in ALL_METHODS
        if method != request.method
        and any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Map every error of the native API to `{"detail", "hint"}`.

    Call after every router under /api is included and before Gradio is mounted at /: the fallback route
    answers every other /api path, which would otherwise reach Gradio's app.
    """
    app.add_exception_handler(BgRemoveError, core_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
    for path in ("/api", "/api/{path:path}"):
        app.add_api_route(path, not_found, methods=ALL_METHODS, include_in_schema=False)
