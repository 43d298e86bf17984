"""What a handler needs, as FastAPI dependencies: settings, the session cache, and the removal options.

Settings and the cache live on `app.state` (set by `create_app`); tests pass their own settings to
`create_app(settings)` or replace a dependency with `app.dependency_overrides[get_settings] = ...`.

The removal-options dependency is generated from `RemovalOptions.model_fields`: one optional form field per
option, documented in OpenAPI with the field's description, default, choices and bounds, and the collected
values are validated by `parse_options`, so a refusal reads exactly as at every other door. Adding a field to
the schema adds it here with no edit.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, File, Form, Request, UploadFile

from bgremove.core.errors import ImageTooLarge
from bgremove.core.options import IMAGE_INPUTS, ImageInput, RemovalOptions, field_extra, parse_options
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from bgremove.core.warmup import WarmupState

REQUEST_FIELDS = frozenset({"file", "files", "image_url", *IMAGE_INPUTS})  # the removal endpoints' non-option fields
_PROPERTIES: dict[str, Any] = RemovalOptions.model_json_schema()["properties"]  # each option's JSON schema


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_cache(request: Request) -> SessionCache:
    cache: SessionCache = request.app.state.cache
    return cache


async def get_warmup(request: Request) -> WarmupState:
    """This app's start-up progress (each app warms its own cache)."""
    warmup: WarmupState = request.app.state.warmup
    return warmup


def option_schema(name: str) -> dict[str, Any]:
    """The OpenAPI schema of one option's form field: the schema's own (type, enum, bounds, default), nulls dropped."""
    schema = dict(_PROPERTIES[name])
    variants = [part for part in schema.pop("anyOf", []) if part.get("type") != "null"]
    if len(variants) == 1:
        schema.update(variants[0])
    for key in ("title", "description", "label", "group", "hint", "example"):  # description: on the field itself
        schema.pop(key, None)
    if example := field_extra(name).get("example"):
        schema["examples"] = [example]
    return schema


def _form_parameter(name: str) -> inspect.Parameter:
    """One option as an optional text form field. FastAPI does not validate it (any text passes as `str`), so
    every value reaches `parse_options` and is refused there with the schema's message and hint."""
    form = Form(description=RemovalOptions.model_fields[name].description, json_schema_extra=option_schema(name))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[str, form])


def sent(values: Mapping[str, str | None]) -> dict[str, str]:
    """The fields the client sent (FastAPI reports an absent or empty form field as None): the schema gives the rest."""
    return {name: value for name, value in values.items() if value is not None}


def options_dependency(request_fields: frozenset[str] = REQUEST_FIELDS) -> Callable[..., Awaitable[RemovalOptions]]:
    """A dependency reading every option from the form; `request_fields` are the endpoint's other form fields.

    A form field that is neither is refused too ("Unknown option 'bg_colour'"), so a typo is not silently
    ignored. The form was already parsed by FastAPI; `request.form()` returns that copy.
    """

    async def options(request: Request, **values: str | None) -> RemovalOptions:
        raw = sent(values)
        form = await request.form()
        raw |= {name: str(form[name]) for name in form if name not in RemovalOptions.model_fields and name not in request_fields}
        return parse_options(raw)

    # FastAPI reads a dependency's parameters from its signature: the request, then one form field per schema field.
    options.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
            *(_form_parameter(name) for name in RemovalOptions.model_fields),
        ],
        return_annotation=RemovalOptions,
    )
    return options


def image_inputs_dependency(specs: list[ImageInput]) -> Callable[..., Awaitable[dict[str, bytes]]]:
    """A dependency reading the image inputs `specs` as optional file fields: name -> bytes of those sent, each
    under MAX_IMAGE_SIZE_MB. The core checks what they contain (`remove_background(..., name=bytes)`)."""

    async def images(request: Request, **uploads: UploadFile | None) -> dict[str, bytes]:
        settings: Settings = request.app.state.settings
        sent: dict[str, bytes] = {}
        for name, upload in uploads.items():
            if upload is None:
                continue
            data = await upload.read(settings.max_image_bytes + 1)
            if len(data) > settings.max_image_bytes:
                raise ImageTooLarge(
                    f"{name} is larger than the limit of {settings.max_image_size_mb:g} MB.",
                    hint=f"Send a smaller {name} or raise MAX_IMAGE_SIZE_MB.",
                )
            sent[name] = data
        return sent

    images.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
            *(
                inspect.Parameter(
                    spec.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=None,
                    annotation=Annotated[UploadFile | None, File(description=spec.description)],
                )
                for spec in specs
            ),
        ],
        return_annotation=dict[str, bytes],
    )
    return images


# One photo's own image inputs (touch-up hints): /api/remove and a one-photo job take them, a batch cannot share them.
photo_images = image_inputs_dependency([spec for spec in IMAGE_INPUTS.values() if spec.per_photo])
PhotoImages = Annotated[dict[str, bytes], Depends(photo_images)]
removal_options = options_dependency()  # /api/remove and /api/remove/batch
Options = Annotated[RemovalOptions, Depends(removal_options)]
AppSettings = Annotated[Settings, Depends(get_settings)]
Cache = Annotated[SessionCache, Depends(get_cache)]
Warmup = Annotated[WarmupState, Depends(get_warmup)]
