"""remove.bg's vocabulary and shapes: its parameter names and defaults, its answer and error bodies, and the
OpenAPI description of its endpoints. The door (`web.removebg`) translates between these and THE options schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from bgremove.core.options import IMAGE_INPUTS, RemovalOptions
from bgremove.web.deps import option_schema

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
# Every image-valued input N of the schema comes as a file `N_file` or a URL `N_url`, as remove.bg names its
# background (bg_image_file, bg_image_url); its bytes reach the pipeline as the keyword N.
INPUT_FILES = {f"{name}_file": name for name in IMAGE_INPUTS}
INPUT_URLS = {f"{name}_url": name for name in IMAGE_INPUTS}
BACKGROUND_SOURCES = ("bg_color", "bg_image_url", "bg_image_file")
FILE_FIELDS = frozenset({"image_file", *INPUT_FILES})
REMOVEBG_ONLY = frozenset(
    {"size", "type", "type_level", "semitransparency", "image_file_b64", "image_url", "image_file", *INPUT_FILES, *INPUT_URLS}
)
# remove.bg's codes for a URL that was refused or failed, by field; other inputs follow the same pattern.
URL_CODES = {
    "image_url": ("invalid_image_url", "failed_image_download"),
    "bg_image_url": ("invalid_bg_image_url", "failed_bg_download"),
} | {field: (f"invalid_{field}", f"failed_{name}_download") for field, name in INPUT_URLS.items() if name != "bg_image"}
PASSTHROUGH = frozenset(RemovalOptions.model_fields) - {"size"}  # same name, same meaning: straight to the schema
UNLIMITED = 1_000_000  # /account: calls cost nothing here, so a client that checks its balance always has enough

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
        **{
            f"{name}_url": {"type": "string", "description": f"{spec.description} Its URL (same rules as image_url)."}
            for name, spec in IMAGE_INPUTS.items()
        },
        **{
            f"{name}_file": {"type": "string", "format": "binary", "description": f"{spec.description} (multipart only)."}
            for name, spec in IMAGE_INPUTS.items()
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


ACCOUNT = Account(
    data=AccountData(
        attributes=AccountAttributes(
            credits=Credits(total=UNLIMITED, subscription=0, payg=0, enterprise=UNLIMITED),
            api=ApiAllowance(free_calls=UNLIMITED, sizes="all"),
        )
    )
)
