"""The gradio_client / MCP door: `/remove` and `/remove_batch`, their parameters generated from the options schema.

Gradio names an endpoint's parameters after its function's signature and documents them (API page, MCP tool
schema) from the docstring's `Args:`. So each endpoint is a function whose `__signature__` lists the input(s) and
then one parameter per `RemovalOptions` field (its default and annotation), and whose docstring lists each
field's description: `client.predict(handle_file(p), crop=True, format="jpg", bg_color="ffffff", api_name="/remove")`.

Positional clients written for the old endpoint keep working: the fields it had come first, in its order
(`LEGACY_ORDER`), the new ones after. Values are checked by `parse_options` alone (the hidden components do not
clamp or refuse), so a bad value gets the same message and hint as REST and the CLI.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path, PurePath
from typing import Any

import gradio as gr
from gradio.components import Component

from bgremove.batch.engine import inputs_from_files, run_batch
from bgremove.batch.sinks import ZipSink
from bgremove.core import codecs
from bgremove.core.errors import InvalidOption
from bgremove.core.options import IMAGE_INPUTS, ImageInput, parse_options
from bgremove.core.pipeline import remove_background
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from bgremove.web.admission import Admission
from bgremove.web.intake import SHARED_INPUTS, read_image_paths
from bgremove.web.ui_controls import OptionField, option_fields
from bgremove.web.ui_files import job_dir, read_limited, save
from bgremove.web.ui_handlers import api_error

# /remove's parameters before the schema existed, in their order: positional callers rely on it.
LEGACY_ORDER = (
    "model",
    "alpha_matting",
    "alpha_matting_foreground_threshold",
    "alpha_matting_background_threshold",
    "alpha_matting_erode_size",
    "post_process_mask",
    "only_mask",
    "bg_color",
)


def api_fields() -> list[OptionField]:
    """Every schema field (aliases included), the legacy ones first in their old order."""
    fields = {spec.name: spec for spec in option_fields()}
    return [fields[name] for name in LEGACY_ORDER if name in fields] + [s for n, s in fields.items() if n not in LEGACY_ORDER]


def api_component(spec: OptionField) -> Component:
    """A hidden input whose API type and default come from the field; it never refuses a value itself.

    Choices are plain strings, not an enum: MCP clients validate arguments against the tool's JSON schema, and an
    enum would refuse `size=huge` in the MCP SDK's words instead of the schema's message and hint. The choices are
    listed in each field's description, which the docs and the MCP tool show.
    """
    if spec.kind == "bool":
        return gr.Checkbox(value=bool(spec.default), label=spec.name)
    if spec.kind in ("int", "float"):
        return gr.Number(value=spec.default, precision=0 if spec.kind == "int" else None, label=spec.name)
    return gr.Textbox(value=spec.default or "", label=spec.name)


def schema_function(
    name: str,
    summary: str,
    returns: str,
    first: tuple[str, Any, str],
    body: Callable[[Any, dict[str, Any], dict[str, str | None]], Any],
    images: tuple[ImageInput, ...] = tuple(IMAGE_INPUTS.values()),
) -> Callable[..., Any]:
    """A function `name(<first>, <every field>, <every image input>=None)` calling `body(first, option values,
    {image input: path})`; the image inputs are those of IMAGE_INPUTS (bg_image, ...), in its order.

    Its `__signature__`, `__annotations__` and docstring are what Gradio reads for parameter names, types,
    defaults and the MCP tool's descriptions.
    """
    fields = api_fields()
    first_name, first_type, first_doc = first
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [inspect.Parameter(first_name, kind, annotation=first_type)]
    parameters += [
        inspect.Parameter(
            f.name, kind, default=f.default if f.default is not None else "", annotation=str if f.optional else f.annotation
        )
        for f in fields
    ]
    parameters += [inspect.Parameter(spec.name, kind, default=None, annotation=str | None) for spec in images]
    docs = [f"    {first_name}: {first_doc}"] + [f"    {f.name}: {f.description}" for f in fields]
    docs += [f"    {spec.name}: optional image. {spec.description}" for spec in images]
    names = [p.name for p in parameters]

    def endpoint(*values: Any) -> Any:
        given = dict(zip(names, values, strict=False))
        options = {f.name: given[f.name] for f in fields if f.name in given and (given[f.name] is not None or f.optional)}
        return body(given.get(first_name), options, {spec.name: given.get(spec.name) for spec in images})

    endpoint.__name__ = endpoint.__qualname__ = name
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.__annotations__ = {p.name: p.annotation for p in parameters}
    endpoint.__doc__ = f"{summary}\n\nArgs:\n" + "\n".join(docs) + f"\n\nReturns:\n    {returns}\n"
    return endpoint


def remove_endpoint(settings: Settings, cache: SessionCache, admission: Admission | None = None) -> Callable[..., str]:
    gate = admission or Admission.for_settings(settings)

    def run(image: str | None, values: dict[str, Any], image_inputs: dict[str, str | None]) -> str:
        try:
            if not image:
                raise InvalidOption("No image was sent.", hint="Pass the photo first, e.g. handle_file('photo.jpg').")
            options = parse_options(values)
            filename = PurePath(image).name
            images = read_image_paths(image_inputs, settings)
            with gate.slot("/gradio_api/remove"):  # the in-flight limit every door shares
                result = remove_background(
                    read_limited(image, settings.max_image_bytes), filename, options, settings=settings, cache=cache, **images
                )
            return str(save(result.data, job_dir(), codecs.output_name(filename, result.extension, suffix="-nobg")))
        except Exception as exc:
            raise api_error(exc) from None

    return schema_function(
        "remove_image_background",
        "Remove the background of one image (PNG, JPEG or WebP) and return the result in the chosen format "
        "(a transparent PNG by default).",
        "the output file (PNG, JPG, WebP or ZIP), named <stem>-nobg.<ext>.",
        ("image", str, "the photo to cut out (PNG, JPEG or WebP)."),
        run,
    )


def remove_batch_endpoint(
    settings: Settings, cache: SessionCache, admission: Admission | None = None
) -> Callable[..., tuple[str, dict[str, Any]]]:
    gate = admission or Admission.for_settings(settings)

    def run(files: list[str] | None, values: dict[str, Any], image_inputs: dict[str, str | None]) -> tuple[str, dict[str, Any]]:
        try:
            options = parse_options(values)
            images = read_image_paths(image_inputs, settings)
            with ExitStack() as stack:
                inputs = inputs_from_files([(Path(p).name, stack.enter_context(open(p, "rb"))) for p in files or []], settings)
            zip_path = job_dir() / "bgremove-results.zip"
            sink = ZipSink(zip_path)
            with gate.slot("/gradio_api/remove_batch"):
                for item in run_batch(inputs, options, settings=settings, cache=cache, **images):
                    sink.add(item)
            manifest = sink.close(options.model or PurePath(settings.model_name).name)
        except Exception as exc:
            raise api_error(exc) from None
        return str(zip_path), manifest

    return schema_function(
        "remove_backgrounds_batch",
        "Remove the backgrounds of many images, or of the images in a zip, with the same options for every file. "
        "Returns a zip of the outputs (<stem>.<ext>, plus manifest.json) and the manifest.",
        "the zip, and the manifest (per file: status, output name, size, error and hint).",
        ("files", list[str], "images (PNG, JPEG, WebP) and/or zips of images."),
        run,
        SHARED_INPUTS,
    )


def add_api_endpoints(settings: Settings, cache: SessionCache, concurrency_id: str, admission: Admission | None = None) -> None:
    """Hidden inputs and the two public endpoints (call inside the Blocks); `admission` is the app's gate."""
    with gr.Row(visible=False):
        image = gr.File(label="image", type="filepath")
        files = gr.File(label="files", file_count="multiple", type="filepath")
        options = [api_component(spec) for spec in api_fields()]
        image_inputs = {name: gr.File(label=name, type="filepath") for name in IMAGE_INPUTS}
        output = gr.File(label="output")
        zip_file = gr.File(label="zip")
        manifest = gr.JSON(label="manifest")
        remove_button = gr.Button()
        batch_button = gr.Button()
    remove_button.click(
        remove_endpoint(settings, cache, admission),
        inputs=[image, *options, *image_inputs.values()],
        outputs=output,
        api_name="remove",
        concurrency_id=concurrency_id,
    )
    batch_button.click(
        remove_batch_endpoint(settings, cache, admission),
        inputs=[files, *options, *(image_inputs[spec.name] for spec in SHARED_INPUTS)],
        outputs=[zip_file, manifest],
        api_name="remove_batch",
        concurrency_id=concurrency_id,
    )
