"""The CLI door against THE options schema, driven by `RemovalOptions.model_fields`: every field has a flag that
delivers a valid value to the schema intact, and every value the schema refuses (out of bounds, not one of the
choices, not in the grammar) is refused by the CLI with exactly `parse_options`'s message and hint."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
from pydantic.fields import FieldInfo

from bgremove.cli import build_parser, main
from bgremove.cli_flags import SHORT_FLAGS, options_from_args
from bgremove.core.errors import InvalidOption
from bgremove.core.options import RemovalOptions, field_extra, input_type, parse_options

FIELDS: dict[str, FieldInfo] = dict(RemovalOptions.model_fields)
NOT_IN_ANY_GRAMMAR = "not-a-value!!"
# A valid value for fields with neither a default nor an example (any model name passes the schema; the
# model store checks it later, as at every door).
VALID_WITHOUT_EXAMPLE = {"model": "u2net"}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def kind(field: FieldInfo) -> Any:
    """What a user types for this field (text for the grammars that parse into typed values)."""
    annotation = input_type(field)
    args = [arg for arg in get_args(annotation) if arg is not type(None)]
    return args[0] if get_origin(annotation) is not Literal and len(args) == 1 else annotation


def bounds(field: FieldInfo) -> tuple[Any, Any]:
    low = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in field.metadata if hasattr(m, "le")), None)
    return low, high


def valid_cases() -> list[tuple[str, list[str]]]:
    """(field, argv for it): every Literal choice, both bounds, the example, else the default."""
    cases: list[tuple[str, list[str]]] = []
    for name, field in FIELDS.items():
        field_kind = kind(field)
        if field_kind is bool:
            cases.append((name, [f"--no-{flag(name)[2:]}" if field.default else flag(name)]))
        elif get_origin(field_kind) is Literal:
            cases += [(name, [f"{flag(name)}={choice}"]) for choice in get_args(field_kind)]
        elif field_kind in (int, float):
            accepted = [value for value in bounds(field) if value is not None and not schema_refuses(name, str(value))]
            assert accepted, f"{name}: neither bound is valid on its own"  # (a bound can clash with another default)
            cases += [(name, [f"{flag(name)}={value}"]) for value in accepted]
        else:
            value = field_extra(name).get("example") or VALID_WITHOUT_EXAMPLE.get(name) or field.default
            cases.append((name, [f"{flag(name)}={value}"]))
    return cases


def invalid_cases() -> list[tuple[str, str]]:
    """(field, raw value) the schema refuses: past each bound, no choice, outside the grammar."""
    cases: list[tuple[str, str]] = []
    for name, field in FIELDS.items():
        field_kind = kind(field)
        if field_kind is bool:
            continue  # a flag carries no value to refuse
        if field_kind in (int, float):
            low, high = bounds(field)
            cases += [(name, str(low - 1)), (name, str(high + 1)), (name, "abc")]
        elif schema_refuses(name, NOT_IN_ANY_GRAMMAR):
            cases.append((name, NOT_IN_ANY_GRAMMAR))
    return cases


def schema_refuses(name: str, value: str) -> bool:
    try:
        parse_options({name: value})
    except InvalidOption:
        return True
    return False


def parsed(argv: list[str]) -> RemovalOptions:
    return options_from_args(build_parser().parse_args(["remove", "in.png", "-o", "out", *argv]))


@pytest.mark.parametrize(("name", "argv"), valid_cases(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_every_field_reaches_the_schema(name: str, argv: list[str]) -> None:
    value = argv[0].split("=", 1)[1] if "=" in argv[0] else None
    expected = parse_options({name: value if value is not None else not FIELDS[name].default})
    options = parsed(argv)
    assert getattr(options, name) == getattr(expected, name)
    assert options == expected  # nothing else changed


def test_every_field_has_a_flag_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["remove", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name, field in FIELDS.items():
        assert flag(name) in help_text, name
        assert " ".join((field.description or "").split()).rstrip(".") in help_text, name
    assert "--quality 1-100" in help_text and "--format {png,jpg,webp,zip,auto}" in help_text


def test_defaults_come_from_the_schema() -> None:
    assert parsed([]) == RemovalOptions()


@pytest.mark.parametrize(("name", "value"), invalid_cases(), ids=lambda v: str(v))
def test_refusals_read_as_the_schema_words_them(name: str, value: str, cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InvalidOption) as refused:
        parse_options({name: value})

    code = main(["remove", "in.png", "-o", "out", f"{flag(name)}={value}"])

    assert code == 2
    assert capsys.readouterr().err == f"error: {refused.value.message} {refused.value.hint}\n"
    assert not (cli_env / "out").exists()


def test_every_bounded_choice_or_grammar_field_has_a_refusal() -> None:
    refused = {name for name, _ in invalid_cases()}
    free_text = {name for name in FIELDS if not schema_refuses(name, NOT_IN_ANY_GRAMMAR) and kind(FIELDS[name]) is str}
    booleans = {name for name, field in FIELDS.items() if kind(field) is bool}
    assert refused == set(FIELDS) - booleans - free_text
    assert free_text == {"model"}  # checked against the catalog when the model loads, not by the schema


def test_combination_refused_with_the_schema_hint(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InvalidOption) as refused:
        parse_options({"alpha_matting_foreground_threshold": "10", "alpha_matting_background_threshold": "10"})
    assert main(["remove", "in.png", "-o", "out", "-af", "10", "-ab", "10"]) == 2
    assert capsys.readouterr().err == f"error: {refused.value.message} {refused.value.hint}\n"


@pytest.mark.parametrize(("name", "short"), sorted(SHORT_FLAGS.items()))
def test_short_flags_are_aliases(name: str, short: str) -> None:
    field = FIELDS[name]
    if kind(field) is bool:
        assert parsed([short]) == parsed([flag(name)])
    else:
        value = {"model": "u2net", "bg_color": "ffffff"}.get(name) or str(field.default + 1)
        assert parsed([short, value]) == parsed([f"{flag(name)}={value}"]) != RemovalOptions()
