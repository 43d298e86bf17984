"""REST API under /api: thin handlers over the core; typed errors mapped to HTTP codes in one place."""

from __future__ import annotations

import contextlib
import errno
import hmac
import logging
import tempfile
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bgremove import __version__
from bgremove.batch import BatchInput, inputs_from_zip, looks_like_zip, run_batch, write_zip
from bgremove.config import Settings, get_settings
from bgremove.errors import (
    BgRemoveError,
    ConfigError,
    CorruptImage,
    ImageTooLarge,
    InvalidOption,
    ModelUnavailable,
    StorageFull,
    UnsupportedFormat,
)
from bgremove.models import list_models
from bgremove.observability import IN_FLIGHT, LOADED, REJECTED, WAITING, metrics_payload
from bgremove.pipeline import RemovalOptions, parse_color, remove_background
from bgremove.sessions import get_cache
from bgremove.startup import warmup_state

log = logging.getLogger(__name__)

HTTP_STATUS: dict[type[BgRemoveError], int] = {
    StorageFull: 507,
    UnsupportedFormat: 400,
    CorruptImage: 400,
    ImageTooLarge: 413,
    InvalidOption: 422,
    ModelUnavailable: 503,
    ConfigError: 500,
}
MULTIPART_OVERHEAD = 256 * 1024  # form fields and part headers around the file itself

router = APIRouter(prefix="/api", tags=["background removal"])


def status_for(exc: BgRemoveError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


async def _core_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BgRemoveError)
    status = status_for(exc)
    headers = {"Retry-After": "30"} if status in (503, 507) else None
    return JSONResponse({"detail": exc.message, "hint": exc.hint}, status_code=status, headers=headers)


class _BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's form parser re-raises it as 413 instead of wrapping it as a 400."""

    def __init__(self) -> None:
        super().__init__(413, "Upload is larger than the size limit. Send a smaller file or raise MAX_IMAGE_SIZE_MB / "
                              "MAX_BATCH_UNCOMPRESSED_MB.")


class ApiGuard:
    """The edge in front of /api and /metrics, before any body is read:

    1. API keys (when API_KEYS is set): `X-API-Key: KEY` or `Authorization: Bearer KEY`, else 401;
    2. admission: beyond MAX_CONCURRENT_INFERENCES + MAX_QUEUE_SIZE removal requests in flight, 503 with
       Retry-After instead of an unbounded queue;
    3. upload size: 413 as soon as the declared or streamed body passes the limit.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.keys = [key.encode() for key in settings.api_keys]
        self.size_limits = {
            "/api/remove": settings.max_image_bytes + MULTIPART_OVERHEAD,
            "/api/remove/batch": settings.max_batch_uncompressed_bytes + MULTIPART_OVERHEAD,
        }
        self.max_in_flight = settings.max_concurrent_inferences + settings.max_queue_size
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path.startswith("/api/") or path == "/metrics") or path == "/api/health":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.keys and not self._authorised(headers):
            await _reply(send, 401, "A valid API key is required.", "Send it as `X-API-Key: KEY` or `Authorization: Bearer KEY`.",
                         {"WWW-Authenticate": "Bearer"})
            return
        limit = self.size_limits.get(path)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _reply(send, 413, f"Upload is larger than the limit of {limit / 1024 / 1024:.1f} MB.",
                         "Send a smaller file or raise MAX_IMAGE_SIZE_MB / MAX_BATCH_UNCOMPRESSED_MB.")
            return
        if self.in_flight >= self.max_in_flight:
            REJECTED.labels(path).inc()
            await _reply(send, 503, "The server is busy: the queue is full.", "Retry after a few seconds.",
                         {"Retry-After": "5"})
            return
        self.in_flight += 1
        IN_FLIGHT.set(self.in_flight)
        try:
            await self._with_size_limit(scope, receive, send, limit)
        finally:
            self.in_flight -= 1
            IN_FLIGHT.set(self.in_flight)

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        offered = headers.get(b"x-api-key", b"")
        authorization = headers.get(b"authorization", b"")
        if authorization[:7].lower() == b"bearer ":
            offered = offered or authorization[7:].strip()
        return bool(offered) and any(hmac.compare_digest(offered, key) for key in self.keys)

    async def _with_size_limit(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await _reply(send, 413, "Upload is larger than the size limit.", "Send a smaller file.")


async def _reply(send: Send, status: int, detail: str, hint: str, headers: dict[str, str] | None = None) -> None:
    response = JSONResponse({"detail": detail, "hint": hint}, status_code=status, headers=headers)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def install(app: FastAPI, settings: Settings | None = None) -> None:
    """Add the /api routes, /metrics, the error mapping, and the edge guard (keys, admission, size) to `app`."""
    settings = settings or get_settings()
    app.include_router(router)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.add_exception_handler(BgRemoveError, _core_error)
    app.add_middleware(ApiGuard, settings=settings)


def metrics() -> Response:
    """Prometheus metrics (protected by API_KEYS like the rest of the API)."""
    cache = get_cache()

    def refresh() -> None:
        WAITING.set(cache.waiting)
        LOADED.set(len(cache.loaded_names()))

    payload, content_type = metrics_payload(refresh)
    return Response(payload, media_type=content_type)


def _read_upload(upload: UploadFile, limit: int) -> bytes:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise ImageTooLarge(f"{upload.filename or 'The upload'} is larger than {limit / 1024 / 1024:g} MB.",
                            hint="Send a smaller file or raise MAX_IMAGE_SIZE_MB.")
    return data


def _content_disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


Model = Annotated[str | None, Form(description="Model name from GET /api/models; default REMBG_MODEL_NAME")]
AlphaMatting = Annotated[bool, Form(description="Refine edges with alpha matting (slower)")]
ForegroundThreshold = Annotated[int, Form(ge=0, le=255)]
BackgroundThreshold = Annotated[int, Form(ge=0, le=255)]
ErodeSize = Annotated[int, Form(ge=0, le=100)]
PostProcess = Annotated[bool, Form(description="Smooth the mask boundary")]
OnlyMask = Annotated[bool, Form(description="Return the mask instead of the cutout")]
BgColor = Annotated[str | None, Form(description="Background fill: #rrggbb[aa] or r,g,b[,a]")]


def removal_options(
    model: Model = None,
    alpha_matting: AlphaMatting = False,
    alpha_matting_foreground_threshold: ForegroundThreshold = 240,
    alpha_matting_background_threshold: BackgroundThreshold = 10,
    alpha_matting_erode_size: ErodeSize = 10,
    post_process_mask: PostProcess = False,
    only_mask: OnlyMask = False,
    bg_color: BgColor = None,
) -> RemovalOptions:
    """The optional form fields both removal endpoints share, as one validated RemovalOptions."""
    return RemovalOptions(
        model=model or None,
        alpha_matting=alpha_matting,
        alpha_matting_foreground_threshold=alpha_matting_foreground_threshold,
        alpha_matting_background_threshold=alpha_matting_background_threshold,
        alpha_matting_erode_size=alpha_matting_erode_size,
        post_process_mask=post_process_mask,
        only_mask=only_mask,
        bg_color=parse_color(bg_color) if bg_color else None,
    ).validate()


Options = Annotated[RemovalOptions, Depends(removal_options)]


@router.post(
    "/remove",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The cutout as a PNG with alpha"},
               400: {"description": "Not a supported image"}, 413: {"description": "Over the size limit"},
               503: {"description": "Model unavailable"}},
)
def remove(file: Annotated[UploadFile, File(description="A PNG, JPEG or WebP image")], options: Options) -> Response:
    """Remove the background of one image; metadata comes back in X-* headers."""
    settings = get_settings()
    result = remove_background(_read_upload(file, settings.max_image_bytes), file.filename, options)
    return Response(
        content=result.png,
        media_type="image/png",
        headers={
            "Content-Disposition": _content_disposition(result.output_name),
            "X-Processing-Seconds": f"{result.seconds:.4f}",
            "X-Model": result.model,
            "X-Image-Width": str(result.width),
            "X-Image-Height": str(result.height),
        },
    )


@router.post(
    "/remove/batch",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}, "description": "PNGs plus manifest.json"}},
)
def remove_batch(
    files: Annotated[list[UploadFile], File(description="One zip of images, or several image files")], options: Options
) -> StreamingResponse:
    """Remove backgrounds from many images; returns a zip with one PNG per success and manifest.json."""
    settings = get_settings()
    inputs = batch_inputs(files, settings)
    try:
        spool = tempfile.TemporaryFile(prefix="bgremove-batch-")  # anonymous: gone when closed, even on a crash
    except OSError as exc:
        raise StorageFull(f"Cannot create the result file in {tempfile.gettempdir()} ({exc.strerror}).") from exc
    try:
        manifest = write_zip(run_batch(inputs, options, settings=settings), spool, options.model or settings.model_name)
        size = spool.tell()
        spool.seek(0)
    except OSError as exc:
        with contextlib.suppress(OSError):  # closing flushes, which fails the same way on a full disk
            spool.close()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise StorageFull(f"The temporary directory {tempfile.gettempdir()} is full or read-only ({exc.strerror}); "
                              "no partial result was sent.") from exc
        raise
    except BaseException:
        spool.close()
        raise
    return StreamingResponse(
        _stream_and_close(spool),
        media_type="application/zip",
        headers={
            "Content-Disposition": _content_disposition("bgremove-results.zip"),
            "Content-Length": str(size),
            "X-Batch-Count": str(manifest["count"]),
            "X-Batch-Completed": str(manifest["completed"]),
            "X-Batch-Failed": str(manifest["failed"]),
        },
    )


def batch_inputs(files: list[UploadFile], settings: Settings) -> list[BatchInput]:
    """Zip parts are expanded (folders inside kept); other parts are images. Over MAX_BATCH_FILES is a 413."""
    inputs: list[BatchInput] = []
    for upload in files:
        name = upload.filename or f"file-{len(inputs) + 1}"
        head = upload.file.read(4)
        upload.file.seek(0)
        if looks_like_zip(head):
            prefix = "" if len(files) == 1 else name.rsplit(".", 1)[0] + "/"
            inputs.extend(inputs_from_zip(upload.file, settings, prefix=prefix))
        else:
            try:
                inputs.append(BatchInput(name, data=_read_upload(upload, settings.max_image_bytes)))
            except ImageTooLarge as exc:
                inputs.append(BatchInput(name, error=exc))
        if len(inputs) > settings.max_batch_files:
            raise ImageTooLarge(f"The batch has more than {settings.max_batch_files} files.",
                                hint="Split it or raise MAX_BATCH_FILES.")
    if not inputs:
        raise UnsupportedFormat("The batch is empty: the zip holds no files.", hint="Add images to the zip.")
    return inputs


def _stream_and_close(spool: Any, chunk: int = 1 << 20) -> Iterator[bytes]:
    try:
        while block := spool.read(chunk):
            yield block
    finally:
        spool.close()


@router.get("/models")
def models() -> dict[str, Any]:
    """The model catalog, with which models are on disk now."""
    settings = get_settings()
    return {"default": settings.model_name, "models": [entry.to_dict() for entry in list_models(settings)]}


@router.get("/health")
def health() -> dict[str, Any]:
    """Ready when the default model is loaded; also the loaded models and the real onnxruntime provider."""
    cache = get_cache()
    state = warmup_state()
    return {
        "status": state.status,
        "ready": state.status == "ready",
        "error": state.error,
        "default_model": get_settings().model_name,
        "loaded_models": cache.loaded_names(),
        "provider": cache.active_provider(),
        "waiting_for_inference": cache.waiting,
        "version": __version__,
    }
