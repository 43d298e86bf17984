"""The removal flags of the CLI, generated from THE options schema, shared by `remove` and `jobs submit`.

One flag per `RemovalOptions` field: its help text the field's description, its choices and bounds the field's,
and the values a user typed validated by `parse_options`, so a refusal reads exactly as it does at every other
door. Its own module so that `cli` and `jobs_client` both use it without importing each other.
"""

from __future__ import annotations

import argparse
import types
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from bgremove.core.options import RemovalOptions

# Short flags from before the schema (rembg's CLI spelling), kept as aliases of the generated long flags.
SHORT_FLAGS: dict[str, str] = {
    "model": "-m",
    "alpha_matting": "-a",
    "alpha_matting_foreground_threshold": "-af",
    "alpha_matting_background_threshold": "-ab",
    "alpha_matting_erode_size": "-ae",
    "post_process_mask": "-ppm",
    "only_mask": "-om",
    "bg_color": "-bg",
}
GROUP_TITLES = {
    "basic": "removal options",
    "advanced": "advanced removal options",
    "api": "aliases kept for rembg-style scripts",
}


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RemovalOptions field, in the schema's order, grouped as the UI groups them.

    Values are collected as typed (strings; booleans as flags) under the field's name and only given flags
    are collected (default SUPPRESS), so the schema alone supplies defaults and validates (`options_from_args`).
    Choices and bounds are shown, not enforced here: argparse would refuse them in its own words.
    """
    from bgremove.core.options import RemovalOptions, field_extra

    groups: dict[str, Any] = {}
    for name, field in RemovalOptions.model_fields.items():
        group_name = str(field_extra(name).get("group", "advanced"))
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(GROUP_TITLES.get(group_name, f"{group_name} options"))
        flags = [SHORT_FLAGS[name]] if name in SHORT_FLAGS else []
        flags.append("--" + name.replace("_", "-"))
        groups[group_name].add_argument(
            *flags, dest=name, default=argparse.SUPPRESS, **_flag_spec(name, field, field_extra(name))
        )


def _flag_spec(name: str, field: FieldInfo, extra: dict[str, Any]) -> dict[str, Any]:
    """argparse keyword arguments for one schema field: action or metavar, and help text with default and bounds."""
    from bgremove.core.options import input_type

    kind = _plain_type(input_type(field))  # what a user types: text for the grammars (crop_margin, scale, ...)
    help_text = (field.description or "").rstrip(".") + "."
    example = extra.get("example")
    if example is not None:
        help_text += f" E.g. {example}."
    if kind is bool:
        if field.default:  # default on: the useful flag turns it off (--no-decontaminate), --decontaminate stays valid
            return {"action": argparse.BooleanOptionalAction, "help": _escape(help_text + " On by default.")}
        return {"action": "store_const", "const": True, "help": _escape(help_text)}
    if field.default is not None:
        help_text += f" Default: {field.default}."
    choices = get_args(kind) if get_origin(kind) is Literal else ()
    if choices:
        metavar = "{" + ",".join(map(str, choices)) + "}"
    elif kind in (int, float):
        low, high = _bounds(field)
        metavar = f"{low}-{high}" if low is not None and high is not None else ("N" if kind is int else "X")
    else:
        metavar = name.split("_")[-1].upper()
    return {"metavar": metavar, "help": _escape(help_text)}


def _plain_type(annotation: Any) -> Any:
    """`str | None` -> str; anything else as it is."""
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = [arg for arg in get_args(annotation) if arg is not type(None)]
        return kinds[0] if len(kinds) == 1 else str
    return annotation


def _bounds(field: FieldInfo) -> tuple[Any, Any]:
    low = high = None
    for item in field.metadata:
        low = getattr(item, "ge", getattr(item, "gt", low))
        high = getattr(item, "le", getattr(item, "lt", high))
    return low, high


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # argparse formats help with %


def options_from_args(args: argparse.Namespace) -> RemovalOptions:
    """The flags a user gave, validated by the schema (InvalidOption carries the message and hint every door shows)."""
    from bgremove.core.options import OPTION_NAMES, parse_options

    given = {name: getattr(args, name) for name in OPTION_NAMES if hasattr(args, name)}
    return parse_options(given)
