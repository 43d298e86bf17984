"""REST API under /api: thin handlers over the core. Parse (options from the schema, see `deps`), call the
pipeline or the batch engine, shape the answer; errors are mapped in `web.errors`.

Handlers are plain `def`: FastAPI runs them in its thread pool, so inference never blocks the event loop.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import PurePath
from typing import IO, Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import Response, StreamingResponse

from bgremove import __version__
from bgremove.batch.engine import inputs_from_files, run_batch
from bgremove.batch.sinks import ZipSink
from bgremove.core.errors import StorageFull
from bgremove.core.pipeline import Result, remove_background
from bgremove.core.registry import CATALOG, is_custom_model
from bgremove.core.settings import Settings
from bgremove.core.store import catalog_entry, list_models
from bgremove.web.deps import AppSettings, Cache, Options, Warmup
from bgremove.web.errors import DISK_ERRNOS, ApiRoute
from bgremove.web.intake import ImageBytes, image_inputs_dependency, image_or_url

router = APIRouter(prefix="/api", tags=["background removal"], route_class=ApiRoute)

SPOOL_IN_MEMORY_BYTES = 4 * 1024 * 1024  # a batch's zip stays in memory up to this, then spills to TMPDIR
EXPOSED_HEADERS = [
    "Content-Disposition",
    "X-Request-ID",
    "X-Processing-Seconds",
    "X-Model",
    "X-Image-Width",
    "X-Image-Height",
    "X-Format",
    "X-Foreground-Top",
    "X-Foreground-Left",
    "X-Foreground-Width",
    "X-Foreground-Height",
    "X-Confidence",
    "X-Foreground-Found",
    "X-Batch-Count",
    "X-Batch-Completed",
    "X-Batch-Failed",
]

ImageFile = Annotated[UploadFile | None, File(description="The image: PNG, JPEG or WebP (or send image_url instead)")]
ImageUrl = Annotated[
    str | None,
    Form(
        description="An http(s) URL of the image, fetched by the server (or send file "
        "instead). Private networks are refused unless URL_ALLOW_PRIVATE_NETWORKS "
        "is set."
    ),
]
ImageInputs = Annotated[ImageBytes, Depends(image_inputs_dependency())]  # bg_image and every other image input
SharedImages = Annotated[ImageBytes, Depends(image_inputs_dependency(shared_only=True))]
BatchFiles = Annotated[list[UploadFile], File(description="One zip of images (folders inside are kept), or several image files")]


def content_disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


def result_headers(result: Result) -> dict[str, str]:
    """The shared metadata keys as X-* headers (foreground box only when a subject was found)."""
    headers = {
        "Content-Disposition": content_disposition(result.output_name),
        "X-Processing-Seconds": f"{result.seconds:.4f}",
        "X-Model": result.model,
        "X-Image-Width": str(result.width),
        "X-Image-Height": str(result.height),
        "X-Format": result.format,
        "X-Confidence": f"{result.confidence:.4f}",
        "X-Foreground-Found": "true" if result.foreground_found else "false",
    }
    if result.foreground is not None:
        box = result.foreground
        headers |= {
            "X-Foreground-Top": str(box.top),
            "X-Foreground-Left": str(box.left),
            "X-Foreground-Width": str(box.width),
            "X-Foreground-Height": str(box.height),
        }
    return headers


@router.post(
    "/remove",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}, "application/zip": {}},
            "description": "The result in the chosen format; metadata in X-* headers",
        },
        400: {"description": "Not a supported image"},
        413: {"description": "Over the size limit"},
        422: {"description": "An option is not valid"},
        503: {"description": "Model unavailable"},
    },
)
def remove(
    options: Options,
    settings: AppSettings,
    cache: Cache,
    images: ImageInputs,
    file: ImageFile = None,
    image_url: ImageUrl = None,
) -> Response:
    """Remove the background of one image (an upload or a URL) and shape the output as the options ask.
    `keep_mask` / `remove_mask`: touch-up strokes over the photo; sending the same photo again with them reuses
    its prediction."""
    data, name = image_or_url(file, image_url, settings)
    result = remove_background(data, name, options, settings=settings, cache=cache, **images)
    return Response(content=result.data, media_type=result.media_type, headers=result_headers(result))


@router.post(
    "/remove/batch",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/zip": {}}, "description": "One output per success (named <stem>.<ext>) plus manifest.json"}
    },
)
def remove_batch(
    files: BatchFiles, options: Options, settings: AppSettings, cache: Cache, images: SharedImages
) -> StreamingResponse:
    """Remove backgrounds from many images with the same options; a file that fails is listed in manifest.json
    with its error and hint, and the others are still processed."""
    inputs = inputs_from_files([(upload.filename or "", upload.file) for upload in files], settings)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES, prefix="bgremove-batch-")  # noqa: SIM115
    sink = ZipSink(spool)
    try:
        for item in run_batch(inputs, options, settings=settings, cache=cache, **images):
            sink.add(item)
        manifest = sink.close(PurePath(options.model or settings.model_name).name)
        size = spool.tell()
        spool.seek(0)
    except BaseException as exc:
        _discard(sink, spool)
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            raise StorageFull(
                f"The temporary directory {tempfile.gettempdir()} is full or read-only ({exc.strerror}); "
                "no partial result was sent."
            ) from exc
        raise
    return StreamingResponse(
        _stream_and_close(spool),
        media_type="application/zip",
        headers={
            "Content-Disposition": content_disposition("bgremove-results.zip"),
            "Content-Length": str(size),
            "X-Batch-Count": str(manifest["count"]),
            "X-Batch-Completed": str(manifest["completed"]),
            "X-Batch-Failed": str(manifest["failed"]),
        },
    )


def _discard(sink: ZipSink, spool: IO[bytes]) -> None:
    """Drop a half-written zip (closing flushes, which fails the same way on a full disk: nothing is sent anyway)."""
    with contextlib.suppress(OSError, ValueError):
        sink.archive.close()
    with contextlib.suppress(OSError):
        spool.close()


def _stream_and_close(spool: IO[bytes], chunk: int = 1 << 20) -> Iterator[bytes]:
    try:
        while block := spool.read(chunk):
            yield block
    finally:
        spool.close()


@router.get("/models")
def models(settings: AppSettings) -> dict[str, Any]:
    """The model catalog: which models are on disk now, and the licence, source and sha256 of each file."""
    return {"default": settings.model_name, "models": [entry.to_dict() for entry in list_models(settings)]}


@router.get("/health")
def health(settings: AppSettings, cache: Cache, warmup: Warmup) -> dict[str, Any]:
    """Ready when the default model is loaded; what start-up is doing meanwhile; the default model's licence,
    source and checksum; the loaded models and the engine they really run on."""
    return {
        "status": warmup.status,
        "ready": warmup.status == "ready",
        "message": warmup.message,
        "error": warmup.error,
        "default_model": settings.model_name,
        "default_model_info": default_model_info(settings),
        "loaded_models": cache.loaded_names(),
        "provider": cache.active_provider(),
        **dict(zip(("engine", "precision"), cache.active_engine() or (None, None), strict=True)),
        "int8": cache.int8_status(),  # the default model's: ready, building, or why not
        "waiting_for_inference": cache.waiting,
        "version": __version__,
    }


def default_model_info(settings: Settings) -> dict[str, Any]:
    """Licence, source and sha256 of the default model's weights (issue 17.3: what is really on disk)."""
    name = settings.model_name
    if is_custom_model(name):
        return {
            "name": PurePath(name).name,
            "license": "unknown (custom model)",
            "source": "a custom .onnx file",
            "sha256": None,
            "on_disk": True,
        }
    entry = catalog_entry(CATALOG[name], settings)
    return {"name": name, "license": entry.license, "source": entry.source, "sha256": entry.sha256, "on_disk": entry.on_disk}
