"""The UI's event handlers: read the widgets, call the core (pipeline / batch engine), shape Gradio outputs.

No handler lets an exception reach Gradio: Gradio would show its text (with server paths) in a toast, leave
"Processing..." on screen and mark the outputs with an Error badge (issue 17.2). Every refusal is the core's
message and hint, the same words REST and the CLI use; anything unexpected is logged here with its traceback
and shown as one plain sentence.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import queue
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, TypeVar

import gradio as gr
from PIL import Image

from bgremove.batch.engine import ItemResult, inputs_from_files, run_batch
from bgremove.batch.sinks import ZipSink
from bgremove.core import codecs
from bgremove.core.errors import BgRemoveError, StorageFull
from bgremove.core.options import RemovalOptions
from bgremove.core.pipeline import Result, remove_background
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from bgremove.web.ui_controls import ControlSet, payload_name, payload_path
from bgremove.web.ui_files import job_dir, read_limited, save

log = logging.getLogger(__name__)
T = TypeVar("T")

FORMAT_NAMES = {"png": "PNG", "jpg": "JPG", "webp": "WebP", "zip": "ZIP"}
TABLE_HEADERS = ["file", "status", "size", "seconds", "error / hint"]
UNEXPECTED = "Something went wrong on the server while processing this request."
UNEXPECTED_HINT = "Try again; if it keeps happening, report it with the time of the request (the server log has the details)."
NO_SUBJECT = (
    "**No clear subject found** (confidence {confidence:.2f}): the cutout may be empty or wrong. "
    "Try another model, a photo with a clear subject, or crop closer to it."
)


def explain(exc: BaseException) -> tuple[str, str]:
    """Any exception -> (message, hint) fit for a person: our errors as they are, the rest logged and summarised."""
    if isinstance(exc, BgRemoveError):
        return exc.message, exc.hint
    if isinstance(exc, MemoryError):
        return (
            "The image needed more memory than the server has.",
            "Send a smaller image, or lower MAX_IMAGE_PIXELS / MAX_CONCURRENT_INFERENCES.",
        )
    log.error("Unexpected error in a UI handler", exc_info=exc)
    if isinstance(exc, OSError):
        return "The server could not read or write a temporary file.", StorageFull.default_hint
    return UNEXPECTED, UNEXPECTED_HINT


def shielded(fn: Callable[..., T], fallback: Callable[[], T]) -> Callable[..., T]:
    """`fn` for a display-only event (model info, page-load refresh): a failure is logged, the page keeps what it shows."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> T:
        try:
            return fn(*args)
        except Exception:
            log.exception("UI refresh failed")
            return fallback()

    return wrapper


def failure(exc: BaseException) -> str:
    message, hint = explain(exc)
    return f"**Failed:** {message} {hint}".strip()


def api_error(exc: BaseException) -> gr.Error:
    """The same (message, hint) for gradio_client and MCP callers, as a Gradio error they receive."""
    message, hint = explain(exc)
    return gr.Error(f"{message} {hint}".strip(), print_exception=False)


# --- what the output is ---------------------------------------------------------------------------------------


def output_label(result: Result, options: RemovalOptions, bg_image: bool) -> str:
    """The output pane's label says what will be downloaded ("transparent PNG" only when it is one)."""
    fmt = FORMAT_NAMES.get(result.format, result.format.upper())
    if result.format == "zip":
        return "Cutout as ZIP: color.jpg + alpha.png (preview: color.jpg)"
    mode = Image.open(io.BytesIO(result.data)).mode  # reads the header only
    if mode in ("L", "LA", "I;16"):
        return f"Mask (greyscale {fmt})"
    background = "your background image" if bg_image else options.bg_color or "white"
    if mode in ("RGBA", "PA"):
        if bg_image or options.bg_color:
            return f"Cutout on {background}, partly transparent ({fmt})"
        return f"Cutout (transparent {fmt})"
    return f"Cutout on {background} ({fmt})"


def preview_bytes(result: Result) -> tuple[bytes, str]:
    """What the browser can show of the output: the output itself, or a zip's color.jpg."""
    if result.format != "zip":
        return result.data, result.extension
    with zipfile.ZipFile(io.BytesIO(result.data)) as archive:
        name = next((n for n in archive.namelist() if n.lower().endswith(".jpg")), archive.namelist()[0])
        return archive.read(name), PurePath(name).suffix.lstrip(".") or "jpg"


def status_line(result: Result) -> str:
    fmt = FORMAT_NAMES.get(result.format, result.format.upper())
    line = f"Done in **{result.seconds:.2f} s** - {result.width} x {result.height} px {fmt} - model `{result.model}`" + (
        f" (inference {result.stages['mask']:.2f} s)" if "mask" in result.stages else ""
    )
    if not result.foreground_found:
        line += "\n\n" + NO_SUBJECT.format(confidence=result.confidence)
    return line


# --- handlers -------------------------------------------------------------------------------------------------


@dataclass
class UiHandlers:
    """The handlers of one app: the settings and session cache arrive from `build_ui`, never from globals."""

    settings: Settings
    cache: SessionCache

    def read_bg_image(self, path: str | None) -> bytes | None:
        return read_limited(path, self.settings.max_image_bytes) if path else None

    # single image

    def single(self, controls: ControlSet, upload: Any, values: Sequence[Any]) -> tuple[Any, ...]:
        """Single-image tab -> (cutout, before/after, download, metadata, status). `upload` is the photo's raw payload."""
        empty = (gr.update(value=None, label="Cutout"), None, gr.update(value=None, label="Download", interactive=False), None)
        try:
            photo = payload_path(upload)
            if not photo:
                return (*empty, "Upload a photo first.")
            options, bg_path = controls.read(values)
            bg_image = self.read_bg_image(bg_path)
            filename = payload_name(upload) or "image"
            result = remove_background(
                read_limited(photo, self.settings.max_image_bytes),
                filename,
                options,
                settings=self.settings,
                cache=self.cache,
                bg_image=bg_image,
            )
            folder = job_dir()
            name = codecs.output_name(filename, result.extension, suffix="-nobg")
            target = save(result.data, folder, name)
            preview, preview_ext = preview_bytes(result)
            shown = (
                target if preview is result.data else save(preview, folder / "preview", f"{PurePath(name).stem}.{preview_ext}")
            )
            label = output_label(result, options, bg_image is not None)
        except Exception as exc:  # every failure is a message and a hint in the status line, never a toast
            return (*empty, failure(exc))
        fmt = FORMAT_NAMES.get(result.format, result.format.upper())
        return (
            gr.update(value=str(shown), label=label),
            (photo, str(shown)),
            gr.update(value=str(target), label=f"Download {fmt}", interactive=True),
            {**result.metadata(), "output": name},
            status_line(result),
        )

    # batch

    def batch(
        self, controls: ControlSet, uploads: Sequence[Any], values: Sequence[Any], progress: gr.Progress | None = None
    ) -> Iterator[tuple[Any, ...]]:
        """Batch tab -> (table rows, gallery, zip download, manifest download, status), live as items finish."""
        nothing = gr.update(value=None, interactive=False)
        files = upload_files(*uploads)
        if not files:
            yield [], gr.update(value=[], visible=False), nothing, nothing, "Add images, a folder or a zip first."
            return
        try:
            options, bg_path = controls.read(values)
            bg_image = self.read_bg_image(bg_path)
            with ExitStack() as stack:
                inputs = inputs_from_files([(name, stack.enter_context(open(path, "rb"))) for name, path in files], self.settings)
            folder = job_dir()
        except Exception as exc:
            yield [], gr.update(value=[], visible=False), nothing, nothing, failure(exc)
            return
        yield from self._run(inputs, options, bg_image, folder, progress)

    def _run(
        self, inputs: list[Any], options: RemovalOptions, bg_image: bytes | None, folder: Path, progress: gr.Progress | None
    ) -> Iterator[tuple[Any, ...]]:
        nothing = gr.update(value=None, interactive=False)
        states: list[tuple[ItemResult | None, str]] = [(None, "Queued")] * len(inputs)
        gallery: dict[int, tuple[str, str]] = {}  # input index -> (preview, caption): shown in input order
        zip_path = folder / "bgremove-results.zip"
        done = 0
        yield table(inputs, states), gr.update(value=[], visible=False), nothing, nothing, f"0 of {len(inputs)} done"
        try:
            sink = ZipSink(zip_path)
            for kind, payload in self._events(inputs, options, bg_image):
                if kind == "start":
                    states[payload] = (None, "Processing")
                else:
                    item: ItemResult = payload
                    states[item.index] = (item, "")
                    if item.result is not None and item.output:
                        data, extension = preview_bytes(item.result)
                        shown = save(data, folder / "preview", str(PurePath(item.output).with_suffix(f".{extension}")))
                        gallery[item.index] = (str(shown), item.output)
                    sink.add(item)  # writes the output into the zip, then drops its bytes
                    done += 1
                    if progress is not None:
                        progress(done / len(inputs), desc=f"{done} of {len(inputs)}")
                yield (
                    table(inputs, states),
                    gallery_update(gallery),
                    nothing,
                    nothing,
                    f"{done} of {len(inputs)} done",
                )
            manifest = sink.close(options.model or PurePath(self.settings.model_name).name)
            json_path = save(_json(manifest), folder, "bgremove-results.json")
        except Exception as exc:  # the model cannot load, the disk is full...: no partial zip is offered
            zip_path.unlink(missing_ok=True)
            yield table(inputs, states), gallery_update(gallery), nothing, nothing, failure(exc)
            return
        zip_button = gr.update(value=str(zip_path), interactive=True) if manifest["completed"] else nothing
        yield (
            table(inputs, states),
            gallery_update(gallery),
            zip_button,
            gr.update(value=str(json_path), interactive=True),
            batch_summary(manifest),
        )

    def _events(self, inputs: list[Any], options: RemovalOptions, bg_image: bytes | None) -> Iterator[tuple[str, Any]]:
        """Run the batch in a worker thread; yield ("start", index) / ("done", item) as they happen, so the
        table shows which files are being processed (run_batch reports starts through a callback)."""
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        stop = threading.Event()  # the page went away: start no more items

        def work() -> None:
            try:
                for item in run_batch(
                    inputs,
                    options,
                    settings=self.settings,
                    cache=self.cache,
                    bg_image=bg_image,
                    on_start=lambda index: events.put(("start", index)),
                    should_stop=stop.is_set,
                ):
                    events.put(("done", item))
            except BaseException as exc:  # handed to the generator, which explains it
                events.put(("error", exc))
            finally:
                events.put(("end", None))

        threading.Thread(target=work, name="bgremove-ui-batch", daemon=True).start()
        try:
            while True:
                kind, payload = events.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise payload
                yield kind, payload
        finally:
            stop.set()


def upload_files(*uploads: Any) -> list[tuple[str, str]]:
    """(original name, server path) of every file in gr.File payloads (one, or a list)."""
    files: list[tuple[str, str]] = []
    for upload in uploads:
        for item in upload if isinstance(upload, list) else [upload]:
            path = payload_path(item)
            if path:
                files.append((payload_name(item) or PurePath(path).name, path))
    return files


def gallery_update(gallery: dict[int, tuple[str, str]]) -> dict[str, Any]:
    """The finished outputs in input order; the gallery is hidden while empty, so it never shows a blank box."""
    return gr.update(value=[gallery[index] for index in sorted(gallery)], visible=bool(gallery))


def table(inputs: Sequence[Any], states: Sequence[tuple[ItemResult | None, str]]) -> list[list[Any]]:
    return [row(item.name, result, state) for item, (result, state) in zip(inputs, states, strict=True)]


def row(name: str, result: ItemResult | None, state: str) -> list[Any]:
    if result is None:
        return [name, state, "", "", ""]
    if result.status == "completed":
        size = f"{result.metadata.get('width')} x {result.metadata.get('height')}"
        return [name, "Completed", size, f"{result.seconds:.2f}", ""]
    return [name, "Failed", "", f"{result.seconds:.2f}", f"{result.error} {result.hint or ''}".strip()]


def batch_summary(manifest: dict[str, Any]) -> str:
    """Success only when every file succeeded; a partial or failed batch says so, and lists what failed."""
    count, completed, failed = manifest["count"], manifest["completed"], manifest["failed"]
    if not failed:
        summary = f"**Done: all {count} completed.**"
    elif not completed:
        summary = f"**Failed: none of the {count} files could be processed.**"
    else:
        summary = f"**Partly done: {completed} completed, {failed} failed** of {count}."
    failures = [item for item in manifest["items"] if item["status"] == "failed"]
    if failures:
        summary += "\n\n" + "\n".join(f"- `{item['filename']}`: {item['error']} *{item.get('hint') or ''}*" for item in failures)
    return summary


def _json(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2).encode()
