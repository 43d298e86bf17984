"""THE options schema: text in, typed values held, canonical text out; tags drive the full-size rule."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bgremove.core.compose import output_size
from bgremove.core.errors import InvalidOption
from bgremove.core.options import (
    DEFAULTS,
    Length,
    Region,
    RemovalOptions,
    Sides,
    Tag,
    field_extra,
    in_effect,
    parse_options,
    tagged,
)
from bgremove.core.pipeline import working_size

TEXT_OPTIONS = {
    "crop_margin": "10px 5%",
    "scale": "80%",
    "position": "center",
    "roi": "10 0 190px 50%",
    "bg_color": "white",
}


def test_text_options_are_held_as_typed_values() -> None:
    options = parse_options(TEXT_OPTIONS)
    px, pc = Length(10, False), Length(5, True)
    assert options.crop_margin == Sides(px, pc, px, pc)
    assert options.scale == 0.8 and options.position == (0.5, 0.5)
    assert options.roi == Region(Length(10, False), Length(0, False), Length(190, False), Length(50, True))
    assert options.bg_color == (255, 255, 255, 255)
    assert (DEFAULTS.scale, DEFAULTS.position, DEFAULTS.bg_color) == (None, None, None)
    assert DEFAULTS.roi == Region(Length(0, True), Length(0, True), Length(100, True), Length(100, True))


def test_options_dump_as_canonical_text_and_read_back_the_same() -> None:
    options = parse_options(TEXT_OPTIONS, bg_color="0,0,255,128")
    dumped = options.model_dump()
    assert {name: dumped[name] for name in TEXT_OPTIONS} == {
        "crop_margin": "10px 5%",
        "scale": "80%",
        "position": "50% 50%",
        "roi": "10px 0 190px 50%",
        "bg_color": "0,0,255,128",
    }
    assert RemovalOptions.model_validate_json(options.model_dump_json()) == options
    assert parse_options(dumped) == options
    # the defaults dump as the documented defaults (what the OpenAPI form and the help text show)
    assert DEFAULTS.model_dump() == {name: info.default for name, info in RemovalOptions.model_fields.items()}


def test_a_row_stored_before_options_were_typed_reads_back() -> None:
    """The jobs store keeps options as JSON: rows written when the options were kept as the text sent."""
    old_row = json.dumps(
        {**DEFAULTS.model_dump(), "crop_margin": "20", "bg_color": "red", "only_mask": True, "channels": "alpha"}
    )
    options = RemovalOptions.model_validate_json(old_row)
    assert options.crop_margin == Sides(*[Length(20, False)] * 4) and options.bg_color == (255, 0, 0, 255)
    assert options.channels == "alpha"


def test_the_json_schema_shows_text_for_the_typed_options() -> None:
    for mode in ("validation", "serialization"):
        properties = RemovalOptions.model_json_schema(mode=mode)["properties"]
        for name in ("crop_margin", "scale", "position", "roi"):
            assert (
                properties[name]["type"] == "string" and properties[name]["default"] == RemovalOptions.model_fields[name].default
            )
        assert properties["bg_color"]["anyOf"] == [{"type": "string"}, {"type": "null"}]


@pytest.mark.parametrize(("name", "value"), [("crop_margin", 5), ("scale", None), ("roi", ["0", "0", "1", "1"])])
def test_text_options_refuse_other_types_in_the_schemas_words(name: str, value: Any) -> None:
    with pytest.raises(InvalidOption, match=rf"^{name}=.* is not valid: input should be a valid string\.") as refused:
        parse_options({name: value})
    assert refused.value.hint == field_extra(name)["hint"]


def test_bg_color_takes_3_4_6_or_8_hex_digits_as_its_help_says() -> None:
    assert "3, 4, 6 or 8 digits" in (RemovalOptions.model_fields["bg_color"].description or "")
    values = {digits: parse_options(bg_color=digits).bg_color for digits in ("f00", "f008", "ff0000", "ff000080")}
    assert values == {"f00": (255, 0, 0, 255), "f008": (255, 0, 0, 136), "ff0000": (255, 0, 0, 255), "ff000080": (255, 0, 0, 128)}


def test_only_mask_is_resolved_to_channels_alpha_when_validated() -> None:
    options = parse_options(only_mask="true")
    assert options.channels == "alpha"
    assert RemovalOptions.model_validate_json(options.model_dump_json()).channels == "alpha"
    assert parse_options(only_mask="false").channels == "rgba"


# --- tags ---------------------------------------------------------------------------------------------------

FULL = (4000, 3000)
# A value that puts each text option in effect (a bool option is in effect when switched on).
IN_EFFECT = {"crop_margin": "20px", "scale": "80%", "position": "50% 100%", "roi": "10 0 190 120"}
# Values that change an untagged option (each must leave the work at the output size).
UNTAGGED = {
    "model": "u2net",
    "format": "jpg",
    "quality": "50",
    "channels": "alpha",
    "bg_color": "red",
    "add_shadow": "true",
    "decontaminate": "false",
    "alpha_matting_foreground_threshold": "200",
    "alpha_matting_background_threshold": "20",
    "alpha_matting_erode_size": "20",
    "only_mask": "true",
}


def in_effect_value(name: str) -> Any:
    return True if RemovalOptions.model_fields[name].annotation is bool else IN_EFFECT[name]


@pytest.mark.parametrize("name", tagged(Tag.CHANGES_GEOMETRY, Tag.MEASURED_IN_INPUT_PIXELS))
def test_every_tagged_option_in_effect_keeps_the_work_at_full_size(name: str) -> None:
    options = parse_options({"size": "preview", name: in_effect_value(name)})
    assert in_effect(options, name)
    assert working_size(*FULL, options) == FULL


def test_the_tags_cover_the_options_that_need_the_full_size() -> None:
    assert set(tagged(Tag.CHANGES_GEOMETRY)) == {"crop", "scale", "position"}
    assert set(tagged(Tag.MEASURED_IN_INPUT_PIXELS)) == {"crop_margin", "roi", "post_process_mask", "alpha_matting"}


@pytest.mark.parametrize("name", [name for name in RemovalOptions.model_fields if name not in ("size", *tagged(*Tag))])
def test_an_untagged_option_leaves_the_work_at_the_output_size(name: str) -> None:
    options = parse_options({"size": "preview", name: UNTAGGED[name]})
    assert getattr(options, name) != getattr(DEFAULTS, name)
    assert working_size(*FULL, options) == output_size(*FULL, "preview") != FULL


@pytest.mark.parametrize(("name", "value"), [("roi", "10% 0% 90% 100%"), ("crop_margin", "10%"), ("roi", "0 0 100% 100%")])
def test_a_length_option_in_percent_works_at_any_size(name: str, value: str) -> None:
    options = parse_options({"size": "preview", name: value})
    assert not in_effect(options, name)
    assert working_size(*FULL, options) == output_size(*FULL, "preview")
