"""remove.bg's API (`POST /v1.0/removebg`, `GET /v1.0/account`) as a thin translation over THE options schema
and the one pipeline, so an existing remove.bg client switches by changing its base URL.

Why each piece is here:
- The translation only renames what remove.bg names differently (`size` aliases, remove.bg's defaults `size=preview`
  and `format=auto`, the image and background sources); every other option goes to the schema as sent, and the
  schema's wording is what a refusal says. remove.bg-only parameters that change nothing here (`type`, `type_level`,
  `semitransparency`) are checked against remove.bg's values and reported back (`X-Type`); parameters neither
  remove.bg nor the schema know are ignored, as remove.bg ignores them, and listed in `X-Ignored-Parameters`.
- Errors have remove.bg's shape `{"errors": [{"title", "code", "detail"}]}` and are mapped in one place
  (`problem_for`), applied by this router's route class, so the app-wide native handlers never see them.
- `RemoveBgGuard` does for /v1.0 what the native guard does for /api, before any body is read: the API key
  (403 `auth_failed`), the upload size (400 `file_too_large`) and admission (429 + Retry-After).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from bgremove.core.errors import (
    BgRemoveError,
    CorruptImage,
    ImageTooLarge,
    InvalidOption,
    ModelUnavailable,
    NoForeground,
    StorageFull,
    UnsupportedFormat,
    UrlFetchFailed,
    UrlRefused,
)
from bgremove.core.fetch import FetchPolicy, fetch_url
from bgremove.core.observability import REJECTED, request_id
from bgremove.core.options import IMAGE_INPUTS, RemovalOptions, describe_error
from bgremove.core.pipeline import Result, remove_background
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from bgremove.web.deps import AppSettings, Cache, option_schema
from bgremove.web.guard import forward_with_body_limit, key_is_valid

log = logging.getLogger(__name__)

PREFIX = "/v1.0"
TAG = "remove.bg compatible"

# --- remove.bg's vocabulary -----------------------------------------------------------------------------------

# remove.bg's size names -> the schema's. "auto" is "the highest resolution your credits allow": here, full.
SIZE_NAMES: dict[str, str] = {
    "preview": "preview",
    "small": "preview",
    "regular": "preview",
    "medium": "medium",
    "hd": "hd",
    "full": "full",
    "4k": "full",
    "50MP": "full",
    "auto": "full",
}
SIZES = {name.lower(): size for name, size in SIZE_NAMES.items()}  # matched case-insensitively (50MP, 50mp)
DEFAULT_SIZE = "preview"  # remove.bg's documented default when `size` is absent (its OpenAPI and the npm client agree)
DEFAULT_FORMAT = "auto"  # remove.bg's default: PNG when the result has transparency, JPG when it is opaque
TYPES = frozenset(
    {"auto", "person", "product", "animal", "car", "car_interior", "car_part", "transportation", "graphic", "graphics", "other"}
)
TYPE_LEVELS = frozenset({"none", "1", "2", "latest"})
IMAGE_SOURCES = ("image_file", "image_file_b64", "image_url")
BACKGROUND_SOURCES = ("bg_color", "bg_image_url", "bg_image_file")
# bgremove extensions: one photo's own image inputs (touch-up hints) as `<name>_file` parts, e.g. keep_mask_file.
PHOTO_IMAGE_FILES = {f"{spec.name}_file": spec.name for spec in IMAGE_INPUTS.values() if spec.per_photo}
FILE_FIELDS = frozenset({"image_file", "bg_image_file", *PHOTO_IMAGE_FILES})
REMOVEBG_ONLY = frozenset(
    {
        "size",
        "type",
        "type_level",
        "semitransparency",
        "image_file_b64",
        "image_url",
        "image_file",
        "bg_image_url",
        "bg_image_file",
        *PHOTO_IMAGE_FILES,
    }
)
PASSTHROUGH = frozenset(RemovalOptions.model_fields) - {"size"}  # same name, same meaning: straight to the schema
UNLIMITED = 1_000_000  # /account: calls cost nothing here, so a client that checks its balance always has enough
RETRY_AFTER_BUSY = "5"
RETRY_AFTER_UNAVAILABLE = "30"
MULTIPART_OVERHEAD = 256 * 1024
_BOOLEAN: TypeAdapter[bool] = TypeAdapter(bool)  # the schema's own true/false grammar, for semitransparency


# --- errors, mapped in one place ----------------------------------------------------------------------------------


@dataclass(eq=False)
class Problem(Exception):
    """One remove.bg error answer: status, code, title, and an optional detail (our hint)."""

    status: int
    code: str
    title: str
    detail: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> JSONResponse:
        error = {"title": self.title, "code": self.code} | ({"detail": self.detail} if self.detail else {})
        return JSONResponse({"errors": [error]}, status_code=self.status, headers=self.headers or None)


@dataclass(eq=False)
class SourceFailed(Exception):
    """A core error while reading one input (`image_url`, `bg_image_url`, ...): the field picks remove.bg's code."""

    source: str
    cause: BgRemoveError


@dataclass(eq=False)
class InvalidParameter(Exception):
    """A parameter value the schema (or remove.bg's own list) refused; the name picks `invalid_<name>`."""

    name: str
    cause: InvalidOption


class BodyTooLarge(Exception):
    """Raised from the guard's receive() when the streamed body passes the limit (answered as file_too_large)."""


# remove.bg's codes for a failed source, by field and by what went wrong.
URL_CODES = {
    "image_url": ("invalid_image_url", "failed_image_download"),
    "bg_image_url": ("invalid_bg_image_url", "failed_bg_download"),
}
# Core errors by class (the nearest class in the MRO wins): status and remove.bg code.
CORE_CODES: dict[type[BgRemoveError], tuple[int, str]] = {
    NoForeground: (400, "unknown_foreground"),
    ImageTooLarge: (400, "file_too_large"),
    UnsupportedFormat: (400, "invalid_file_type"),
    CorruptImage: (400, "failed_to_read_image"),
    InvalidOption: (400, "invalid_parameter"),
    ModelUnavailable: (503, "model_unavailable"),
    StorageFull: (507, "storage_full"),
}
HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "file_too_large",
    422: "invalid_parameter",
}


def problem_for(exc: Exception) -> Problem:
    """Every error of the /v1.0 routes -> remove.bg's shape. The one mapping for this door."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, InvalidParameter):
        code = f"invalid_{exc.name}" if exc.name else "invalid_parameter"
        return Problem(400, code, exc.cause.message, exc.cause.hint)
    if isinstance(exc, SourceFailed):
        cause = exc.cause
        if exc.source in URL_CODES and isinstance(cause, (UrlRefused, UrlFetchFailed)):
            refused, failed = URL_CODES[exc.source]
            return Problem(
                400,
                refused if isinstance(cause, UrlRefused) else failed,
                f"{exc.source} could not be fetched: {cause.message}.",
                cause.hint,
            )
        return problem_for(cause)
    if isinstance(exc, BodyTooLarge):
        return Problem(400, "file_too_large", "The request is larger than the size limit.", SIZE_HINT)
    if isinstance(exc, BgRemoveError):
        status, code = next((CORE_CODES[cls] for cls in type(exc).__mro__ if cls in CORE_CODES), (500, "internal_error"))
        retry = {"Retry-After": RETRY_AFTER_UNAVAILABLE} if status in (503, 507) else {}
        return Problem(status, code, exc.message, exc.hint, retry)
    if isinstance(exc, RequestValidationError):
        errors = list(exc.errors())
        problem = describe_error(errors[0]) if errors else InvalidOption("The request is not valid.", hint=DOCS_HINT)
        return Problem(400, "invalid_parameter", problem.message, problem.hint)
    if isinstance(exc, StarletteHTTPException):
        status = 400 if exc.status_code in (413, 422) else exc.status_code  # remove.bg answers 400 for both
        return Problem(status, HTTP_CODES.get(exc.status_code, "error"), str(exc.detail), DOCS_HINT, dict(exc.headers or {}))
    log.error("Unexpected error in the remove.bg API", exc_info=exc)
    return Problem(
        500,
        "internal_error",
        "Internal error: the request could not be completed.",
        f"Retry; if it happens again, report request id {request_id.get()} with the server log.",
    )


DOCS_HINT = "See remove.bg's API documentation, or GET /docs (tag 'remove.bg compatible')."
SIZE_HINT = "Send a smaller file or raise MAX_IMAGE_SIZE_MB."


class RemoveBgRoute(APIRoute):
    """Routes whose every exception (FastAPI's validation errors included) is answered by `problem_for`, so the
    app-wide native handlers (`{"detail", "hint"}`) never shape a /v1.0 answer."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def mapped(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # this door's one error boundary
                return problem_for(exc).response()

        return mapped


# --- the request: read, then translate ---------------------------------------------------------------------------


@dataclass
class Upload:
    data: bytes
    filename: str


@dataclass
class RemoveBgRequest:
    """What a client sent: scalar parameters (form strings or JSON values) and uploaded files."""

    fields: dict[str, Any]
    files: dict[str, Upload]


@dataclass(frozen=True)
class Translation:
    """A request in the schema's terms, plus what only the remove.bg door needs."""

    options: RemovalOptions
    source: str  # which of IMAGE_SOURCES carries the image
    background: str | None  # bg_image_url / bg_image_file, or None (bg_color is an option)
    type: str
    type_level: str
    ignored: tuple[str, ...]


async def read_request(request: Request, settings: Settings) -> RemoveBgRequest:
    """Form fields (multipart or urlencoded) or a JSON object; absent, null and empty values are left out.

    A text part may be as large as the whole body (image_file_b64); a file part at most the image limit.
    """
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            body = await request.json()
        except ValueError:
            raise Problem(400, "invalid_request", "The JSON body could not be parsed.", DOCS_HINT) from None
        if not isinstance(body, dict):
            raise Problem(400, "invalid_request", "The JSON body must be an object of parameters.", DOCS_HINT)
        return RemoveBgRequest({key: json_value(value) for key, value in body.items() if present(value)}, {})
    if media in ("multipart/form-data", "application/x-www-form-urlencoded"):
        fields: dict[str, Any] = {}
        files: dict[str, Upload] = {}
        async with request.form(max_part_size=body_limit(settings)) as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await read_upload(value, key, settings.max_image_bytes)
                    if data or value.filename:  # a browser sends an unfilled file input as an empty, nameless part
                        files[key] = Upload(data, value.filename or "image")
                elif present(value):
                    fields[key] = value
        return RemoveBgRequest(fields, files)
    if await request.body():
        raise Problem(
            400,
            "invalid_request",
            f"Unsupported Content-Type {media or '(none)'}.",
            "Send multipart/form-data, application/x-www-form-urlencoded or application/json.",
        )
    return RemoveBgRequest({}, {})


def present(value: Any) -> bool:
    """remove.bg clients send unset parameters as null or "" (forms); both mean "use the default"."""
    return value is not None and not (isinstance(value, str) and not value.strip())


def json_value(value: Any) -> Any:
    """JSON numbers become the text a form would carry (`"type_level": 1`, `"quality": 90`); booleans stay booleans."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


async def read_upload(upload: UploadFile, name: str, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise SourceFailed(name, ImageTooLarge(f"{name} is larger than the limit of {limit / 1048576:g} MB.", hint=SIZE_HINT))
    return data


def translate(sent: RemoveBgRequest) -> Translation:
    """remove.bg's parameters -> RemovalOptions (validated by the schema) and the sources to read."""
    fields = sent.fields
    given = set(fields) | set(sent.files)
    sources = [name for name in IMAGE_SOURCES if name in given]
    if not sources:
        raise Problem(
            400,
            "missing_source",
            "No image given.",
            "Please provide the source image in the image_url, image_file or image_file_b64 parameter.",
        )
    if len(sources) > 1:
        raise Problem(
            400,
            "multiple_sources",
            "Multiple image sources given: " + ", ".join(sources) + ".",
            "Please provide either the image_url, image_file or image_file_b64 parameter.",
        )
    backgrounds = [name for name in BACKGROUND_SOURCES if name in given]
    if len(backgrounds) > 1:
        raise Problem(
            400,
            "multiple_bg_sources",
            "Multiple background sources given: " + ", ".join(backgrounds) + ".",
            "Please provide either the bg_color, the bg_image_url or the bg_image_file parameter.",
        )
    if as_text := sorted(FILE_FIELDS & set(fields)):
        name = as_text[0]
        raise Problem(
            400,
            f"invalid_{name}",
            f"{name} must be a file upload.",
            f"Send it as a multipart/form-data file part (curl -F {name}=@photo.jpg), or use "
            f"{name.replace('_file', '_url')} / image_file_b64.",
        )

    values = {name: fields[name] for name in PASSTHROUGH & set(fields)}
    size = str(fields.get("size", DEFAULT_SIZE))
    values["size"] = SIZES.get(size.strip().lower(), size)
    values.setdefault("format", DEFAULT_FORMAT)
    kind = remove_bg_choice(fields, "type", "auto", TYPES)
    level = remove_bg_choice(fields, "type_level", "1", TYPE_LEVELS)
    if "semitransparency" in fields:
        try:
            _BOOLEAN.validate_python(fields["semitransparency"])
        except ValidationError:
            raise InvalidParameter(
                "semitransparency",
                InvalidOption(f"semitransparency={fields['semitransparency']!r} is not valid.", hint="Use true or false."),
            ) from None
    ignored = tuple(sorted(name for name in given if name not in PASSTHROUGH | REMOVEBG_ONLY))
    return Translation(
        validated(values), sources[0], next((b for b in backgrounds if b != "bg_color"), None), kind, level, ignored
    )


def remove_bg_choice(fields: Mapping[str, Any], name: str, default: str, allowed: frozenset[str]) -> str:
    """A remove.bg-only parameter with a fixed list of values (`type`, `type_level`)."""
    value = str(fields.get(name, default)).strip().lower()
    if value not in allowed:
        raise InvalidParameter(
            name, InvalidOption(f"{name}={fields[name]!r} is not valid.", hint="Use one of: " + ", ".join(sorted(allowed)) + ".")
        )
    return value


def validated(values: dict[str, Any]) -> RemovalOptions:
    """THE schema validates; its first complaint, worded by `describe_error` exactly as `parse_options` words it,
    keeps the option's name so the code can be remove.bg's `invalid_<name>`."""
    try:
        return RemovalOptions.model_validate(values)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        location = [str(part) for part in error.get("loc", ())]
        name = location[-1] if location else ""
        problem = describe_error(error)
        if name == "size":
            problem = InvalidOption(problem.message, hint="Use one of remove.bg's sizes: " + ", ".join(SIZE_NAMES) + ".")
        raise InvalidParameter(name, problem) from None


# --- the work (in a worker thread) -------------------------------------------------------------------------------


def process(sent: RemoveBgRequest, plan: Translation, settings: Settings, cache: SessionCache) -> Result:
    """Read the sources, run the one pipeline; no clear subject is remove.bg's `unknown_foreground`."""
    data, name = image_bytes(sent, plan.source, settings)
    background = None
    if plan.background == "bg_image_file":
        background = sent.files["bg_image_file"].data
    elif plan.background == "bg_image_url":
        background = fetched(str(sent.fields["bg_image_url"]), "bg_image_url", settings)
    images = {name: sent.files[part].data for part, name in PHOTO_IMAGE_FILES.items() if part in sent.files}
    result = remove_background(data, name, plan.options, settings=settings, cache=cache, bg_image=background, **images)
    if not result.foreground_found or result.foreground is None:
        raise NoForeground(
            "Could not identify foreground in image.",
            hint="Send a photo with a clear subject (person, product, animal, car...) in front of a "
            "background; a blank or texture-only image has none.",
        )
    return result


def image_bytes(sent: RemoveBgRequest, source: str, settings: Settings) -> tuple[bytes, str]:
    if source == "image_file":
        upload = sent.files["image_file"]
        return upload.data, upload.filename
    if source == "image_file_b64":
        return decode_base64(str(sent.fields["image_file_b64"]), settings.max_image_bytes), "image"
    url = str(sent.fields["image_url"]).strip()
    name = PurePath(url.split("?", 1)[0].split("#", 1)[0].rstrip("/")).name
    return fetched(url, "image_url", settings), name or "image"


def fetched(url: str, source: str, settings: Settings) -> bytes:
    """The bytes behind a URL, under the SSRF rules and the upload size limit (refusals open no connection)."""
    policy = FetchPolicy(
        max_bytes=settings.max_image_bytes,
        timeout_seconds=settings.url_fetch_timeout_seconds,
        allow_private_networks=settings.url_allow_private_networks,
    )
    try:
        return fetch_url(url.strip(), policy)
    except BgRemoveError as exc:
        raise SourceFailed(source, exc) from exc


def decode_base64(text: str, limit: int) -> bytes:
    """Standard or URL-safe base64, with or without padding, line breaks or a `data:` prefix."""
    payload = text.strip()
    if payload.startswith("data:"):
        payload = payload.partition(",")[2]
    payload = re.sub(r"\s+", "", payload).replace("-", "+").replace("_", "/")
    if len(payload) * 3 // 4 > limit:
        raise SourceFailed(
            "image_file_b64", ImageTooLarge(f"image_file_b64 is larger than the limit of {limit / 1048576:g} MB.", hint=SIZE_HINT)
        )
    try:
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SourceFailed(
            "image_file_b64",
            CorruptImage("image_file_b64 is not valid base64.", hint="Send the file's bytes base64-encoded (standard alphabet)."),
        ) from None


# --- the answer ------------------------------------------------------------------------------------------------------


def answer_headers(result: Result, plan: Translation) -> dict[str, str]:
    """remove.bg's headers: size, subject box, X-Type (unless type_level=none), and 0 credits charged."""
    box = result.foreground
    assert box is not None
    headers = {
        "X-Width": str(result.width),
        "X-Height": str(result.height),
        "X-Credits-Charged": "0",
        "X-Foreground-Top": str(box.top),
        "X-Foreground-Left": str(box.left),
        "X-Foreground-Width": str(box.width),
        "X-Foreground-Height": str(box.height),
    }
    if plan.type_level != "none":
        headers["X-Type"] = plan.type if plan.type != "auto" else "other"  # no classifier here: the type you sent
    if plan.ignored:
        headers["X-Ignored-Parameters"] = ",".join(plan.ignored)
    return headers


def wants_json(accept: str) -> bool:
    """JSON when the client prefers it to an image: application/json ranks strictly above image/* and */*.

    The npm client's `Accept: application/json` gets JSON; axios's default `application/json, text/plain, */*`
    ties with */*, so it gets the image bytes, as remove.bg's own axios example expects.
    """
    json_q = image_q = 0.0
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = next((_q(p[2:]) for p in params if p.lower().startswith("q=")), 1.0)
        media = media.lower()
        if media == "application/json":
            json_q = max(json_q, quality)
        elif media == "*/*" or media.startswith("image/"):
            image_q = max(image_q, quality)
    return json_q > image_q


def _q(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


# --- OpenAPI ----------------------------------------------------------------------------------------------------------


class RemoveBgData(BaseModel):
    result_b64: str
    foreground_top: int
    foreground_left: int
    foreground_width: int
    foreground_height: int


class RemoveBgJson(BaseModel):
    data: RemoveBgData


class ErrorItem(BaseModel):
    title: str
    code: str
    detail: str | None = None


class ErrorBody(BaseModel):
    errors: list[ErrorItem]


class Credits(BaseModel):
    total: float
    subscription: float
    payg: float
    enterprise: float


class ApiAllowance(BaseModel):
    free_calls: int
    sizes: str


class AccountAttributes(BaseModel):
    credits: Credits
    api: ApiAllowance


class AccountData(BaseModel):
    attributes: AccountAttributes


class Account(BaseModel):
    data: AccountData


def _request_schema(multipart: bool) -> dict[str, Any]:
    """remove.bg's parameters, then the schema's own options (bgremove extensions) with the schema's descriptions."""
    properties: dict[str, Any] = {
        "image_file": {"type": "string", "format": "binary", "description": "The image (multipart only)."},
        "image_file_b64": {"type": "string", "description": "The image, base64-encoded."},
        "image_url": {
            "type": "string",
            "description": "An http(s) URL of the image, fetched by the server "
            "(private networks refused unless URL_ALLOW_PRIVATE_NETWORKS=true).",
        },
        "size": {
            "type": "string",
            "enum": list(SIZE_NAMES),
            "default": DEFAULT_SIZE,
            "description": "preview/small/regular: at most 0.25 MP; medium 1.5 MP; hd 4 MP; full/4k/50MP/auto: "
            "the input resolution. Never upscaled.",
        },
        "type": {
            "type": "string",
            "enum": sorted(TYPES),
            "default": "auto",
            "description": "Accepted and reported back in X-Type; it does not change the model.",
        },
        "type_level": {
            "type": "string",
            "enum": sorted(TYPE_LEVELS),
            "default": "1",
            "description": "none: no X-Type header; otherwise X-Type is sent.",
        },
        "semitransparency": {
            "type": "boolean",
            "default": True,
            "description": "Accepted; no effect: soft and see-through edges are always kept.",
        },
        "bg_image_url": {"type": "string", "description": "A background image URL (same rules as image_url)."},
        "bg_image_file": {"type": "string", "format": "binary", "description": "A background image (multipart only)."},
        **{
            part: {
                "type": "string",
                "format": "binary",
                "description": f"bgremove extension (multipart only). {IMAGE_INPUTS[name].description}",
            }
            for part, name in PHOTO_IMAGE_FILES.items()
        },
    }
    if not multipart:
        properties = {key: value for key, value in properties.items() if key not in FILE_FIELDS}
    for name in sorted(PASSTHROUGH):
        described = option_schema(name)
        extension = name not in (
            "format",
            "roi",
            "crop",
            "crop_margin",
            "scale",
            "position",
            "channels",
            "bg_color",
            "add_shadow",
        )
        description = RemovalOptions.model_fields[name].description or ""
        properties[name] = described | {"description": ("bgremove extension. " if extension else "") + description}
    properties["format"]["default"] = DEFAULT_FORMAT
    return {"type": "object", "properties": properties}


OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _request_schema(multipart=True)},
            "application/x-www-form-urlencoded": {"schema": _request_schema(multipart=False)},
            "application/json": {"schema": _request_schema(multipart=False)},
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "Missing or unreadable image, invalid parameter, refused URL, or `unknown_foreground`",
    },
    403: {"model": ErrorBody, "description": "`auth_failed`: missing or wrong X-Api-Key (when API_KEYS is set)"},
    429: {"model": ErrorBody, "description": "`rate_limit_exceeded`: the queue is full; see Retry-After"},
}

# --- the routes -------------------------------------------------------------------------------------------------------

router = APIRouter(prefix=PREFIX, tags=[TAG], route_class=RemoveBgRoute)


@router.post(
    "/removebg",
    response_class=Response,
    openapi_extra=OPENAPI_BODY,
    responses={
        200: {
            "content": {
                "image/png": {},
                "image/jpeg": {},
                "image/webp": {},
                "application/zip": {},
                "application/json": {"schema": RemoveBgJson.model_json_schema()},
            },
            "description": "The result (or, with `Accept: application/json`, `{data: {result_b64, "
            "foreground_*}}`); headers X-Width, X-Height, X-Type, X-Foreground-*, "
            "X-Credits-Charged: 0",
        },
        **ERRORS,
    },
)
async def remove_bg(request: Request, settings: AppSettings, cache: Cache) -> Response:
    """remove.bg's background removal: the same parameters and answers, served by bgremove's own pipeline."""
    sent = await read_request(request, settings)
    plan = translate(sent)
    result = await run_in_threadpool(process, sent, plan, settings, cache)
    headers = answer_headers(result, plan)
    if wants_json(request.headers.get("accept", "")):
        box = result.foreground
        assert box is not None
        body = RemoveBgJson(
            data=RemoveBgData(
                result_b64=base64.b64encode(result.data).decode("ascii"),
                foreground_top=box.top,
                foreground_left=box.left,
                foreground_width=box.width,
                foreground_height=box.height,
            )
        )
        return Response(body.model_dump_json(), media_type="application/json", headers=headers)
    return Response(result.data, media_type=result.media_type, headers=headers)


ACCOUNT = Account(
    data=AccountData(
        attributes=AccountAttributes(
            credits=Credits(total=UNLIMITED, subscription=0, payg=0, enterprise=UNLIMITED),
            api=ApiAllowance(free_calls=UNLIMITED, sizes="all"),
        )
    )
)


@router.get("/account", response_model=Account, responses={403: ERRORS[403]})
async def account() -> Account:
    """remove.bg's account shape. Calls cost nothing here (X-Credits-Charged: 0), so the balance never runs out:
    `total` and `enterprise` report 1,000,000 credits, `free_calls` 1,000,000, `sizes` "all"."""
    return ACCOUNT


ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@router.api_route("/{path:path}", methods=ALL_METHODS, include_in_schema=False)
async def not_found(request: Request) -> Response:
    """Any other /v1.0 path or method, in remove.bg's shape (405 with Allow when the path exists)."""
    allowed = [
        method
        for method in ALL_METHODS
        if method != request.method
        and any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in router.routes
            if getattr(route, "endpoint", None) is not not_found
        )
    ]
    if allowed:
        raise Problem(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {request.url.path}.",
            f"Use {', '.join(allowed)}.",
            {"Allow": ", ".join(allowed)},
        )
    raise Problem(
        404,
        "not_found",
        f"There is no endpoint at {request.url.path}.",
        "The remove.bg API here has POST /v1.0/removebg and GET /v1.0/account.",
    )


# --- the edge: key, size, admission ----------------------------------------------------------------------------------


def body_limit(settings: Settings) -> int:
    """The image and a background image, each base64-encoded at worst (4/3), plus the form around them. Touch-up
    hints travel only as file parts, next to raw (not base64) images: stroke layers compress to a few kB and fit in
    the third of the limit a multipart body leaves."""
    return settings.max_image_bytes * 8 // 3 + MULTIPART_OVERHEAD


class RemoveBgGuard:
    """In front of /v1.0, before any body is read (plain ASGI, like the native guard):

    1. API keys (when API_KEYS is set): `X-Api-Key: KEY` (remove.bg's header) or `Authorization: Bearer KEY`,
       else 403 `auth_failed`, remove.bg's answer;
    2. upload size: 400 `file_too_large` as soon as the declared or streamed body passes the limit;
    3. admission: beyond MAX_CONCURRENT_INFERENCES + MAX_QUEUE_SIZE removals in flight, 429 with Retry-After
       (remove.bg's rate-limit answer) instead of an unbounded queue.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.keys = [key.encode() for key in settings.api_keys]
        self.limit = body_limit(settings)
        self.max_in_flight = settings.max_concurrent_inferences + settings.max_queue_size
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.keys and not key_is_valid(headers, self.keys):
            missing = not headers.get(b"x-api-key") and not headers.get(b"authorization")
            await Problem(
                403,
                "auth_failed",
                "Missing API Key" if missing else "Invalid API Key",
                "Send one of the server's API_KEYS as `X-Api-Key: KEY`.",
            ).response()(scope, receive, send)
            return
        if path != PREFIX + "/removebg" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await problem_for(BodyTooLarge()).response()(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            REJECTED.labels(path).inc()
            await Problem(
                429,
                "rate_limit_exceeded",
                "Rate limit exceeded: the server's queue is full.",
                f"Retry after {RETRY_AFTER_BUSY} seconds.",
                {"Retry-After": RETRY_AFTER_BUSY},
            ).response()(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self._with_size_limit(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _with_size_limit(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def too_large(exc: Exception) -> None:  # only when it escaped the route (the route answers it itself)
            await problem_for(exc).response()(scope, receive, send)

        await forward_with_body_limit(self.app, (scope, receive, send), self.limit, BodyTooLarge, too_large)


EXPOSED_HEADERS = [
    "X-Width",
    "X-Height",
    "X-Type",
    "X-Credits-Charged",
    "X-Foreground-Top",
    "X-Foreground-Left",
    "X-Foreground-Width",
    "X-Foreground-Height",
    "X-Ignored-Parameters",
    "Retry-After",
]


def install_removebg(app: FastAPI, settings: Settings) -> None:
    """Wire the remove.bg door into an app: its router and its guard.

    Call in `create_app` right after `app.add_middleware(ApiGuard, ...)` (so CORS and request ids stay outside
    it) and before Gradio is mounted at / (the mount would shadow /v1.0).
    """
    app.include_router(router)
    app.add_middleware(RemoveBgGuard, settings=settings)
