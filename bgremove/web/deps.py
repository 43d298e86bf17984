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

from fastapi import Depends, Form, Request

from bgremove.core.options import IMAGE_INPUTS, RemovalOptions, field_extra, parse_options
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from bgremove.core.warmup import WarmupState

# The removal endpoints' non-option fields: the image, its URL, the batch files and every image-valued input.
REQUEST_FIELDS = frozenset({"file", "files", "image_url", *IMAGE_INPUTS})
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
    # description: on the field itself; the rest is for the doors (labels, refusal hints, the UI's own words)
    for key in ("title", "description", "label", "group", "hint", "example", "ui_label", "ui_help", "ui_choices"):
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


removal_options = options_dependency()  # /api/remove and /api/remove/batch
Options = Annotated[RemovalOptions, Depends(removal_options)]
AppSettings = Annotated[Settings, Depends(get_settings)]
Cache = Annotated[SessionCache, Depends(get_cache)]
Warmup = Annotated[WarmupState, Depends(get_warmup)]
