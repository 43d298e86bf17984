"""Gradio controls generated from THE options schema (`RemovalOptions`): one control per field, no list to keep.

Each field's type picks the widget (bool -> Checkbox, Literal -> Dropdown, bounded int -> Slider, str -> Textbox),
and its label, help text, default, bounds and choices come from the schema (its `ui_label`, `ui_help` and
`ui_choices` where the API's words are not a person's). `group` places it: "basic" right under the result,
"advanced" under "More options", "api" nowhere (aliases such as only_mask).
A few fields deserve a nicer widget than a text box for their grammar (a margin is four numbers and a unit, a scale
is a slider): they are in `WIDGETS`, one line each, and still read label/choices/default from the schema. A field named `<flag>_<something>` next to a bool field `<flag>` (alpha_matting_erode_size,
crop_margin) is greyed out while its flag is off. Adding a field to the schema adds its control here, untouched.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Literal

import annotated_types
import gradio as gr
from gradio.components import Component

from bgremove.core.options import RemovalOptions, input_type, parse_options

Kind = Literal["bool", "choice", "int", "float", "text"]
BG_MODES = (("Transparent", "transparent"), ("White", "white"), ("Colour", "colour"), ("Image", "image"))
WHITE = "#ffffff"
# Colours offered as one-click named swatches next to the picker (the picker still takes any colour).
SWATCHES = {
    "black": "#000000",
    "light-grey": "#eeeeee",
    "cream": "#f5f0e6",
    "sky": "#81d4fa",
    "mint": "#b9f6ca",
    "pink": "#f8bbd0",
}
PRIVATE: dict[str, Any] = {"api_visibility": "private", "queue": False}


@dataclass(frozen=True)
class OptionField:
    """One schema field, as the doors need it."""

    name: str
    kind: Kind
    default: Any
    label: str  # what a person reads (the schema's ui_label, else its label)
    description: str  # the API's description (gradio_client docs, MCP)
    group: str
    annotation: Any
    example: str | None = None
    choices: tuple[Any, ...] = ()
    choice_labels: dict[str, str] = field(default_factory=dict)
    help: str = ""  # the UI's help line (the schema's ui_help, else the description)
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False  # None is a valid value (the model default, no background)


def option_fields() -> list[OptionField]:
    """Every field of `RemovalOptions`, in schema order, with its widget-relevant facts."""
    fields = []
    for name, info in RemovalOptions.model_fields.items():
        annotation, optional = _strip_none(input_type(info))  # what a widget sends: text for the grammars
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        minimum = maximum = None
        for bound in info.metadata:
            if isinstance(bound, annotated_types.Ge | annotated_types.Gt):
                minimum = _number(bound.ge if isinstance(bound, annotated_types.Ge) else bound.gt)
            if isinstance(bound, annotated_types.Le | annotated_types.Lt):
                maximum = _number(bound.le if isinstance(bound, annotated_types.Le) else bound.lt)
        fields.append(
            OptionField(
                name=name,
                kind=_kind(annotation),
                default=info.default,
                label=str(extra.get("ui_label") or extra.get("label", name)),
                description=info.description or "",
                help=str(extra.get("ui_help") or info.description or ""),
                choice_labels=_labels(extra.get("ui_choices")),
                group=str(extra.get("group", "advanced")),
                annotation=annotation,
                example=str(extra["example"]) if extra.get("example") is not None else None,
                choices=typing.get_args(annotation) if _kind(annotation) == "choice" else (),
                minimum=minimum,
                maximum=maximum,
                optional=optional,
            )
        )
    return fields


def _labels(value: Any) -> dict[str, str]:
    return {str(key): str(label) for key, label in value.items()} if isinstance(value, dict) else {}


def _number(value: Any) -> float:
    return float(value)


def _strip_none(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if type(None) in args and typing.get_origin(annotation) is not Literal:
        rest = tuple(arg for arg in args if arg is not type(None))
        return (rest[0] if len(rest) == 1 else typing.Union[rest]), True  # noqa: UP007 (a runtime Union of types)
    return annotation, False


def _kind(annotation: Any) -> Kind:
    if annotation is bool:
        return "bool"
    if typing.get_origin(annotation) is Literal:
        return "choice"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    return "text"


def dependents(fields: Sequence[OptionField]) -> dict[str, list[str]]:
    """bool field -> the fields named `<it>_...` that only matter while it is on (alpha_matting -> its three sliders)."""
    flags = {f.name for f in fields if f.kind == "bool"}
    return {
        flag: [f.name for f in fields if f.name.startswith(flag + "_")]
        for flag in flags
        if any(f.name.startswith(flag + "_") for f in fields)
    }


# --- one control ---------------------------------------------------------------------------------------------


@dataclass
class OptionControl:
    """The component(s) of one field. `main` holds the field's value; `read` turns the components' values
    (in `components` order) into option values (and, for the background, the `BG_IMAGE` upload)."""

    spec: OptionField
    main: Component
    components: list[Component]
    read: Callable[[list[Any]], dict[str, Any]]
    extras: dict[str, Component] = field(default_factory=dict)  # display-only parts (the model's info line)


BG_IMAGE = "bg_image"  # not a schema field: the pipeline takes the image's bytes beside the options


@dataclass(frozen=True)
class ControlContext:
    """What a widget needs beyond the schema: the elem_id prefix (one per tab) and the model dropdown's choices."""

    prefix: str
    model_choices: list[tuple[str, str]]
    default_model: str
    model_info: Callable[[str | None], str] = lambda _name: ""

    def elem_id(self, name: str) -> str:
        return f"{self.prefix}-{name.replace('_', '-')}"


def generic_control(spec: OptionField, ctx: ControlContext) -> OptionControl:
    """The widget a field's type asks for, labelled and bounded by the schema."""
    common: dict[str, Any] = {"label": spec.label, "info": spec.help, "elem_id": ctx.elem_id(spec.name)}
    component: Component
    if spec.kind == "bool":
        component = gr.Checkbox(value=bool(spec.default), **common)
    elif spec.kind == "choice":
        component = gr.Dropdown(choices=choice_pairs(spec), value=spec.default, **common)
    elif spec.kind in ("int", "float") and spec.minimum is not None and spec.maximum is not None:
        step = 1 if spec.kind == "int" else (spec.maximum - spec.minimum) / 100
        component = gr.Slider(spec.minimum, spec.maximum, value=spec.default, step=step, **common)
    elif spec.kind in ("int", "float"):
        component = gr.Number(
            value=spec.default, precision=0 if spec.kind == "int" else None, minimum=spec.minimum, maximum=spec.maximum, **common
        )
    else:
        component = gr.Textbox(value=spec.default or "", placeholder=spec.example or "", **common)
    return OptionControl(spec, component, [component], lambda values: {spec.name: _coerce(spec, values[0])})


def choice_pairs(spec: OptionField) -> list[tuple[str, Any]]:
    """(label, value) for each choice: the schema's ui_choices wording, else the value itself."""
    return [(spec.choice_labels.get(str(choice), str(choice)), choice) for choice in spec.choices]


def _coerce(spec: OptionField, value: Any) -> Any:
    """Widget value -> schema input: sliders give floats, a cleared text box means the default."""
    if spec.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if spec.kind == "text" and (value is None or not str(value).strip()):
        return spec.default
    return value


def radio_control(spec: OptionField, ctx: ControlContext) -> OptionControl:
    """A Literal field shown as buttons (few choices, all worth seeing at once)."""
    component = gr.Radio(
        choices=choice_pairs(spec), value=spec.default, label=spec.label, info=spec.help, elem_id=ctx.elem_id(spec.name)
    )
    return OptionControl(spec, component, [component], lambda values: {spec.name: values[0]})


def model_control(spec: OptionField, ctx: ControlContext) -> OptionControl:
    """The model as a dropdown of the catalog (on this server, downloads N MB, cannot be downloaded right now), and
    a line under it with the chosen weights' licence: the default weights may be AGPL-3.0, and a person choosing
    a model should see that where they choose it."""
    component = gr.Dropdown(
        choices=ctx.model_choices,
        value=spec.default or ctx.default_model,
        label=spec.label,
        info=spec.help,
        elem_id=ctx.elem_id(spec.name),
        elem_classes=["model-dropdown"],
    )
    info = gr.Markdown(ctx.model_info(component.value), elem_id=ctx.elem_id("model-info"), elem_classes=["model-info"])
    component.change(ctx.model_info, inputs=component, outputs=info, **PRIVATE)
    return OptionControl(spec, component, [component], lambda values: {spec.name: values[0] or None}, {"info": info})


def background_control(spec: OptionField, ctx: ControlContext) -> OptionControl:
    """bg_color as transparent / white / colour (named swatches + picker) / image (laid behind the subject)."""
    mode = gr.Radio(
        choices=list(BG_MODES),
        value="transparent" if spec.default is None else "colour",
        label=spec.label,
        info=spec.help,
        elem_id=ctx.elem_id("bg-mode"),
    )
    with gr.Column(visible=spec.default is not None, elem_id=ctx.elem_id("bg-colour-group")) as colour_group:
        with gr.Row(elem_classes=["swatches"]):
            swatches = [
                (
                    gr.Button(
                        name.replace("-", " ").capitalize(),
                        size="sm",
                        min_width=64,
                        elem_id=ctx.elem_id(f"swatch-{name}"),
                        elem_classes=["swatch", f"swatch-{name}"],
                    ),
                    colour,
                )
                for name, colour in SWATCHES.items()
            ]
        picker = gr.ColorPicker(
            value=spec.default or WHITE,
            label="Any colour",
            elem_id=ctx.elem_id(spec.name),
            elem_classes=["bg-picker"],
        )
    image = gr.Image(
        label="Background image",
        type="filepath",
        sources=["upload", "clipboard"],
        height=160,
        visible=False,
        buttons=[],
        elem_id=ctx.elem_id("bg-image"),
    )
    mode.change(
        lambda chosen: (gr.update(visible=chosen == "colour"), gr.update(visible=chosen == "image")),
        inputs=mode,
        outputs=[colour_group, image],
        **PRIVATE,
    )
    for button, colour in swatches:
        button.click(lambda c=colour: ("colour", c), outputs=[mode, picker], **PRIVATE)

    def read(values: list[Any]) -> dict[str, Any]:
        chosen, colour, upload = values
        if chosen == "white":
            return {spec.name: WHITE}
        if chosen == "colour":
            return {spec.name: picker_colour(colour) or spec.default}
        if chosen == "image" and payload_path(upload):
            return {spec.name: None, BG_IMAGE: payload_path(upload)}
        return {spec.name: None}

    return OptionControl(spec, picker, [mode, picker, image], read)


def picker_colour(value: str | None) -> str | None:
    """Gradio's ColorPicker gives `#rrggbb` or `rgba(r, g, b, a)` (alpha 0-1): as a bg_color the schema accepts."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.startswith("rgb"):
        numbers = [float(part) for part in value[value.index("(") + 1 : value.index(")")].split(",")]
        alpha = numbers[3] if len(numbers) > 3 else 1.0
        return ",".join(str(round(v)) for v in numbers[:3]) + f",{round(alpha * 255 if alpha <= 1 else alpha)}"
    return value


# The four lengths of a box option, in its grammar's order, as a person names them.
BOX_SIDES = {"crop_margin": ("Top", "Right", "Bottom", "Left"), "roi": ("Left", "Top", "Right", "Bottom")}
UNITS = (("%", "%"), ("pixels", "px"))


def box_control(spec: OptionField, ctx: ControlContext) -> OptionControl:
    """Four numbers and a unit for a box grammar (crop_margin: four sides; roi: the box's edges), not free text."""
    lengths = [_length(part) for part in str(spec.default).replace(",", " ").split()]
    lengths = lengths * 4 if len(lengths) == 1 else lengths
    unit = "%" if any(percent for _, percent in lengths) else "px"
    with gr.Group(elem_id=ctx.elem_id(spec.name), elem_classes=["box-option"]):
        gr.Markdown(f"**{spec.label}**  \n{spec.help}", elem_classes=["box-label"])
        with gr.Row():
            numbers = [
                gr.Number(value=value, label=side, minimum=0, min_width=70, elem_id=ctx.elem_id(f"{spec.name}-{side.lower()}"))
                for side, (value, _) in zip(BOX_SIDES[spec.name], lengths, strict=True)
            ]
        units = gr.Radio(choices=list(UNITS), value=unit, label="Unit", elem_id=ctx.elem_id(f"{spec.name}-unit"))

    def read(values: list[Any]) -> dict[str, Any]:
        *sides, chosen = values
        if any(side is None or str(side).strip() == "" for side in sides):
            return {spec.name: spec.default}
        wanted = [(float(side), chosen == "%") for side in sides]
        if all(a == b or a[0] == b[0] == 0 for a, b in zip(wanted, lengths, strict=True)):
            return {spec.name: spec.default}  # left as it was: the schema's default, spelled as the schema spells it
        return {spec.name: " ".join(f"{float(side):g}{chosen}" for side in sides)}

    return OptionControl(spec, numbers[0], [*numbers, units], read)


def _length(text: str) -> tuple[float, bool]:
    text = text.strip().lower()
    return (float(text.rstrip("%px") or 0), text.endswith("%"))


def switched_sliders(
    spec: OptionField, ctx: ControlContext, sliders: Sequence[tuple[str, float, float, float]], text: Callable[[list[float]], str]
) -> OptionControl:
    """A checkbox ("original" while off) and the slider(s) that set the value while it is on."""
    switch = gr.Checkbox(value=False, label=spec.label, info=spec.help, elem_id=ctx.elem_id(spec.name))
    bars = [
        gr.Slider(
            low,
            high,
            value=start,
            step=1,
            label=label,
            interactive=False,
            elem_id=ctx.elem_id(f"{spec.name}-{index}"),
            elem_classes=["dependent"],
        )
        for index, (label, low, high, start) in enumerate(sliders)
    ]
    switch.change(lambda on: {bar: gr.update(interactive=bool(on)) for bar in bars}, inputs=switch, outputs=bars, **PRIVATE)

    def read(values: list[Any]) -> dict[str, Any]:
        on, *numbers = values
        return {spec.name: text([float(n) for n in numbers]) if on else spec.default}

    return OptionControl(spec, switch, [switch, *bars], read)


def scale_control(spec: OptionField, ctx: ControlContext) -> OptionControl:
    low = spec.minimum if spec.minimum is not None else 10.0
    return switched_sliders(spec, ctx, [("Share of the picture (%)", low, 100, 80)], lambda v: f"{v[0]:g}%")


def position_control(spec: OptionField, ctx: ControlContext) -> OptionControl:
    axes = [("Across (% from the left)", 0, 100, 50), ("Down (% from the top)", 0, 100, 50)]
    return switched_sliders(spec, ctx, axes, lambda v: f"{v[0]:g}% {v[1]:g}%")


# The fields whose widget is nicer than the generic one for their type (label, choices, default: still the schema's).
WIDGETS: dict[str, Callable[[OptionField, ControlContext], OptionControl]] = {
    "model": model_control,
    "size": radio_control,
    "format": radio_control,
    "channels": radio_control,
    "bg_color": background_control,
    "crop_margin": box_control,
    "roi": box_control,
    "scale": scale_control,
    "position": position_control,
}


# The choice people change most comes first among the basic ones (the rest keep the schema's order).
UP_FRONT = ("bg_color",)


# --- all controls of one tab ---------------------------------------------------------------------------------


@dataclass
class ControlSet:
    """Every non-api field's control for one tab, in schema order: basic ones where built, the rest under "More options"."""

    context: ControlContext
    controls: dict[str, OptionControl] = field(default_factory=dict)

    @classmethod
    def build(cls, context: ControlContext, between: Callable[[], None] | None = None) -> ControlSet:
        """Create the components (call inside a Blocks layout); `between` lays out what sits between the basic
        controls and "More options" (the single-image tab's download button)."""
        fields = [f for f in option_fields() if f.group != "api"]
        self = cls(context)
        with gr.Column(elem_classes=["options-basic"]):
            for spec in sorted(fields, key=lambda spec: spec.name not in UP_FRONT):
                if spec.group == "basic":
                    self.controls[spec.name] = WIDGETS.get(spec.name, generic_control)(spec, context)
        if between is not None:
            between()
        with gr.Accordion("More options", open=False, elem_id=context.elem_id("advanced")):
            for spec in fields:
                if spec.group != "basic":
                    self.controls[spec.name] = WIDGETS.get(spec.name, generic_control)(spec, context)
        self._link_dependents(fields)
        return self

    def _link_dependents(self, fields: Sequence[OptionField]) -> None:
        """Grey out `<flag>_*` controls while `<flag>` is off (the alpha-matting sliders, the crop margin)."""
        for flag, names in dependents(fields).items():
            if flag not in self.controls:
                continue
            targets = [c for name in names if name in self.controls for c in self.controls[name].components]
            on = bool(RemovalOptions.model_fields[flag].default)
            for target in targets:
                target.interactive = on
                target.elem_classes = [*(target.elem_classes or []), "dependent"]
            # A dict of updates: with one output, Gradio would take a returned list as that output's value.
            typing.cast(gr.Checkbox, self.controls[flag].main).change(
                lambda value, targets=targets: {target: gr.update(interactive=bool(value)) for target in targets},
                inputs=self.controls[flag].main,
                outputs=targets,
                **PRIVATE,
            )

    @property
    def inputs(self) -> list[Component]:
        """The components to pass to an event, in the order `read` expects their values."""
        return [component for control in self.controls.values() for component in control.components]

    def values(self, values: Sequence[Any]) -> dict[str, Any]:
        """The raw option mapping (plus BG_IMAGE) from the components' values."""
        mapping: dict[str, Any] = {}
        position = 0
        for control in self.controls.values():
            count = len(control.components)
            mapping.update(control.read(list(values[position : position + count])))
            position += count
        return mapping

    def read(self, values: Sequence[Any]) -> tuple[RemovalOptions, str | None]:
        """Validated options and the background image's path; refusals are parse_options's InvalidOption."""
        mapping = self.values(values)
        bg_image = mapping.pop(BG_IMAGE, None)
        return parse_options(mapping), bg_image


# --- uploads as raw payloads -----------------------------------------------------------------------------------


def payload_path(value: Any) -> str | None:
    """The server-side path of an upload, from a preprocessed value (a path) or a raw payload (`preprocess=False`).

    The UI's events run with `preprocess=False`: gr.Image's preprocessing opens every upload with PIL, so a text
    file dropped on it raised Gradio's traceback (with server temp paths) in a toast instead of our message
    (issue 17.2). Gradio still checks that raw payloads point into its upload folder; our pipeline decodes.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        return value.get("path") or None
    path = getattr(value, "path", None)
    return str(path) if path else None


def payload_name(value: Any) -> str | None:
    """The upload's original file name (what the output is named after), never the server-side path."""
    name = value.get("orig_name") if isinstance(value, dict) else getattr(value, "orig_name", None)
    path = payload_path(value)
    return PurePath(name).name if name else PurePath(path).name if path else None
