"""The edge in front of /api and /metrics, before any body is read (plain ASGI: it must act before FastAPI
parses a multipart body, which a dependency cannot)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bgremove.core.observability import IN_FLIGHT, REJECTED
from bgremove.core.options import IMAGE_INPUTS
from bgremove.core.settings import Settings

MULTIPART_OVERHEAD = 256 * 1024  # form fields and part headers around the file itself
SIZE_HINT = "Send a smaller file or raise MAX_IMAGE_SIZE_MB / MAX_BATCH_UNCOMPRESSED_MB."
OPEN_PATHS = frozenset({"/api/health"})  # load balancers and the UI's health checks need no key


SIZE_DETAIL = "Upload is larger than the size limit."


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's form parser re-raises it (answered as 413 by web.errors) instead of a 400."""

    def __init__(self) -> None:
        super().__init__(413, SIZE_DETAIL)
        self.hint = SIZE_HINT


class ApiGuard:
    """Runs before any body is read:

    1. API keys (when API_KEYS is set): `X-API-Key: KEY` or `Authorization: Bearer KEY`, else 401;
    2. admission: beyond MAX_CONCURRENT_INFERENCES + MAX_QUEUE_SIZE removal requests in flight, 503 with
       Retry-After instead of an unbounded queue;
    3. upload size: 413 as soon as the declared or streamed body passes the limit.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.keys = [key.encode() for key in settings.api_keys]
        image_limit = settings.max_image_bytes * (1 + len(IMAGE_INPUTS)) + MULTIPART_OVERHEAD  # photo + image inputs
        self.size_limits = {
            "/api/remove": image_limit,
            "/api/remove/batch": settings.max_batch_uncompressed_bytes + settings.max_image_bytes + MULTIPART_OVERHEAD,
            "/api/jobs": settings.max_batch_uncompressed_bytes + settings.max_image_bytes + MULTIPART_OVERHEAD,
        }
        self.unmetered = frozenset({"/api/jobs"})
        self.max_in_flight = settings.max_concurrent_inferences + settings.max_queue_size
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path.startswith("/api/") or path == "/metrics") or path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.keys and not key_is_valid(headers, self.keys):
            await reply(
                send,
                401,
                "A valid API key is required.",
                "Send it as `X-API-Key: KEY` or `Authorization: Bearer KEY`.",
                {"WWW-Authenticate": "Bearer"},
            )
            return
        limit = self.size_limits.get(path)
        method = scope.get("method", "GET")
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await reply(send, 413, f"Upload is larger than the limit of {limit / 1024 / 1024:.1f} MB.", SIZE_HINT)
            return
        if method == "GET" or path in self.unmetered:  # jobs queue themselves: 429/507 from the job store, not 503 here
            await self._with_size_limit(scope, receive, send, limit)
            return
        if self.in_flight >= self.max_in_flight:
            REJECTED.labels(path).inc()
            await reply(send, 503, "The server is busy: the queue is full.", "Retry after a few seconds.", {"Retry-After": "5"})
            return
        self.in_flight += 1
        IN_FLIGHT.set(self.in_flight)
        try:
            await self._with_size_limit(scope, receive, send, limit)
        finally:
            self.in_flight -= 1
            IN_FLIGHT.set(self.in_flight)

    async def _with_size_limit(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        async def too_large(exc: Exception) -> None:  # raised outside FastAPI's form parser, so no handler saw it
            await reply(send, 413, SIZE_DETAIL, SIZE_HINT)

        await forward_with_body_limit(self.app, (scope, receive, send), limit, BodyTooLarge, too_large)


def key_is_valid(headers: dict[bytes, bytes], keys: list[bytes]) -> bool:
    """`X-API-Key: KEY` (any casing) or `Authorization: Bearer KEY` names one of `keys`; compared in constant time."""
    offered = headers.get(b"x-api-key", b"")
    authorization = headers.get(b"authorization", b"")
    if not offered and authorization[:7].lower() == b"bearer ":
        offered = authorization[7:].strip()
    return bool(offered) and any(hmac.compare_digest(offered, key) for key in keys)


async def forward_with_body_limit(
    app: ASGIApp,
    call: tuple[Scope, Receive, Send],
    limit: int,
    error: type[Exception],
    answer: Callable[[Exception], Awaitable[None]],
) -> None:
    """Run `app`, raising `error()` from receive() once the streamed body passes `limit` bytes.

    The route normally answers that error itself; when it escapes the app before a response started, `answer` it.
    """
    scope, receive, send = call
    received = 0
    started = False

    async def counting_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise error()
        return message

    async def tracking_send(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, counting_receive, tracking_send)
    except error as exc:
        if not started:
            await answer(exc)


async def reply(send: Send, status: int, detail: str, hint: str, headers: dict[str, str] | None = None) -> None:
    """An error in the API's shape, sent before the app (and its exception handlers) ever saw the request."""
    response = JSONResponse({"detail": detail, "hint": hint}, status_code=status, headers=headers)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
