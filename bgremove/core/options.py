"""THE removal options: every option any door offers, declared once.

REST forms and JSON, the OpenAPI docs, the Gradio controls, the CLI flags, the gradio_client / MCP
signatures and the remove.bg translation are all generated from `RemovalOptions` or validated by it.
Adding an option means one field here plus its implementation in the pipeline.

Names follow remove.bg's API where the meaning is the same (size, crop, crop_margin, format, channels,
bg_color, scale, position, roi, add_shadow) and rembg's for the rest (alpha_matting_*, post_process_mask).
Each field carries `json_schema_extra` for the doors: `label` (UI), `group` (basic / advanced / api: where the
UI shows it), `hint` (what to do when the value is refused) and, for text options, `example`. Where the API's words
are not a person's words, `ui_label`, `ui_help` and `ui_choices` (value -> label) say it for the browser.

Options are parsed once: a text option (crop_margin, scale, position, roi, bg_color) is validated as a string in
its grammar and held as a typed value (`Sides`, a fraction, a pair, a `Region`, an RGBA tuple); dumps give its
canonical text back, so JSON, forms and the JSON schema see strings (`Grammar`). A field's `Tag`s tell the
pipeline what it must treat specially (`tagged`, `in_effect`): a new option that changes the geometry or is
counted in input pixels gets its tag here and nothing else to edit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple

from PIL import ImageColor
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import core_schema

from bgremove.core.errors import InvalidOption

Size = Literal["preview", "medium", "hd", "full"]
OutputFormat = Literal["png", "jpg", "webp", "zip", "auto"]
Channels = Literal["rgba", "alpha"]
Group = Literal["basic", "advanced", "api"]

# Megapixel budget of each size (remove.bg's: preview 0.25 MP, medium 1.5 MP, hd 4 MP, full = input).
SIZE_MEGAPIXELS: dict[str, float | None] = {"preview": 0.25, "medium": 1.5, "hd": 4.0, "full": None}
MAX_MARGIN_PERCENT = 50.0  # remove.bg's caps for crop_margin
MAX_MARGIN_PX = 500
MIN_SCALE_PERCENT = 10.0

_LENGTH = re.compile(r"^(\d+(?:\.\d+)?)(px|%)?$")


def option(
    default: Any,
    *,
    label: str,
    description: str,
    group: Group = "advanced",
    hint: str = "",
    example: str | None = None,
    ui_label: str | None = None,
    ui_help: str | None = None,
    ui_choices: dict[str, str] | None = None,
    **bounds: Any,
) -> Any:
    """A schema field with what every door needs: bounds, help text, UI label and group, and the refusal hint."""
    extra: dict[str, Any] = {"label": label, "group": group, "hint": hint}
    if example is not None:
        extra["example"] = example
    ui = {"ui_label": ui_label, "ui_help": ui_help, "ui_choices": ui_choices}
    extra.update({key: value for key, value in ui.items() if value is not None})
    return Field(default, description=description, json_schema_extra=extra, **bounds)


# --- value grammars: text in (every door), typed values out (the pipeline), canonical text back (JSON, forms) ---


@dataclass(frozen=True)
class Length:
    """A length in pixels or in percent of a reference size."""

    value: float
    percent: bool

    def pixels(self, reference: float) -> float:
        return self.value * reference / 100.0 if self.percent else self.value

    def __str__(self) -> str:
        if self.percent:
            return f"{self.value:g}%"
        return f"{self.value:g}px" if self.value else "0"  # CSS: a zero needs no unit


class Sides(NamedTuple):
    """A crop margin: one length per side, in CSS order."""

    top: Length
    right: Length
    bottom: Length
    left: Length

    @property
    def in_pixels(self) -> bool:
        return _in_pixels(self)

    def __str__(self) -> str:
        top, right, bottom, left = (str(part) for part in self)
        if top == right == bottom == left:
            return top
        if (top, right) == (bottom, left):
            return f"{top} {right}"
        return f"{top} {right} {bottom} {left}"


class Region(NamedTuple):
    """A region of interest: its top-left and bottom-right corners."""

    x1: Length
    y1: Length
    x2: Length
    y2: Length

    @property
    def in_pixels(self) -> bool:
        return _in_pixels(self)

    def __str__(self) -> str:
        return " ".join(str(part) for part in self)


Rgba = tuple[int, int, int, int]


def _in_pixels(lengths: tuple[Length, ...]) -> bool:
    """Whether any part is counted in input pixels (a zero is zero in any unit)."""
    return any(not part.percent and part.value for part in lengths)


def parse_length(text: str) -> Length:
    match = _LENGTH.match(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r} is not a length")
    return Length(float(match.group(1)), match.group(2) == "%")


def parse_margin(text: str) -> Sides:
    """CSS order: 1 value (all sides), 2 (vertical horizontal) or 4 (top right bottom left); px or %, capped."""
    parts = [parse_length(part) for part in text.replace(",", " ").split()]
    if len(parts) not in (1, 2, 4):
        raise ValueError("give 1, 2 or 4 values")
    for part in parts:
        if (part.percent and part.value > MAX_MARGIN_PERCENT) or (not part.percent and part.value > MAX_MARGIN_PX):
            raise ValueError(f"at most {MAX_MARGIN_PERCENT:g}% or {MAX_MARGIN_PX}px per side")
    if len(parts) == 1:
        return Sides(parts[0], parts[0], parts[0], parts[0])
    if len(parts) == 2:
        return Sides(parts[0], parts[1], parts[0], parts[1])
    return Sides(parts[0], parts[1], parts[2], parts[3])


def parse_scale(text: str) -> float | None:
    """`original` -> None; `80%` (or `80`) -> 0.8, between 10% and 100%."""
    value = text.strip().lower()
    if value == "original":
        return None
    try:
        number = float(value.rstrip("%").strip())
    except ValueError:
        raise ValueError("not a percentage") from None
    if not MIN_SCALE_PERCENT <= number <= 100.0:
        raise ValueError(f"must be between {MIN_SCALE_PERCENT:g}% and 100%")
    return number / 100.0


def scale_text(scale: float | None) -> str:
    return "original" if scale is None else f"{scale * 100:g}%"


def parse_position(text: str) -> tuple[float, float] | None:
    """`original` -> None; `center` -> (0.5, 0.5); `X%` or `X% Y%` -> fractions of the free space."""
    value = text.strip().lower()
    if value == "original":
        return None
    if value in ("center", "centre"):
        return 0.5, 0.5
    parts = value.split()
    if len(parts) not in (1, 2) or not all(part.endswith("%") for part in parts):
        raise ValueError("use original, center, 'X%' or 'X% Y%'")
    numbers = [float(part[:-1]) for part in parts]
    if not all(0.0 <= number <= 100.0 for number in numbers):
        raise ValueError("percentages must be between 0% and 100%")
    x = numbers[0] / 100.0
    return x, numbers[1] / 100.0 if len(numbers) == 2 else x


def position_text(position: tuple[float, float] | None) -> str:
    return "original" if position is None else f"{position[0] * 100:g}% {position[1] * 100:g}%"


def parse_roi(text: str) -> Region:
    """`x1 y1 x2 y2`, each in px or %; the box must not be empty."""
    parts = [parse_length(part) for part in text.replace(",", " ").split()]
    if len(parts) != 4:
        raise ValueError("give four values: x1 y1 x2 y2")
    x1, y1, x2, y2 = parts
    if (x1.percent == x2.percent and x2.value <= x1.value) or (y1.percent == y2.percent and y2.value <= y1.value):
        raise ValueError("x2 must be right of x1 and y2 below y1")
    if any(part.percent and part.value > 100 for part in parts):
        raise ValueError("percentages must be between 0% and 100%")
    return Region(x1, y1, x2, y2)


def parse_color(text: str) -> Rgba:
    """Hex with or without `#` (3, 4, 6 or 8 digits), `r,g,b[,a]` (0-255), or a CSS colour name -> RGBA."""
    value = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8}", value):
        value = "#" + value
    parts = [p.strip() for p in value.split(",")]
    if len(parts) in (3, 4):
        if not all(p.isdigit() and int(p) <= 255 for p in parts):
            raise ValueError("r,g,b[,a] values must be whole numbers from 0 to 255")
        numbers = [int(p) for p in parts] + ([255] if len(parts) == 3 else [])
        return numbers[0], numbers[1], numbers[2], numbers[3]
    try:
        rgba = ImageColor.getcolor(value, "RGBA")
    except ValueError:
        raise ValueError("not a colour") from None
    assert isinstance(rgba, tuple)
    return rgba[0], rgba[1], rgba[2], rgba[3]


def color_text(rgba: Rgba) -> str:
    """`#rrggbb` when opaque, `r,g,b,a` when see-through (remove.bg's two spellings)."""
    return "#{:02x}{:02x}{:02x}".format(*rgba[:3]) if rgba[3] == 255 else ",".join(map(str, rgba))


@dataclass(frozen=True)
class Grammar:
    """Marks an option that is written as text and held parsed.

    Doors send text (forms, argv, JSON, widgets) and it is validated as a string, so a refusal reads as it always
    did; the model then holds the parsed value (the pipeline never parses again), and dumps it as canonical text,
    so JSON (the jobs store), forms and the JSON schema (OpenAPI) still see strings.
    """

    parse: Callable[[str], Any]
    text: Callable[[Any], str] = str
    none: bool = False  # None (no value) is accepted and kept as None

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        schema = core_schema.no_info_after_validator_function(
            self.parse,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(self.dump, return_schema=core_schema.str_schema()),
        )
        return core_schema.nullable_schema(schema) if self.none else schema

    def dump(self, value: Any) -> str:
        # text passes as it is: the field's declared default (shown by the JSON schema) is the text doors send
        return value if isinstance(value, str) else self.text(value)


class Tag(StrEnum):
    """What the pipeline must know about an option beyond its value (see `in_effect` and `pipeline.working_size`)."""

    CHANGES_GEOMETRY = "changes_geometry"  # the output canvas depends on the subject (crop, scale, position)
    MEASURED_IN_INPUT_PIXELS = "measured_in_input_pixels"  # means what it says only on the full-size photo


# --- the schema ---------------------------------------------------------------------------------------------


class RemovalOptions(BaseModel):
    """What a caller may ask for. Defaults give a transparent PNG at the input size, as rembg does."""

    # validate_default: the text defaults (crop_margin "0", roi "0% 0% 100% 100%") are parsed like any value
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), validate_default=True)

    model: str | None = option(
        None,
        label="Model",
        ui_help="Which model finds the subject; some are better at people, products or hair. One that is not on "
        "this server yet is downloaded first.",
        description="Model name from GET /api/models (default: the server's REMBG_MODEL_NAME).",
        hint="Use a name from GET /api/models or `python -m bgremove models list`.",
    )

    # Output: what the result looks like (remove.bg's names).
    size: Size = option(
        "full",
        label="Size",
        ui_label="Output size",
        ui_help="Smaller files download faster. The shape is kept and a photo is never enlarged.",
        ui_choices={"preview": "Preview (0.25 MP)", "medium": "Medium (1.5 MP)", "hd": "HD (4 MP)", "full": "Full size"},
        description="Output size: preview (at most 0.25 MP), medium (1.5 MP), hd (4 MP) or full (input resolution). "
        "Aspect ratio is kept; images are never upscaled.",
        hint="Use preview, medium, hd or full.",
    )
    format: OutputFormat = option(
        "png",
        label="Format",
        group="basic",
        ui_help="PNG and WebP keep transparency; JPG is smaller and never transparent.",
        ui_choices={"png": "PNG", "jpg": "JPG", "webp": "WebP", "zip": "ZIP (colour + mask)", "auto": "Auto (PNG or JPG)"},
        description="png, jpg, webp, zip (color.jpg + alpha.png) or auto (PNG if the result has transparency, "
        "JPG when a background makes it opaque). A JPG without a background gets a white one.",
        hint="Use png, jpg, webp, zip or auto.",
    )
    quality: int = option(
        90,
        label="Quality (jpg / webp)",
        ge=1,
        le=100,
        description="Encoder quality for jpg and webp, 1-100.",
        ui_help="Higher looks better and makes a larger file (JPG and WebP only).",
        hint="Use a whole number from 1 to 100.",
    )
    channels: Channels = option(
        "rgba",
        label="Channels",
        description="rgba: the cutout; alpha: the greyscale mask only.",
        hint="Use rgba or alpha.",
        ui_label="What to download",
        ui_help="The mask is white where the subject is and black elsewhere, for use in other editors.",
        ui_choices={"rgba": "The cutout", "alpha": "Only the mask (white subject on black)"},
    )
    crop: Annotated[bool, Tag.CHANGES_GEOMETRY] = option(
        False,
        label="Crop to the subject",
        group="basic",
        description="Crop to the subject's bounding box (pixels with alpha above 10%) plus crop_margin.",
        ui_help="Trim the empty space around the subject.",
    )
    crop_margin: Annotated[Sides, Grammar(parse_margin), Tag.MEASURED_IN_INPUT_PIXELS] = option(
        "0",
        label="Crop margin",
        ui_label="Space around the cropped subject",
        ui_help="Added on each side when cropping, in pixels or % (at most 500 px or 50%); it stops at the photo's edges.",
        example="20px",
        description="Margin around the cropped subject: 1, 2 or 4 values in px or % (CSS order), "
        f"at most {MAX_MARGIN_PERCENT:g}% or {MAX_MARGIN_PX}px; clipped at the image borders.",
        hint=f"Use e.g. 20px, 10%, '10px 20px' or '5% 10% 5% 10%' (at most {MAX_MARGIN_PERCENT:g}% / {MAX_MARGIN_PX}px).",
    )
    scale: Annotated[float | None, Grammar(parse_scale, scale_text), Tag.CHANGES_GEOMETRY] = option(
        "original",
        label="Subject scale",
        ui_label="Resize the subject",
        ui_help="How much of the picture the subject fills.",
        description="Scale the subject relative to the output canvas: 10%-100%, or original.",
        example="80%",
        hint="Use original or a percentage from 10% to 100%.",
    )
    position: Annotated[tuple[float, float] | None, Grammar(parse_position, position_text), Tag.CHANGES_GEOMETRY] = option(
        "original",
        label="Subject position",
        ui_label="Move the subject",
        ui_help="Where the subject sits: 0% is the left or top edge, 100% the right or bottom edge.",
        description="Where the subject sits on the canvas: original, center, or 'X% Y%' (0% 0% is top left).",
        example="50% 100%",
        hint="Use original, center, or 'X% Y%' with percentages from 0% to 100%.",
    )
    roi: Annotated[Region, Grammar(parse_roi), Tag.MEASURED_IN_INPUT_PIXELS] = option(
        "0% 0% 100% 100%",
        label="Region of interest",
        ui_label="Look for the subject only inside a box",
        ui_help="Everything outside the box becomes background.",
        description="Only this region can be foreground: 'x1 y1 x2 y2' in px or %.",
        example="10% 0% 90% 100%",
        hint="Use four values 'x1 y1 x2 y2' in px or %, e.g. '0% 0% 100% 100%'.",
    )
    bg_color: Annotated[Rgba | None, Grammar(parse_color, color_text, none=True)] = option(
        None,
        label="Background colour",
        group="basic",
        ui_label="Background",
        ui_help="Leave it transparent, or put white, a colour or your own image behind the subject.",
        example="ffffff",
        description="Fill the background: hex with or without # (3, 4, 6 or 8 digits), r,g,b[,a], or a CSS colour name.",
        hint="Use e.g. ffffff, #81d4fa, 255,255,255,128 or white.",
    )
    add_shadow: bool = option(
        False,
        label="Drop shadow",
        ui_help="A soft shadow under the subject.",
        description="A soft drop shadow under the subject (semi-transparent on transparent output).",
    )

    # Edges.
    decontaminate: bool = option(
        True,
        label="Clean edge colours",
        description="Replace the old background's colour in see-through edge pixels (hair, fur, blur) with the "
        "estimated foreground colour, so the cutout looks right on a new background.",
    )
    post_process_mask: Annotated[bool, Tag.MEASURED_IN_INPUT_PIXELS] = option(
        False,
        label="Smooth the mask",
        description="Smooth the mask's outline (removes speckles and jagged edges); soft edges stay soft.",
    )
    alpha_matting: Annotated[bool, Tag.MEASURED_IN_INPUT_PIXELS] = option(
        False,
        label="Alpha matting (slow)",
        ui_label="Fine edge matting (slow)",
        ui_help="A slower edge refinement for hair and fur; the standard edges are usually as good.",
        description="Refine edges with pymatting's closed-form alpha matting (slow; the default edge refinement is "
        "usually as good).",
    )
    alpha_matting_foreground_threshold: int = option(
        240,
        label="Matting: foreground threshold",
        ge=0,
        le=255,
        description="Alpha matting: mask values above this are certain foreground (0-255).",
        hint="Use a whole number from 0 to 255.",
    )
    alpha_matting_background_threshold: int = option(
        10,
        label="Matting: background threshold",
        ge=0,
        le=255,
        description="Alpha matting: mask values below this are certain background (0-255).",
        hint="Use a whole number from 0 to 255.",
    )
    alpha_matting_erode_size: int = option(
        10,
        label="Matting: erode size",
        ge=0,
        le=100,
        description="Alpha matting: erode the uncertain edge by this many pixels (0-100).",
        hint="Use a whole number from 0 to 100.",
    )

    # Aliases kept for existing clients.
    only_mask: bool = option(
        False, label="Mask only", group="api", description="Alias of channels=alpha (kept for rembg-style clients)."
    )

    @field_validator("model", "bg_color", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("size", "format", "channels", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> RemovalOptions:
        if self.alpha_matting_background_threshold >= self.alpha_matting_foreground_threshold:
            raise ValueError("alpha_matting_background_threshold must be below alpha_matting_foreground_threshold")
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _only_mask_is_channels_alpha(cls, data: Any, handler: ModelWrapValidatorHandler[RemovalOptions]) -> RemovalOptions:
        """The alias, resolved once so the pipeline reads one field."""
        options = handler(data)
        if options.only_mask and options.channels != "alpha":
            return options.model_copy(update={"channels": "alpha"})
        return options


OPTION_NAMES: tuple[str, ...] = tuple(RemovalOptions.model_fields)
DEFAULTS = RemovalOptions()


def tagged(*tags: Tag) -> tuple[str, ...]:
    """The options carrying any of `tags`, in schema order."""
    return tuple(name for name, info in RemovalOptions.model_fields.items() if any(tag in info.metadata for tag in tags))


def in_effect(options: RemovalOptions, name: str) -> bool:
    """Whether option `name` does anything its tags speak of.

    A length-valued option measured in input pixels is in effect when some length is in pixels (a roi in % works at
    any size); any other option when it differs from its default (crop on, a scale, matting on).
    """
    value = getattr(options, name)
    if Tag.MEASURED_IN_INPUT_PIXELS in RemovalOptions.model_fields[name].metadata and isinstance(value, Sides | Region):
        return value.in_pixels
    return bool(value != getattr(DEFAULTS, name))


def input_type(info: FieldInfo) -> Any:
    """The type a door passes in for a field: `str` (or `str | None`) for a text grammar, else the field's type."""
    grammar = next((item for item in info.metadata if isinstance(item, Grammar)), None)
    if grammar is None:
        return info.annotation
    return str | None if grammar.none else str


@dataclass(frozen=True)
class ImageInput:
    """An input whose value is an image file, not text: doors read it with the shared image intake (size limit,
    one wording for each refusal) and hand its bytes to `remove_background` as the keyword of the same name."""

    name: str
    label: str
    description: str
    hint: str
    per_photo: bool  # True: belongs to one photo (a batch cannot share it); False: serves every photo of a batch


# Every image-valued input, once; doors build their file fields, flags and keyword arguments from this table.
IMAGE_INPUTS: dict[str, ImageInput] = {
    "bg_image": ImageInput(
        name="bg_image",
        label="Background image",
        description="An image laid behind the subject, scaled to cover and centred; drawn over bg_color.",
        hint="Send the background as a file field named `bg_image` (PNG, JPEG or WebP).",
        per_photo=False,
    ),
    "keep_mask": ImageInput(
        name="keep_mask",
        label="Keep strokes",
        description="Touch-up: strokes over parts the cutout should keep (white on black, or painted on a "
        "transparent layer; any size with the photo's aspect ratio). The region a stroke touches comes back.",
        hint="Send the keep strokes as a file field named `keep_mask`: an image of the photo's shape, white strokes "
        "on black or strokes on a transparent layer.",
        per_photo=True,
    ),
    "remove_mask": ImageInput(
        name="remove_mask",
        label="Remove strokes",
        description="Touch-up: strokes over parts the cutout should drop (white on black, or painted on a "
        "transparent layer; any size with the photo's aspect ratio). The region a stroke touches goes.",
        hint="Send the remove strokes as a file field named `remove_mask`: an image of the photo's shape, white "
        "strokes on black or strokes on a transparent layer.",
        per_photo=True,
    ),
}
CONSISTENCY_HINT = "Typical values: foreground 240, background 10."


def field_extra(name: str) -> dict[str, Any]:
    """The door metadata (label, group, hint, example) of one option."""
    extra = RemovalOptions.model_fields[name].json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


def parse_options(values: Mapping[str, Any] | None = None, **more: Any) -> RemovalOptions:
    """Validate raw values from any door (strings from forms and argv, JSON values, widget values).

    Refusals are one `InvalidOption` whose message and hint are the same at every door.
    """
    data = {**(values or {}), **more}
    try:
        return RemovalOptions.model_validate(data)
    except ValidationError as exc:
        raise invalid_option(exc) from None


def invalid_option(exc: ValidationError) -> InvalidOption:
    """The first problem of a ValidationError as our error: `name=value is not valid: why.` plus the field's hint."""
    error = exc.errors(include_url=False)[0]
    return describe_error(error)


def describe_error(error: Mapping[str, Any]) -> InvalidOption:
    """One pydantic error dict -> InvalidOption (also used by the REST door for FastAPI's validation errors)."""
    location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "form")]
    name = location[-1] if location else ""
    reason = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if name in RemovalOptions.model_fields:
        value = error.get("input")
        hint = field_extra(name).get("hint", "") or _type_hint(name)
        if error.get("type") == "extra_forbidden":
            return InvalidOption(f"Unknown option {name!r}.", hint="Options: " + ", ".join(OPTION_NAMES) + ".")
        return InvalidOption(f"{name}={value!r} is not valid: {_lower_first(reason)}.", hint=hint)
    if error.get("type") == "extra_forbidden":
        return InvalidOption(f"Unknown option {name!r}.", hint="Options: " + ", ".join(OPTION_NAMES) + ".")
    if "alpha_matting_background_threshold must be below" in reason:
        return InvalidOption(reason + ".", hint=CONSISTENCY_HINT)
    where = f"{name}: " if name else ""
    return InvalidOption(f"{where}{_lower_first(reason)}.", hint="Check the value against GET /docs.")


def _type_hint(name: str) -> str:
    annotation = RemovalOptions.model_fields[name].annotation
    return "Use true or false." if annotation is bool else ""


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text
