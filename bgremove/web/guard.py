"""The edge in front of each HTTP door, before any body is read (plain ASGI: it must act before FastAPI parses a
multipart body, which a dependency cannot). One class for every door; a `Door` says which paths it covers,
their body limits, which requests are removals, and how the door words a refusal.

1. API keys (when API_KEYS is set): the one key reader (`web.keys`), else `KeyRequired` (401, remove.bg's 403);
2. upload size: `ImageTooLarge` as soon as the declared or streamed body passes the path's limit;
3. admission: a removal takes a slot of the app's one gate (`web.admission`), shared with every other door and
   the job workers; when none is free, `ServerBusy` (503 + Retry-After, remove.bg's 429) instead of a queue.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bgremove.core.errors import BgRemoveError, ImageTooLarge
from bgremove.core.options import IMAGE_INPUTS
from bgremove.core.settings import Settings
from bgremove.web.admission import Admission, busy
from bgremove.web.errors import answer_native
from bgremove.web.keys import KeyRequired, offered_key, request_key

MULTIPART_OVERHEAD = 256 * 1024  # form fields and part headers around the files themselves
SIZE_HINT = "Send a smaller file or raise MAX_IMAGE_SIZE_MB / MAX_BATCH_UNCOMPRESSED_MB."
SIZE_DETAIL = "The upload is larger than the size limit."


class BodyTooLarge(HTTPException):
    """Raised from receive() once the streamed body passes the limit. An HTTPException, so FastAPI's form parser
    re-raises it (answered as 413, or remove.bg's 400 `file_too_large`) instead of turning it into a 400."""

    def __init__(self) -> None:
        super().__init__(413, SIZE_DETAIL)
        self.hint = SIZE_HINT


def body_too_large(limit: int) -> ImageTooLarge:
    return ImageTooLarge(f"The upload is larger than the limit of {limit / 1048576:.1f} MB.", hint=SIZE_HINT)


@dataclass(frozen=True)
class Door:
    """What the guard needs to know of one door."""

    covers: Callable[[str], bool]  # the paths behind this guard
    body_limit: Callable[[str, str], int | None]  # (path, method) -> bytes, or None: not an upload route
    is_removal: Callable[[str, str], bool]  # (path, method) -> takes an admission slot
    answer: Callable[[Exception], Response]  # the door's error shape
    key_refusal: Callable[[bool], KeyRequired]  # missing (True) or wrong key, in the door's words


class DoorGuard:
    def __init__(self, app: ASGIApp, settings: Settings, admission: Admission, door: Door) -> None:
        self.app = app
        self.keys = tuple(settings.api_keys)
        self.admission = admission
        self.door = door

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path and self.door.covers(path)):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.keys and request_key(headers, self.keys) is None:
            await self._refuse(self.door.key_refusal(not offered_key(headers)), scope, receive, send)
            return
        method = scope.get("method", "GET")
        limit = self.door.body_limit(path, method)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(body_too_large(limit), scope, receive, send)
            return
        if not self.door.is_removal(path, method):
            await self._with_size_limit(scope, receive, send, limit)
            return
        if not self.admission.try_enter(path):
            await self._refuse(busy(), scope, receive, send)
            return
        try:
            await self._with_size_limit(scope, receive, send, limit)
        finally:
            self.admission.leave()

    async def _refuse(self, exc: BgRemoveError, scope: Scope, receive: Receive, send: Send) -> None:
        """An error in the door's shape, sent before the app (and its exception handlers) ever saw the request."""
        await self.door.answer(exc)(scope, receive, send)

    async def _with_size_limit(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        async def too_large(exc: Exception) -> None:  # raised outside the route's own error mapping
            await self.door.answer(exc)(scope, receive, send)

        await forward_with_body_limit(self.app, (scope, receive, send), limit, BodyTooLarge, too_large)


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


def native_door(settings: Settings) -> Door:
    """/api and /metrics: the native shape; /api/health is open (load balancers and the UI's checks need no key)."""
    upload = settings.max_image_bytes * (1 + len(IMAGE_INPUTS)) + MULTIPART_OVERHEAD  # the photo and its image inputs
    many = settings.max_batch_uncompressed_bytes + settings.max_image_bytes + MULTIPART_OVERHEAD
    limits = {"/api/remove": upload, "/api/remove/batch": many, "/api/jobs": many}
    removals = frozenset({"/api/remove", "/api/remove/batch"})  # jobs queue themselves (429/507 from the store)

    return Door(
        covers=lambda path: (path.startswith("/api/") or path == "/metrics") and path != "/api/health",
        body_limit=lambda path, method: limits.get(path),
        is_removal=lambda path, method: path in removals and method != "GET",
        answer=answer_native,
        key_refusal=lambda missing: KeyRequired("A valid API key is required."),
    )
