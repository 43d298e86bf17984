"""The UI's event handlers: read the widgets, call the core (the pipeline; the job store for the batch tab), shape
Gradio outputs.

The batch tab is a durable job (bgremove.batch.jobs), the same as POST /api/jobs: `submit` queues it, `poll` shows
its progress each second, `cancel` stops it, and a reloaded page `view`s it again by id. The job's files live in
DATA_DIR; this process keeps only thumbnails, the zip and the manifest it hands to the browser.

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
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, TypeVar

import gradio as gr
from PIL import Image

from bgremove.batch.engine import inputs_from_files
from bgremove.batch.jobs import FINAL_STATUSES, Job, JobItem, JobNotFound, JobRunner, check_model
from bgremove.core import codecs
from bgremove.core.errors import BgRemoveError, CorruptImage, ImageTooLarge, StorageFull, UnsupportedFormat
from bgremove.core.options import SIZE_MEGAPIXELS, RemovalOptions, parse_color
from bgremove.core.pipeline import Result, remove_background
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from bgremove.web.admission import Admission
from bgremove.web.errors import client_hint
from bgremove.web.intake import read_image_paths
from bgremove.web.jobs import JOB_ID
from bgremove.web.ui_controls import SWATCHES, WHITE, ControlSet, payload_name, payload_path
from bgremove.web.ui_files import job_dir, job_view_dir, read_upload, save, save_with

log = logging.getLogger(__name__)
T = TypeVar("T")
Hints = tuple[bytes | None, bytes | None]  # touch-up strokes: (keep mask, remove mask), see ui_touchup
NO_HINTS: Hints = (None, None)

FORMAT_NAMES = {"png": "PNG", "jpg": "JPG", "webp": "WebP", "zip": "ZIP"}
TABLE_HEADERS = ["file", "status", "size", "seconds", "error / hint"]
GALLERY_LIMIT = 48  # thumbnails shown of a job's outputs (every output is in the zip)
THUMBNAIL_SIDE = 512
FAILURES_LISTED = 20  # failed files named in the summary (the table and the manifest list them all)
UNEXPECTED = "Something went wrong on the server while processing this request."
UNEXPECTED_HINT = "Try again; if it keeps happening, report it with the time of the request (the server log has the details)."
NO_SUBJECT = (
    "**No clear subject found** (confidence {confidence:.2f}): the cutout may be empty or wrong. "
    "Try another model, a photo with a clear subject, or crop closer to it."
)


def explain(exc: BaseException) -> tuple[str, str]:
    """Any exception -> (message, hint) fit for a person: our errors as they are, the rest logged and summarised."""
    if isinstance(exc, BgRemoveError):
        return exc.message, client_hint(exc)  # a browser cannot act on the server's paths either
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

# Above this many pixels the result is first shown at this output size, then the full-size file is offered.
PREVIEW_ABOVE_PIXELS = 3_000_000
PREVIEW_SIZE = "medium"
PREPARING = "Preview ready; preparing the full-size file..."
# A problem with the photo itself: shown where the photo was, since no option change can fix it.
PHOTO_PROBLEMS = (UnsupportedFormat, CorruptImage, ImageTooLarge)
COLOUR_NAMES: dict[tuple[int, ...], str] = {
    parse_color(colour)[:3]: name.replace("-", " ") for name, colour in {**SWATCHES, "white": WHITE}.items()
}


def describe_output(result: Result, options: RemovalOptions, bg_image: bool) -> str:
    """What will be downloaded, in a person's words ("JPG on white", "transparent PNG")."""
    fmt = FORMAT_NAMES.get(result.format, result.format.upper())
    if result.format == "zip":
        return "ZIP with a colour JPG and its black-and-white mask"
    mode = Image.open(io.BytesIO(result.data)).mode  # reads the header only
    if mode in ("L", "LA", "I;16"):
        return f"black-and-white mask ({fmt})"
    if bg_image:
        return f"{fmt} on your background image"
    if options.bg_color:
        colour = COLOUR_NAMES.get(tuple(options.bg_color[:3]), "your colour")
        return f"{fmt} on {colour}" + (", partly see-through" if mode in ("RGBA", "PA") else "")
    return f"transparent {fmt}" if mode in ("RGBA", "PA") else f"{fmt} on white"


def preview_bytes(result: Result) -> tuple[bytes, str]:
    """What the browser can show of the output: the output itself, or a zip's color.jpg."""
    if result.format != "zip":
        return result.data, result.extension
    return zip_colour_image(result.data)


def zip_colour_image(data: bytes) -> tuple[bytes, str]:
    """The colour image of a format=zip output (color.jpg beside alpha.png) and its extension."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        name = next((n for n in archive.namelist() if n.lower().endswith(".jpg")), archive.namelist()[0])
        return archive.read(name), PurePath(name).suffix.lstrip(".") or "jpg"


def needs_preview(photo: str, options: RemovalOptions) -> bool:
    """Whether the full-size output is slow enough to show a medium-size preview first (a large photo, output at
    more than the preview's size); reads the image header only, and a file that is no image gets no preview."""
    budget = SIZE_MEGAPIXELS.get(options.size)
    if budget is not None and budget <= (SIZE_MEGAPIXELS[PREVIEW_SIZE] or 0.0):
        return False
    try:
        with Image.open(photo) as image:
            return image.width * image.height > PREVIEW_ABOVE_PIXELS
    except Exception:
        return False


def status_line(result: Result, what: str, reused: bool) -> str:
    """Done, how long it took and what the file is; a re-composed result says the model did not run again."""
    line = f"Done in **{result.seconds:.2f} s**: {what}, {result.width} × {result.height} px."
    if reused:
        line += " (The cutout was reused: the model did not run again.)"
    if not result.foreground_found:
        line += "\n\n" + NO_SUBJECT.format(confidence=result.confidence)
    return line


@dataclass(frozen=True)
class SingleView:
    """What the single-image tab shows after a photo arrives or an option changes."""

    status: str  # next to the result: progress, done, or a failure's message and hint
    result: tuple[str, str] | None = None  # (photo, preview) for the before/after slider
    download: str | None = None  # the one file offered for download
    download_label: str = "Download"
    metadata: dict[str, Any] | None = None
    photo_problem: str = ""  # the photo itself is unusable: shown where the photo was, and the photo is cleared

    @classmethod
    def failed(cls, exc: BaseException, on_arrival: bool) -> SingleView:
        if on_arrival and isinstance(exc, PHOTO_PROBLEMS):
            message, hint = explain(exc)
            return cls(status="", photo_problem=f"**{message}**\n\n{hint}".strip())
        return cls(status=failure(exc))


# --- what the batch tab shows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchView:
    """The batch tab's state for one job (or none: `job_id` ""). A field left None leaves that part as shown."""

    job_id: str
    status: str
    rows: list[list[Any]] | None = None
    gallery: list[tuple[str, str]] | None = None
    zip_path: str | None = None  # Download All: offered once the job is final and a file completed
    json_path: str | None = None  # the manifest, once the job is final
    active: bool | None = False  # queued or running: keep polling, offer Cancel (None: as it was)
    signature: str = ""  # what this view was built from; the same signature on the next poll draws nothing

    @classmethod
    def message(cls, status: str) -> BatchView:
        """No job attached: an empty table and this line (a refusal's message and hint, or a prompt)."""
        return cls(job_id="", status=status, rows=[], gallery=[])


# --- handlers -------------------------------------------------------------------------------------------------


@dataclass
class UiHandlers:
    """The handlers of one app: the settings, session cache and job runner arrive from `build_ui`, never from globals."""

    settings: Settings
    cache: SessionCache
    jobs: JobRunner
    admission: Admission | None = None  # the app's gate (build_ui passes it); None: a gate of these handlers' own

    def __post_init__(self) -> None:
        self.gate = self.admission or Admission.for_settings(self.settings)

    def read_bg_image(self, path: str | None) -> bytes | None:
        return read_image_paths({"bg_image": path}, self.settings).get("bg_image")

    # single image

    def single(
        self, controls: ControlSet, upload: Any, values: Sequence[Any], on_arrival: bool = False, hints: Hints = NO_HINTS
    ) -> SingleView:
        """The single-image tab's result for the photo with the options as they stand (the last of `single_steps`)."""
        return list(self.single_steps(controls, upload, values, on_arrival, hints))[-1]

    def single_steps(
        self, controls: ControlSet, upload: Any, values: Sequence[Any], on_arrival: bool = False, hints: Hints = NO_HINTS
    ) -> Iterator[SingleView]:
        """The single-image tab's one handler, step by step: a large photo first shows a medium-size preview, then
        offers its full-size file; a small one is done in one step.

        Called when a photo arrives (`on_arrival`: a photo that cannot be read is explained where it was) and on
        every option change; the prediction cache turns a change of background, format or crop into a re-compose,
        without running the model again. `hints`: the touch-up's (keep mask, remove mask), kept across option changes.
        """
        photo = payload_path(upload)
        if not photo:
            yield SingleView(status="")
            return
        shown: Path | None = None
        reused: bool | None = None
        try:
            options, bg_path = controls.read(values)
            bg_image = self.read_bg_image(bg_path)
            filename = payload_name(upload) or "image"
            data = read_upload(photo, self.settings)
            steps = [options]
            if needs_preview(photo, options):
                steps.insert(0, options.model_copy(update={"size": PREVIEW_SIZE}))
            for step in steps:
                with self.gate.slot("/ui"):  # the in-flight limit every door shares: busy is a message, not a queue
                    result = remove_background(
                        data,
                        filename,
                        step,
                        settings=self.settings,
                        cache=self.cache,
                        bg_image=bg_image,
                        keep_mask=hints[0],
                        remove_mask=hints[1],
                    )
                reused = result.prediction_reused if reused is None else reused
                folder = job_dir()
                name = codecs.output_name(filename, result.extension, suffix="-nobg")
                target = save(result.data, folder, name)
                if shown is None:  # the first step's image stays on screen: the browser need not load a 12 MP file
                    preview, preview_ext = preview_bytes(result)
                    shown = (
                        target
                        if preview is result.data
                        else save(preview, folder / "preview", f"{PurePath(name).stem}.{preview_ext}")
                    )
                if step is not options:
                    yield SingleView(status=PREPARING, result=(photo, str(shown)))
            what = describe_output(result, options, bg_image is not None)
        except Exception as exc:  # every failure is a message and a hint on the page, never a toast
            yield SingleView.failed(exc, on_arrival)
            return
        fmt = FORMAT_NAMES.get(result.format, result.format.upper())
        yield SingleView(
            status=status_line(result, what, bool(reused)),
            result=(photo, str(shown)),
            download=str(target),
            download_label=f"Download {fmt}",
            metadata={**result.metadata(), "output": name},
        )

    # batch: a durable job (bgremove.batch.jobs) the tab submits, then polls

    def submit(self, controls: ControlSet, uploads: Sequence[Any], values: Sequence[Any], owner: str = "") -> BatchView:
        """Batch tab -> a queued job (the same inputs and checks as POST /api/jobs), shown at once."""
        files = upload_files(*uploads)
        if not files:
            return BatchView.message("Add images, a folder or a zip first.")
        try:
            options, bg_path = controls.read(values)
            check_model(options, self.settings)
            bg_image = self.read_bg_image(bg_path)
            with ExitStack() as stack:
                inputs = inputs_from_files([(name, stack.enter_context(open(path, "rb"))) for name, path in files], self.settings)
            job = self.jobs.store.submit(inputs, options, owner=owner, bg_image=bg_image)
        except Exception as exc:  # refused up front (options, model, quota, queue full): nothing was queued
            return BatchView.message(failure(exc))
        self.jobs.wake()
        return self.view(job.id, owner)

    def view(self, job_id: str, owner: str) -> BatchView:
        """What the tab shows of a job now (on submit, cancel, and when a reloaded page reattaches)."""
        return self.poll(job_id, owner, seen="") or BatchView.message("")

    def poll(self, job_id: str, owner: str, seen: str) -> BatchView | None:
        """The timer's tick: the job's view, or None when nothing changed since the view whose signature is `seen`.

        An unknown job (a wrong id in the URL, another key's job, one deleted after JOB_RETENTION_HOURS) is
        forgotten with the store's message; any other failure leaves the job attached, so the next poll retries.
        """
        try:
            if not JOB_ID.fullmatch(job_id or ""):
                raise JobNotFound(f"There is no job {job_id[:64]!r}.")
            summary = self.jobs.store.get(job_id, owner, items=False)
            signature = f"{summary.status}:{summary.updated}:{summary.done}"
            if signature == seen:
                return None
            job = self.jobs.store.get(job_id, owner)
            folder = job_view_dir(job.id)
            gallery = self.gallery(job, folder)
            zip_path = json_path = None
            if job.status in FINAL_STATUSES:
                zip_path, json_path = self.result_files(job, folder)
        except JobNotFound as exc:
            return BatchView.message(failure(exc))
        except Exception as exc:
            return BatchView(job_id=job_id, status=failure(exc), active=None)
        return BatchView(
            job_id=job.id,
            status=job_status(job),
            rows=job_rows(job),
            gallery=gallery,
            zip_path=str(zip_path) if zip_path else None,
            json_path=str(json_path) if json_path else None,
            active=job.status not in FINAL_STATUSES,
            signature=signature,
        )

    def cancel(self, job_id: str, owner: str) -> BatchView:
        """Cancel button: a queued or running job stops after its current file; the files done stay in its zip."""
        try:
            if self.jobs.store.cancel(job_id, owner):  # never deletes: a job that just ended keeps its results
                self.jobs.notify()
        except Exception as exc:
            return BatchView(job_id=job_id, status=failure(exc), active=None)
        return self.view(job_id, owner)

    def gallery(self, job: Job, folder: Path) -> list[tuple[str, str]]:
        """Thumbnails of the first GALLERY_LIMIT finished outputs, made once per job and process."""
        shown: list[tuple[str, str]] = []
        for item in job.items:
            if len(shown) >= GALLERY_LIMIT:
                break
            if item.status != "completed" or not item.output:
                continue
            thumbnail = folder / "preview" / f"{item.index}.png"
            if not thumbnail.exists():
                try:
                    data = self.jobs.store.output_path(job.id, item.output).read_bytes()
                    save(thumbnail_png(data, item.output), thumbnail.parent, thumbnail.name)
                except (OSError, ValueError, zipfile.BadZipFile) as exc:  # a missing or odd output: no thumbnail
                    log.warning("No preview for %s of job %s: %s", item.output, job.id, exc)
                    continue
            shown.append((str(thumbnail), item.output))
        return shown

    def result_files(self, job: Job, folder: Path) -> tuple[Path | None, Path]:
        """The job's result zip (as GET /api/jobs/{id}/result) and its manifest, built once per state of the job.

        A file the worker was still on when the job was cancelled lands after the cancel and changes `updated`:
        the next view builds the zip again, with it. The zip is offered only when a file completed.
        """
        built = folder / f"result-{job.updated:.6f}"
        zip_path = built / f"bgremove-job-{job.id}.zip"
        json_path = built / f"bgremove-job-{job.id}.json"
        if not (zip_path.exists() and json_path.exists()):
            _, manifest = save_with(built, zip_path.name, lambda handle: self.jobs.store.write_result(job.id, job.owner, handle))
            save(_json(manifest), built, json_path.name)
        return (zip_path if job.completed else None), json_path


def upload_files(*uploads: Any) -> list[tuple[str, str]]:
    """(original name, server path) of every file in gr.File payloads (one, or a list)."""
    files: list[tuple[str, str]] = []
    for upload in uploads:
        for item in upload if isinstance(upload, list) else [upload]:
            path = payload_path(item)
            if path:
                files.append((payload_name(item) or PurePath(path).name, path))
    return files


def job_rows(job: Job) -> list[list[Any]]:
    """The table: one row per input, in input order; a running job's first pending file is the one in work."""
    current = next((item.index for item in job.items if item.status == "pending"), None) if job.status == "running" else None
    return [job_row(item, item.index == current) for item in job.items]


def job_row(item: JobItem, processing: bool) -> list[Any]:
    if item.status == "pending":
        return [item.filename, "Processing" if processing else "Queued", "", "", ""]
    if item.status == "completed":
        size = f"{item.metadata.get('width')} x {item.metadata.get('height')}"
        return [item.filename, "Completed", size, f"{item.seconds:.2f}", ""]
    label = "Cancelled" if item.status == "cancelled" else "Failed"
    seconds = f"{item.seconds:.2f}" if item.seconds else ""
    return [item.filename, label, "", seconds, f"{item.error or ''} {item.hint or ''}".strip()]


def job_status(job: Job) -> str:
    """Progress while the job is queued or running, then the summary."""
    if job.status == "queued":
        line = f"**Queued:** {job.done} of {job.total} done, waiting for a free worker."
    elif job.status == "running":
        line = f"**Processing:** {job.done} of {job.total} done" + (f", {job.failed} failed." if job.failed else ".")
    else:
        return job_summary(job)
    return f"{line}\n\nJob `{job.id}` keeps running if you reload or close this page; the address brings it back."


def job_summary(job: Job) -> str:
    """Success only when every file succeeded; a partial, failed or cancelled job says so, and lists what failed."""
    count, completed, failed = job.total, job.completed, job.failed
    if job.status == "cancelled":
        summary = f"**Cancelled:** {completed} of {count} completed before the cancel" + (
            "; they are in the zip." if completed else "."
        )
    elif job.error:
        summary = f"**Failed:** {job.error} {job.hint or ''}".strip() + f" ({completed} of {count} completed.)"
    elif not failed:
        summary = f"**Done: all {count} completed.**"
    elif not completed:
        summary = f"**Failed: none of the {count} files could be processed.**"
    else:
        summary = f"**Partly done: {completed} completed, {failed} failed** of {count}."
    failures = [item for item in job.items if item.status == "failed" and item.error]
    if failures and not job.error:
        lines = [f"- `{item.filename}`: {item.error} *{item.hint or ''}*" for item in failures[:FAILURES_LISTED]]
        if len(failures) > FAILURES_LISTED:
            lines.append(f"- ... and {len(failures) - FAILURES_LISTED} more (see the manifest).")
        summary += "\n\n" + "\n".join(lines)
    return summary


def thumbnail_png(data: bytes, name: str) -> bytes:
    """A PNG at most THUMBNAIL_SIDE px on its longer side, transparency kept; a zip output shows its color.jpg."""
    if PurePath(name).suffix.lower() == ".zip":
        data = zip_colour_image(data)[0]
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        shown = image if image.mode in ("RGB", "RGBA", "L", "LA") else image.convert("RGBA")
        buffer = io.BytesIO()
        shown.save(buffer, "PNG")
    return buffer.getvalue()


def _json(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2).encode()
