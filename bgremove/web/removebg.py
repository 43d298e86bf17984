"""remove.bg's API (`POST /v1.0/removebg`, `GET /v1.0/account`) as a thin translation over THE options schema
and the one pipeline, so an existing remove.bg client switches by changing its base URL.

Why each piece is here:
- The translation only renames what remove.bg names differently (`size` aliases, remove.bg's defaults `size=preview`
  and `format=auto`, the image and background sources); every other option goes to the schema as sent, and the
  schema's wording is what a refusal says. remove.bg-only parameters that change nothing here (`type`, `type_level`,
  `semitransparency`) are checked against remove.bg's values and reported back (`X-Type`); parameters neither
  remove.bg nor the schema know are ignored, as remove.bg ignores them, and listed in `X-Ignored-Parameters`.
  remove.bg's vocabulary and the OpenAPI shapes are in `web.removebg_shapes`.
- Inputs are read by the shared intake (`web.intake`): uploads and base64 under the size limit, URLs under the SSRF
  policy, each image input of the schema as `<name>_file` / `<name>_url`.
- Errors: status and Retry-After come from the one error table (`web.errors.TABLE`); this door only renames the
  code (`invalid_<name>`, `failed_image_download`, ...) and answers remove.bg's envelope
  `{"errors": [{"title", "code", "detail"}]}` (`problem_for`, applied by this router's route class).
- The guard in front of /v1.0 is the native one (`web.guard.DoorGuard`) with this door's words: the API key
  (403 `auth_failed`), the upload size (400 `file_too_large`) and the app's one admission gate (429 + Retry-After).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from bgremove.core.errors import BgRemoveError, InvalidOption, NoForeground, UrlFetchFailed, UrlRefused
from bgremove.core.observability import request_id
from bgremove.core.options import IMAGE_INPUTS, RemovalOptions, describe_error
from bgremove.core.pipeline import Result, remove_background
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from bgremove.web import intake
from bgremove.web.admission import Admission
from bgremove.web.deps import AppSettings, Cache
from bgremove.web.errors import HTTP_RULES, client_hint, rule_for
from bgremove.web.guard import MULTIPART_OVERHEAD, Door, DoorGuard
from bgremove.web.keys import KeyRequired
from bgremove.web.removebg_shapes import (
    ACCOUNT,
    BACKGROUND_SOURCES,
    DEFAULT_FORMAT,
    DEFAULT_SIZE,
    ERRORS,
    FILE_FIELDS,
    IMAGE_SOURCES,
    INPUT_FILES,
    INPUT_URLS,
    OPENAPI_BODY,
    PASSTHROUGH,
    REMOVEBG_ONLY,
    SIZE_NAMES,
    SIZES,
    TYPE_LEVELS,
    TYPES,
    UNLIMITED,
    URL_CODES,
    Account,
    RemoveBgData,
    RemoveBgJson,
)

__all__ = ["UNLIMITED", "RemoveBgRequest", "install_removebg", "problem_for", "translate", "wants_json"]

log = logging.getLogger(__name__)

PREFIX = "/v1.0"
TAG = "remove.bg compatible"
DOCS_HINT = "See remove.bg's API documentation, or GET /docs (tag 'remove.bg compatible')."
_BOOLEAN: TypeAdapter[bool] = TypeAdapter(bool)  # the schema's own true/false grammar, for semitransparency


# --- errors: the table's status, remove.bg's code and envelope ----------------------------------------------------


@dataclass(eq=False)
class Problem:
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
class Renamed(Exception):
    """A core error under remove.bg's own code for it (`invalid_size`, `missing_source`); the status is the table's."""

    code: str
    cause: BgRemoveError


@dataclass(eq=False)
class SourceFailed(Exception):
    """A URL of one input (`image_url`, `bg_image_url`, ...) refused or failed: the field picks remove.bg's code."""

    source: str
    cause: BgRemoveError


def refused(code: str, title: str, detail: str) -> Renamed:
    """A request remove.bg refuses by name (a missing or doubled source): an invalid option, under its own code."""
    return Renamed(code, InvalidOption(title, hint=detail))


def problem_for(exc: Exception) -> Problem:
    """Every error of the /v1.0 routes -> remove.bg's shape. The one mapping for this door."""
    if isinstance(exc, Renamed):
        return _problem(exc.cause, exc.code)
    if isinstance(exc, SourceFailed):
        refusal, failure = URL_CODES.get(exc.source, ("", ""))
        if isinstance(exc.cause, UrlRefused) and refusal:
            return _problem(exc.cause, refusal)
        if isinstance(exc.cause, UrlFetchFailed) and failure:
            return _problem(exc.cause, failure)
        return _problem(exc.cause)
    if isinstance(exc, BgRemoveError):
        return _problem(exc)
    if isinstance(exc, RequestValidationError):
        errors = list(exc.errors())
        problem = describe_error(errors[0]) if errors else InvalidOption("The request is not valid.", hint=DOCS_HINT)
        return _problem(problem)
    if isinstance(exc, StarletteHTTPException):
        rule = HTTP_RULES.get(exc.status_code)
        hint = getattr(exc, "hint", None) or DOCS_HINT
        headers = dict(exc.headers or {})
        if rule is None:
            return Problem(exc.status_code, "error", str(exc.detail), hint, headers)
        return Problem(rule.removebg, rule.code, str(exc.detail), hint, rule.headers() | headers)
    log.error("Unexpected error in the remove.bg API", exc_info=exc)
    return Problem(
        500,
        "internal_error",
        "Internal error: the request could not be completed.",
        f"Retry; if it happens again, report request id {request_id.get()} with the server log.",
    )


def _problem(exc: BgRemoveError, code: str | None = None) -> Problem:
    rule = rule_for(exc)
    return Problem(rule.removebg, code or rule.code, exc.message, client_hint(exc), rule.headers())


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
    images: dict[str, str]  # image input (bg_image, ...) -> the field that carries it (`<name>_file` / `<name>_url`)
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
            raise refused("invalid_request", "The JSON body could not be parsed.", DOCS_HINT) from None
        if not isinstance(body, dict):
            raise refused("invalid_request", "The JSON body must be an object of parameters.", DOCS_HINT)
        return RemoveBgRequest({key: json_value(value) for key, value in body.items() if present(value)}, {})
    if media in ("multipart/form-data", "application/x-www-form-urlencoded"):
        fields: dict[str, Any] = {}
        files: dict[str, Upload] = {}
        async with request.form(max_part_size=body_limit(settings)) as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await intake.read_upload_async(value, settings.max_image_bytes, key)
                    if data or value.filename:  # a browser sends an unfilled file input as an empty, nameless part
                        files[key] = Upload(data, value.filename or "image")
                elif present(value):
                    fields[key] = value
        return RemoveBgRequest(fields, files)
    if await request.body():
        raise refused(
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


def translate(sent: RemoveBgRequest) -> Translation:
    """remove.bg's parameters -> RemovalOptions (validated by the schema) and the sources to read."""
    fields = sent.fields
    given = set(fields) | set(sent.files)
    sources = [name for name in IMAGE_SOURCES if name in given]
    if not sources:
        raise refused(
            "missing_source",
            "No image given.",
            "Please provide the source image in the image_url, image_file or image_file_b64 parameter.",
        )
    if len(sources) > 1:
        raise refused(
            "multiple_sources",
            "Multiple image sources given: " + ", ".join(sources) + ".",
            "Please provide either the image_url, image_file or image_file_b64 parameter.",
        )
    backgrounds = [name for name in BACKGROUND_SOURCES if name in given]
    if len(backgrounds) > 1:
        raise refused(
            "multiple_bg_sources",
            "Multiple background sources given: " + ", ".join(backgrounds) + ".",
            "Please provide either the bg_color, the bg_image_url or the bg_image_file parameter.",
        )
    if as_text := sorted(FILE_FIELDS & set(fields)):
        name = as_text[0]
        raise refused(
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
            raise Renamed(
                "invalid_semitransparency",
                InvalidOption(f"semitransparency={fields['semitransparency']!r} is not valid.", hint="Use true or false."),
            ) from None
    for name in IMAGE_INPUTS:
        if f"{name}_file" in given and f"{name}_url" in given:
            raise refused(
                "multiple_bg_sources" if name == "bg_image" else f"multiple_{name}_sources",
                f"Both {name}_file and {name}_url given.",
                f"Please provide either the {name}_file or the {name}_url parameter.",
            )
    images = {INPUT_FILES.get(field) or INPUT_URLS[field]: field for field in sorted(given) if field in INPUT_FILES | INPUT_URLS}
    ignored = tuple(sorted(name for name in given if name not in PASSTHROUGH | REMOVEBG_ONLY))
    return Translation(validated(values), sources[0], images, kind, level, ignored)


def remove_bg_choice(fields: Mapping[str, Any], name: str, default: str, allowed: frozenset[str]) -> str:
    """A remove.bg-only parameter with a fixed list of values (`type`, `type_level`)."""
    value = str(fields.get(name, default)).strip().lower()
    if value not in allowed:
        raise Renamed(
            f"invalid_{name}",
            InvalidOption(f"{name}={fields[name]!r} is not valid.", hint="Use one of: " + ", ".join(sorted(allowed)) + "."),
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
        raise Renamed(f"invalid_{name}" if name else "invalid_parameter", problem) from None


# --- the work (in a worker thread) -------------------------------------------------------------------------------


def process(sent: RemoveBgRequest, plan: Translation, settings: Settings, cache: SessionCache) -> Result:
    """Read the sources, run the one pipeline; no clear subject is remove.bg's `unknown_foreground`."""
    data, name = image_bytes(sent, plan.source, settings)
    images = {name: source_bytes(sent, field, settings) for name, field in plan.images.items()}
    result = remove_background(data, name, plan.options, settings=settings, cache=cache, **images)
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
        return intake.decode_base64(str(sent.fields["image_file_b64"]), settings.max_image_bytes, "image_file_b64"), "image"
    url = str(sent.fields["image_url"])
    return source_bytes(sent, "image_url", settings), intake.name_from_url(url)


def source_bytes(sent: RemoveBgRequest, source: str, settings: Settings) -> bytes:
    """An uploaded `<name>_file`, or the bytes behind a URL field under the SSRF rules (refusals open no connection)."""
    if source in sent.files:
        return sent.files[source].data
    try:
        return intake.fetch_image(str(sent.fields[source]), settings, source)
    except BgRemoveError as exc:
        raise SourceFailed(source, exc) from exc


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
        exc = StarletteHTTPException(
            405, f"{request.method} is not allowed on {request.url.path}.", {"Allow": ", ".join(allowed)}
        )
        exc.hint = f"Use {', '.join(allowed)}."  # type: ignore[attr-defined]
        raise exc
    exc = StarletteHTTPException(404, f"There is no endpoint at {request.url.path}.")
    exc.hint = "The remove.bg API here has POST /v1.0/removebg and GET /v1.0/account."  # type: ignore[attr-defined]
    raise exc


# --- the edge: key, size, admission ----------------------------------------------------------------------------------


def body_limit(settings: Settings) -> int:
    """The image and a background image, each base64-encoded at worst (4/3), plus the form around them. Touch-up
    hints travel only as file parts, next to raw (not base64) images: stroke layers compress to a few kB and fit in
    the third of the limit a multipart body leaves."""
    return settings.max_image_bytes * 8 // 3 + MULTIPART_OVERHEAD


def removebg_door(settings: Settings) -> Door:
    """The guard's view of /v1.0: every path needs the key; only POST /v1.0/removebg is an upload and a removal."""
    limit = body_limit(settings)
    removal = PREFIX + "/removebg"

    def key_refusal(missing: bool) -> KeyRequired:
        return KeyRequired(
            "Missing API Key" if missing else "Invalid API Key", hint="Send one of the server's API_KEYS as `X-Api-Key: KEY`."
        )

    return Door(
        covers=lambda path: path.startswith(PREFIX + "/"),
        body_limit=lambda path, method: limit if path == removal and method == "POST" else None,
        is_removal=lambda path, method: path == removal and method == "POST",
        answer=lambda exc: problem_for(exc).response(),
        key_refusal=key_refusal,
    )


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


def install_removebg(app: FastAPI, settings: Settings, admission: Admission) -> None:
    """Wire the remove.bg door into an app: its router and its guard (on the app's one admission gate).

    Call in `create_app` right after the native guard (so CORS and request ids stay outside it) and before Gradio
    is mounted at / (the mount would shadow /v1.0).
    """
    app.include_router(router)
    app.add_middleware(DoorGuard, settings=settings, admission=admission, door=removebg_door(settings))
