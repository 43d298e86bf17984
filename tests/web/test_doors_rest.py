"""The REST door against THE schema (issues 12.1 and 13): walked from `RemovalOptions.model_fields`, so a new
field is covered with no edit here. For every field, REST accepts what `parse_options` accepts and refuses what
it refuses, with exactly its message and hint, on both removal endpoints; OpenAPI documents every field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, get_args, get_origin

import annotated_types
import pytest
from fastapi.testclient import TestClient

from bgremove.core.errors import InvalidOption
from bgremove.core.options import RemovalOptions, field_extra, parse_options
from bgremove.web.app import create_app
from tests.conftest import encode, square_photo, zip_of
from tests.web.conftest import SettingsFactory, running

FIELDS = RemovalOptions.model_fields
PHOTO = encode(square_photo((64, 48)), "PNG")
ENDPOINTS = ("/api/remove", "/api/remove/batch")


def choices(name: str) -> tuple[Any, ...]:
    annotation = FIELDS[name].annotation
    return get_args(annotation) if get_origin(annotation) is Literal else ()


def bounds(name: str) -> tuple[float | None, float | None]:
    low = high = None
    for rule in FIELDS[name].metadata:
        if isinstance(rule, annotated_types.Ge):
            low = float(rule.ge)  # type: ignore[arg-type]
        elif isinstance(rule, annotated_types.Le):
            high = float(rule.le)  # type: ignore[arg-type]
    return low, high


def form_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def good_values(name: str) -> list[str]:
    """Values a person would send: the default, the example, every choice, both booleans, the bounds."""
    field = FIELDS[name]
    values = [form_text(field.default)] if field.default is not None else [""]  # "" = not given: the default
    values += [form_text(choice) for choice in choices(name)]
    if field.annotation is bool:
        values += ["true", "false"]
    values += [form_text(limit) for limit in bounds(name) if limit is not None]
    if example := field_extra(name).get("example"):
        values.append(example)
    return list(dict.fromkeys(values))


def bad_values(name: str) -> list[str]:
    """Values each kind of field must refuse: outside the choices, not a boolean, past a bound, bad grammar."""
    values = []
    if choices(name):
        values += ["not-a-choice", "huge"]
    if FIELDS[name].annotation is bool:
        values += ["maybe"]
    low, high = bounds(name)
    if low is not None:
        values += [form_text(low - 1), "not-a-number"]
    if high is not None:
        values += [form_text(high + 1)]
    if field_extra(name).get("example"):  # a text field with a grammar (margins, scale, position, roi, colour)
        values += ["???", "999%", "1 2 3"]
    return values


def schema_verdict(name: str, value: str) -> InvalidOption | None:
    try:
        parse_options({name: value} if value else {})
    except InvalidOption as exc:
        return exc
    return None


def cases() -> Iterator[tuple[str, str]]:
    for name in FIELDS:
        for value in good_values(name) + bad_values(name):
            yield name, value


@pytest.fixture(scope="module")
def rest(module_settings: SettingsFactory) -> Iterator[TestClient]:
    with running(create_app(module_settings(), ui=False)) as client:
        yield client


def post(client: TestClient, endpoint: str, fields: dict[str, str]) -> Any:
    if endpoint == "/api/remove":
        return client.post(endpoint, files={"file": ("p.png", PHOTO)}, data=fields)
    return client.post(endpoint, files={"files": ("p.zip", zip_of({"p.png": PHOTO}))}, data=fields)


def test_every_field_has_values_to_accept_and_every_constrained_field_has_values_to_refuse() -> None:
    for name in FIELDS:
        accepted = [value for value in good_values(name) if schema_verdict(name, value) is None]
        assert accepted, f"{name}: no value the schema accepts"
        constrained = choices(name) or FIELDS[name].annotation is bool or any(bounds(name)) or field_extra(name).get("example")
        if constrained:
            assert any(schema_verdict(name, value) for value in bad_values(name)), f"{name}: nothing refused"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
# A model name is the server's to check (catalog or REMBG_MODEL_NAME), not the schema's: tested separately below.
@pytest.mark.parametrize(("name", "value"), [(name, value) for name, value in cases() if not (name == "model" and value)])
def test_rest_agrees_with_the_schema(rest: TestClient, endpoint: str, name: str, value: str) -> None:
    refused = schema_verdict(name, value)
    response = post(rest, endpoint, {name: value} if value else {})
    if refused is None:
        assert response.status_code == 200, (name, value, response.text)
    else:
        assert response.status_code == 422, (name, value, response.status_code)
        assert response.json() == {"detail": refused.message, "hint": refused.hint}


@pytest.mark.parametrize(
    ("name", "value"), [("size", "huge"), ("crop_margin", "80%"), ("bg_color", "notacolour"), ("scale", "0%")]
)
def test_issue_13s_bad_values_get_the_schemas_words(rest: TestClient, name: str, value: str) -> None:
    refused = schema_verdict(name, value)
    assert refused is not None and refused.hint == field_extra(name)["hint"]
    for endpoint in ENDPOINTS:
        response = post(rest, endpoint, {name: value})
        assert response.status_code == 422 and response.json() == {"detail": refused.message, "hint": refused.hint}


def test_cross_field_rules_and_unknown_fields_are_the_schemas_too(rest: TestClient) -> None:
    for fields in (
        {"alpha_matting_foreground_threshold": "20", "alpha_matting_background_threshold": "30"},
        {"bg_colour": "white"},
    ):
        with pytest.raises(InvalidOption) as refused:
            parse_options(fields)
        response = post(rest, "/api/remove", fields)
        assert response.status_code == 422
        assert response.json() == {"detail": refused.value.message, "hint": refused.value.hint}


def test_model_names_the_server_has_are_accepted(rest: TestClient, module_settings: SettingsFactory) -> None:
    response = post(rest, "/api/remove", {"model": module_settings().model_name})
    assert response.status_code == 200 and response.headers["x-model"] == "tiny-u2net.onnx"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_openapi_documents_every_field_with_its_description_choices_bounds_and_default(rest: TestClient, endpoint: str) -> None:
    spec = rest.get("/openapi.json").json()
    reference = spec["paths"][endpoint]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    properties = spec["components"]["schemas"][reference.rsplit("/", 1)[1]]["properties"]
    for name, field in FIELDS.items():
        documented = properties[name]
        assert documented["description"] == field.description
        if choices(name):
            assert documented["enum"] == list(choices(name))
        low, high = bounds(name)
        assert documented.get("minimum") == low and documented.get("maximum") == high
        if field.default is not None:
            assert documented["default"] == field.default
        if example := field_extra(name).get("example"):
            assert documented["examples"] == [example]
