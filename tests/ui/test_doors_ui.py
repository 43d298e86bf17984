"""The Gradio door is driven by the options schema: walk `RemovalOptions.model_fields` and prove that

(a) the UI builds a control for every non-api field, on both tabs, with the schema's label, bounds, choices and
    default (and that a new field gets a control and an API parameter with no edit in the web layer);
(b) gradio_client's /remove takes every field as a keyword argument and refuses a bad value with parse_options's
    message and hint; /remove_batch has the same parameters.
"""

from __future__ import annotations

import io
import typing
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import gradio as gr
import pytest
from gradio.components import Component
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from bgremove.core.errors import InvalidOption
from bgremove.core.options import IMAGE_INPUTS, RemovalOptions, field_extra, option, parse_margin, parse_options, parse_roi
from bgremove.core.sessions import SessionCache
from bgremove.core.store import resolve_name
from bgremove.web import ui_controls
from bgremove.web.ui import build_ui
from bgremove.web.ui_api import LEGACY_ORDER, api_fields, remove_endpoint
from bgremove.web.ui_controls import BOX_SIDES, ControlContext, ControlSet, option_fields
from tests.ui.conftest import LiveUi, write_photo

FIELDS = RemovalOptions.model_fields
UI_FIELDS = [name for name in FIELDS if field_extra(name)["group"] != "api"]


def bounds(name: str) -> tuple[float | None, float | None]:
    metadata = FIELDS[name].metadata
    low = next((float(m.ge) for m in metadata if hasattr(m, "ge")), None)
    high = next((float(m.le) for m in metadata if hasattr(m, "le")), None)
    return low, high


def elem(demo: gr.Blocks, elem_id: str) -> Component:
    found = [block for block in demo.blocks.values() if getattr(block, "elem_id", None) == elem_id]
    assert len(found) == 1, f"{elem_id}: {len(found)} components"
    component = found[0]
    assert isinstance(component, Component)
    return component


# --- (a) the UI ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> gr.Blocks:
    from tests.ui.conftest import ui_settings

    settings = ui_settings(tmp_path_factory.mktemp("doors"), tiny_model)
    return build_ui(settings, SessionCache(settings))


@pytest.mark.parametrize("tab", ["single", "batch"])
@pytest.mark.parametrize("name", UI_FIELDS)
def test_every_ui_field_has_a_control_with_the_schemas_label_bounds_choices_and_default(
    demo: gr.Blocks, tab: str, name: str
) -> None:
    info = FIELDS[name]
    extra = field_extra(name)
    if name in BOX_SIDES:  # four numbers and a unit that spell the default
        numbers = [elem(demo, f"{tab}-{name.replace('_', '-')}-{side.lower()}") for side in BOX_SIDES[name]]
        unit = elem(demo, f"{tab}-{name.replace('_', '-')}-unit").value
        spelled = " ".join(f"{number.value:g}{unit}" for number in numbers)
        parse = {"crop_margin": parse_margin, "roi": parse_roi}[name]
        assert parse(spelled) == parse(info.default), spelled
        return
    # bg_color's label and help are on its transparent / white / colour / image choice
    control = elem(demo, f"{tab}-{'bg-mode' if name == 'bg_color' else name.replace('_', '-')}")
    assert control.label == (extra.get("ui_label") or extra["label"])  # a person's words where the API's differ
    assert control.info == (extra.get("ui_help") or info.description)
    annotation = info.annotation
    if name in ("scale", "position"):  # a switch (off: original) and sliders that wait for it
        assert isinstance(control, gr.Checkbox) and control.value is False and info.default == "original"
        return
    if name == "model":  # a dropdown of the catalog; the default (None) means the server's model
        assert isinstance(control, gr.Dropdown) and info.default is None
        assert control.value in [value for _, value in control.choices]
        return
    if name == "bg_color":  # a colour picker behind the transparent / white / colour / image choice
        assert control.value == ("transparent" if info.default is None else "colour")
        assert isinstance(elem(demo, f"{tab}-bg-color"), gr.ColorPicker)
        return
    if annotation is bool:
        assert isinstance(control, gr.Checkbox) and control.value is info.default
    elif typing.get_origin(annotation) is Literal:
        assert isinstance(control, gr.Dropdown | gr.Radio)
        assert [value for _, value in control.choices] == list(typing.get_args(annotation))
        labels = extra.get("ui_choices") or {}
        assert [label for label, _ in control.choices] == [labels.get(v, v) for v in typing.get_args(annotation)]
        assert control.value == info.default
    elif annotation is int:
        assert isinstance(control, gr.Slider)
        assert (control.minimum, control.maximum, control.step) == (*bounds(name), 1)
        assert control.value == info.default
    else:
        assert isinstance(control, gr.Textbox) and control.value == (info.default or "")
        assert control.placeholder == (field_extra(name).get("example") or "")


def test_api_only_fields_have_no_ui_control(demo: gr.Blocks) -> None:
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    for name in set(FIELDS) - set(UI_FIELDS):
        assert f"single-{name.replace('_', '-')}" not in ids and f"batch-{name.replace('_', '-')}" not in ids


def test_controls_left_at_their_defaults_give_the_schemas_defaults(ui_cache: SessionCache) -> None:
    with gr.Blocks():
        controls = ControlSet.build(ControlContext("d", [("tiny", ui_cache.settings.model_name)], ui_cache.settings.model_name))
    options, bg_image = controls.read([component.value for component in controls.inputs])
    assert options == RemovalOptions(model=ui_cache.settings.model_name) and bg_image is None


def test_sliders_that_depend_on_a_flag_start_inactive(demo: gr.Blocks) -> None:
    for tab in ("single", "batch"):
        for name in (
            "alpha_matting_foreground_threshold",
            "alpha_matting_background_threshold",
            "alpha_matting_erode_size",
            "crop_margin_top",
            "crop_margin_unit",
        ):
            assert elem(demo, f"{tab}-{name.replace('_', '-')}").interactive is False, name
        assert elem(demo, f"{tab}-alpha-matting").interactive is not False


class Extended(RemovalOptions):
    """The schema with one more option, as the next issue will add one."""

    sharpen: int = option(3, label="Sharpen", group="advanced", ge=0, le=9, description="Sharpen the edge (0-9).")


def test_a_new_schema_field_gets_a_control_and_an_api_parameter_without_a_web_edit(
    monkeypatch: pytest.MonkeyPatch, ui_cache: SessionCache
) -> None:
    monkeypatch.setattr(ui_controls, "RemovalOptions", Extended)
    assert "sharpen" in [spec.name for spec in option_fields()]
    with gr.Blocks():
        controls = ControlSet.build(ControlContext("x", [("tiny", ui_cache.settings.model_name)], ui_cache.settings.model_name))
    slider = controls.controls["sharpen"].main
    assert isinstance(slider, gr.Slider) and (slider.minimum, slider.maximum, slider.value) == (0, 9, 3)
    assert slider.label == "Sharpen" and slider.info == "Sharpen the edge (0-9)."
    endpoint = remove_endpoint(ui_cache.settings, ui_cache)
    parameter = endpoint.__signature__.parameters["sharpen"]  # type: ignore[attr-defined]
    assert (parameter.default, parameter.annotation) == (3, int)
    assert "    sharpen: Sharpen the edge (0-9)." in (endpoint.__doc__ or "")


# --- (b) gradio_client --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(live_ui: LiveUi) -> Iterator[Client]:
    yield Client(live_ui.url, verbose=False)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_photo(tmp_path_factory.mktemp("doors-photo") / "box.png"))


def _parses(values: dict[str, Any]) -> bool:
    try:
        parse_options(values)
    except InvalidOption:
        return False
    return True


def accepted_value(name: str, model: str) -> Any:
    """A value other than the default that parse_options accepts for this field alone."""
    info = FIELDS[name]
    if name == "model":
        return model
    candidates: list[Any]
    if info.annotation is bool:
        candidates = [not info.default]
    elif typing.get_origin(info.annotation) is Literal:
        candidates = list(typing.get_args(info.annotation))
    elif info.annotation is int:
        low, high = bounds(name)
        candidates = [int(v) for v in (high, low, ((low or 0) + (high or 0)) // 2) if v is not None]
    else:
        candidates = [field_extra(name).get("example")]
    for value in candidates:
        if value is not None and value != info.default and _parses({name: value}):
            return value
    raise AssertionError(f"no accepted non-default value for {name}")


def refused_value(name: str) -> Any:
    """A value parse_options refuses for this field alone, or None (model: any name parses; the store refuses it)."""
    _, high = bounds(name)
    candidates = ["maybe", "huge", "80%", "0%", "1 2", "notacolour", "nope"]
    if high is not None:
        candidates.insert(0, int(high) + 1)
    return next((v for v in candidates if not _parses({name: v})), None)


REFUSABLE = [name for name in FIELDS if refused_value(name) is not None]


def test_the_endpoints_take_image_then_every_field_by_name_old_ones_first(client: Client) -> None:
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {"/remove", "/remove_batch"} and api["unnamed_endpoints"] == {}
    names = [p["parameter_name"] for p in api["named_endpoints"]["/remove"]["parameters"]]
    images = list(IMAGE_INPUTS)  # bg_image first (positional clients), then one photo's own (touch-up hints)
    assert names == ["image", *LEGACY_ORDER, *[n for n in FIELDS if n not in LEGACY_ORDER], *images]
    assert images[0] == "bg_image" and {"keep_mask", "remove_mask"} <= set(images)
    options = names[1 : 1 + len(FIELDS)]
    assert sorted(options) == sorted(FIELDS)
    batch = [p["parameter_name"] for p in api["named_endpoints"]["/remove_batch"]["parameters"]]
    assert batch == ["files", *options, *[n for n in images if not IMAGE_INPUTS[n].per_photo]]
    for parameter in api["named_endpoints"]["/remove"]["parameters"][1 : 1 + len(FIELDS)]:
        default = FIELDS[parameter["parameter_name"]].default
        assert parameter["parameter_has_default"] and parameter["parameter_default"] == ("" if default is None else default)
    assert [f.name for f in api_fields()] == options


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FIELDS))
def test_remove_accepts_every_field_as_a_keyword(client: Client, photo: str, live_ui: LiveUi, name: str) -> None:
    value = accepted_value(name, live_ui.settings.model_name)
    output = client.predict(handle_file(photo), **{name: value}, api_name="/remove")
    assert Path(output).name.startswith("box-nobg.")
    if name == "format":
        assert Path(output).suffix == f".{value}" or value == "auto"


def test_every_field_but_model_has_a_value_the_schema_refuses() -> None:
    assert set(FIELDS) - set(REFUSABLE) == {"model"}


@pytest.mark.parametrize("name", REFUSABLE)
def test_remove_refuses_a_bad_value_with_the_schemas_message(client: Client, photo: str, name: str) -> None:
    value = refused_value(name)
    with pytest.raises(InvalidOption) as expected:
        parse_options({name: value})
    with pytest.raises(AppError) as refused:
        client.predict(handle_file(photo), **{name: value}, api_name="/remove")
    assert str(refused.value) == f"{expected.value.message} {expected.value.hint}".strip()


def test_remove_refuses_an_unknown_model_as_the_store_does(client: Client, photo: str, live_ui: LiveUi) -> None:
    with pytest.raises(InvalidOption) as expected:
        resolve_name("no-such-model", live_ui.settings)
    with pytest.raises(AppError) as refused:
        client.predict(handle_file(photo), model="no-such-model", api_name="/remove")
    assert str(refused.value) == f"{expected.value.message} {expected.value.hint}"


def test_remove_batch_refuses_a_bad_value_with_the_same_message(client: Client, photo: str) -> None:
    with pytest.raises(AppError, match=r"^crop_margin='80%' is not valid: .*\. Use e\.g\. 20px"):
        client.predict([handle_file(photo)], crop_margin="80%", api_name="/remove_batch")


def test_remove_batch_takes_the_options(client: Client, photo: str) -> None:
    zip_path, manifest = client.predict(
        [handle_file(photo)], format="jpg", crop=True, bg_color="ffffff", api_name="/remove_batch"
    )
    item = manifest["items"][0]
    assert (item["status"], item["output"], item["format"]) == ("completed", "box.jpg", "jpg")
    with zipfile.ZipFile(zip_path) as archive:
        image = Image.open(io.BytesIO(archive.read("box.jpg")))
    assert image.format == "JPEG" and image.size == (item["width"], item["height"]) and image.width < 320  # cropped


def test_the_uis_own_words_stay_out_of_the_rest_form_schema() -> None:
    from bgremove.web.deps import option_schema

    worded = [name for name in FIELDS if {"ui_label", "ui_help", "ui_choices"} & set(field_extra(name))]
    assert worded  # the schema does carry UI wording...
    for name in worded:
        assert not {"ui_label", "ui_help", "ui_choices"} & set(option_schema(name)), name  # ...for the browser only
