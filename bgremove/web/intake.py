"""The one intake of the HTTP doors: an upload under the byte limit, a base64 body, a URL fetched under the SSRF
policy (`core.fetch`), a file name from a URL, and the image-valued inputs of `core.options.IMAGE_INPUTS`.

Every refusal has one wording, whichever door it comes through: "<what> is larger than the limit of N MB."
(`core.intake.too_large`, which the CLI and the Gradio handlers use too), "<what> could not be fetched: <why>.",
"<what> is not valid base64.". Each image input's bytes go to `remove_background` as the keyword of its name.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import re
from collections.abc import Awaitable, Callable
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import File, Request, UploadFile
from starlette.datastructures import UploadFile as StarletteUpload

from bgremove.core.errors import BgRemoveError, CorruptImage, InvalidOption
from bgremove.core.fetch import FetchPolicy, fetch_url
from bgremove.core.intake import read_limited, too_large
from bgremove.core.options import IMAGE_INPUTS, ImageInput
from bgremove.core.settings import Settings

SHARED_INPUTS = tuple(spec for spec in IMAGE_INPUTS.values() if not spec.per_photo)  # what a batch may share
# name -> bytes, passed on as keyword arguments (`remove_background(..., **images)`, `run_batch(..., **images)`)
ImageBytes = dict[str, Any]


def read_upload(upload: UploadFile, limit: int, name: str | None = None) -> bytes:
    """At most `limit` bytes of an upload (the guard already refused bodies far above it)."""
    return read_limited(upload.file, limit, name or upload.filename or "the upload")


async def read_upload_async(upload: StarletteUpload, limit: int, name: str) -> bytes:
    """`read_upload` on the event loop (Starlette moves a spooled file's read to a thread)."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise too_large(name, limit)
    return data


def decode_base64(text: str, limit: int, name: str) -> bytes:
    """Standard or URL-safe base64, with or without padding, line breaks or a `data:` prefix."""
    payload = text.strip()
    if payload.startswith("data:"):
        payload = payload.partition(",")[2]
    payload = re.sub(r"\s+", "", payload).replace("-", "+").replace("_", "/")
    if len(payload) * 3 // 4 > limit:
        raise too_large(name, limit)
    try:
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise CorruptImage(
            f"{name} is not valid base64.", hint="Send the file's bytes base64-encoded (standard alphabet)."
        ) from None


def fetch_policy(settings: Settings) -> FetchPolicy:
    """The SSRF rules and limits for an image URL (the upload size limit, the fetch timeout)."""
    return FetchPolicy(
        max_bytes=settings.max_image_bytes,
        timeout_seconds=settings.url_fetch_timeout_seconds,
        allow_private_networks=settings.url_allow_private_networks,
    )


def fetch_image(url: str, settings: Settings, name: str = "image_url") -> bytes:
    """The bytes behind a URL field; a refusal says which field it is about (fetch's own words are clauses)."""
    try:
        return fetch_url(url.strip(), fetch_policy(settings))
    except BgRemoveError as exc:
        raise type(exc)(f"{name} could not be fetched: {exc.message}.", hint=exc.hint) from exc


def name_from_url(url: str, default: str = "image") -> str:
    """The file name a URL ends with (query and fragment dropped), for the output's name."""
    return PurePath(url.strip().split("?", 1)[0].split("#", 1)[0].rstrip("/")).name or default


def image_or_url(file: UploadFile | None, url: str | None, settings: Settings) -> tuple[bytes, str]:
    """Exactly one of an upload (`file`) and `image_url`: its bytes and a name for the output."""
    if (file is None) == (url is None):
        raise InvalidOption(
            "Send either `file` or `image_url`, not both." if file is not None else "No image was sent.",
            hint="Upload the image as the form field `file` (curl -F file=@photo.jpg), or give its address as `image_url`.",
        )
    if file is not None:
        return read_upload(file, settings.max_image_bytes), file.filename or "image"
    assert url is not None
    return fetch_image(url, settings), name_from_url(url)


def read_image_paths(paths: dict[str, str | None], settings: Settings) -> ImageBytes:
    """Image inputs given as server-side paths (Gradio hands uploads over as files): name -> bytes under the limit."""
    return {
        name: read_limited(path, settings.max_image_bytes, name) for name, path in paths.items() if path and name in IMAGE_INPUTS
    }


def image_inputs_dependency(*, shared_only: bool = False) -> Callable[..., Awaitable[ImageBytes]]:
    """A FastAPI dependency with one optional file field per IMAGE_INPUTS entry (documented with its description):
    name -> bytes under the image limit, for `remove_background(..., **images)`.

    `shared_only` (batches and jobs): only inputs that serve every photo; one that belongs to a single photo is
    refused by name rather than silently ignored.
    """
    specs = SHARED_INPUTS if shared_only else tuple(IMAGE_INPUTS.values())
    per_photo = [name for name, spec in IMAGE_INPUTS.items() if spec.per_photo]

    async def images(request: Request, **uploads: UploadFile | None) -> ImageBytes:
        settings: Settings = request.app.state.settings
        if shared_only and per_photo:
            form = await request.form()
            for name in per_photo:
                if name in form:
                    raise InvalidOption(
                        f"{name} belongs to one photo; a batch cannot share it.",
                        hint=f"Send {name} with its photo to /api/remove.",
                    )
        return {
            name: await read_upload_async(upload, settings.max_image_bytes, name)
            for name, upload in uploads.items()
            if upload is not None
        }

    images.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
            *(_file_parameter(spec) for spec in specs),
        ],
        return_annotation=ImageBytes,
    )
    return images


def _file_parameter(spec: ImageInput) -> inspect.Parameter:
    annotation: Any = Annotated[UploadFile | None, File(description=spec.description)]
    return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
