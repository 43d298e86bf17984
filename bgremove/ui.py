"""The Gradio Blocks app: Single image and Batch tabs, plus /remove and /remove_batch for gradio_client.

Thin: every callback reads its inputs, calls the core (pipeline / batch) and shapes the outputs.
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from bgremove import __version__
from bgremove.batch import BatchInput, BatchItemResult, build_manifest, inputs_from_zip, looks_like_zip, run_batch, write_zip
from bgremove.config import Settings, get_settings
from bgremove.errors import BgRemoveError, StorageFull
from bgremove.models import list_models
from bgremove.pipeline import RemovalOptions, parse_color, remove_background
from bgremove.sessions import get_cache

log = logging.getLogger(__name__)
ASSETS = Path(__file__).resolve().parents[1] / "assets"
EXAMPLES = [str(p) for p in sorted(ASSETS.glob("example-*.jpg"))]
POOL = "inference"  # one concurrency pool for single and batch events
WORK_ROOT = Path(tempfile.gettempdir()) / "bgremove-ui"
TABLE_HEADERS = ["file", "status", "size", "seconds", "error / hint"]

CSS = """
#cutout img, #compare img, #gallery img {
  background: repeating-conic-gradient(#d9d9d9 0% 25%, #ffffff 0% 50%) 50% / 20px 20px;
}
#status { min-height: 1.5em; }
"""


def model_choices(settings: Settings) -> list[tuple[str, str]]:
    """Dropdown labels say which models are on disk and which will download (with size)."""
    choices = []
    for entry in list_models(settings):
        where = "on disk" if entry.on_disk else f"downloads {entry.size_mb} MB"
        choices.append((f"{entry.name} ({where}) - {entry.good_for}", entry.name))
    return choices


def _job_dir() -> Path:
    """A fresh folder for one request's outputs (removed by the sweeper after RESULT_TTL_SECONDS)."""
    try:
        WORK_ROOT.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="job-", dir=WORK_ROOT))
    except OSError as exc:
        raise StorageFull(f"Cannot write results to {WORK_ROOT} ({exc.strerror}).") from exc


def _save(png: bytes, name: str) -> Path:
    target = _job_dir() / name
    try:
        target.write_bytes(png)
    except OSError as exc:
        target.unlink(missing_ok=True)  # never hand out a partial PNG
        raise StorageFull(f"Cannot write the result to {target.parent} ({exc.strerror}).") from exc
    return target


def sweep_expired(ttl: int) -> None:
    """Delete our result folders older than `ttl`, and Gradio's stray upload temp files (`tmp*` in its
    cache root, which Gradio 6.31 sometimes leaves after moving an upload); delete_cache handles the rest."""
    cutoff = time.time() - ttl
    if WORK_ROOT.is_dir():
        for job in WORK_ROOT.iterdir():
            if job.is_dir() and job.stat().st_mtime < cutoff:
                shutil.rmtree(job, ignore_errors=True)
    gradio_root = Path(gr.utils.get_upload_folder())
    if gradio_root.is_dir():
        for stray in gradio_root.glob("tmp*"):
            if stray.is_file() and stray.stat().st_mtime < cutoff:
                stray.unlink(missing_ok=True)


def start_sweeper(settings: Settings) -> threading.Thread:
    """Sweep every few seconds (half the TTL, at most a minute), for the life of the process."""
    ttl = settings.result_ttl_seconds

    def loop() -> None:
        while True:
            time.sleep(max(1, min(60, ttl // 2)))
            try:
                sweep_expired(ttl)
            except OSError as exc:
                log.warning("Could not delete expired results: %s", exc)

    thread = threading.Thread(target=loop, name="bgremove-sweeper", daemon=True)
    thread.start()
    return thread


def remove_work_files() -> None:
    """At shutdown: results are not kept across restarts (Gradio clears its own cache the same way)."""
    shutil.rmtree(WORK_ROOT, ignore_errors=True)


def ui_login(settings: Settings) -> Callable[[str, str], bool]:
    """Gradio login when API_KEYS is set: any user name, an API key as the password."""
    keys = [key.encode() for key in settings.api_keys]

    def check(_username: str, password: str) -> bool:
        return any(hmac.compare_digest(password.encode(), key) for key in keys)

    return check


def _options(model: str | None, alpha_matting: bool, fg: float, bg: float, erode: float, post_process: bool,
             only_mask: bool, bg_color: str | None) -> RemovalOptions:
    return RemovalOptions(
        model=model or None,
        alpha_matting=bool(alpha_matting),
        alpha_matting_foreground_threshold=int(fg),
        alpha_matting_background_threshold=int(bg),
        alpha_matting_erode_size=int(erode),
        post_process_mask=bool(post_process),
        only_mask=bool(only_mask),
        bg_color=parse_color(bg_color) if bg_color and bg_color.strip() else None,
    ).validate()


def _fill_color(fill: bool, color: str | None) -> str | None:
    """The UI's ColorPicker may give #rrggbb or rgba(r, g, b, a); pass None when filling is off."""
    if not fill or not color:
        return None
    color = color.strip()
    if color.startswith("rgb"):
        numbers = [float(part) for part in color[color.index("(") + 1 : color.index(")")].split(",")]
        alpha = numbers[3] if len(numbers) > 3 else 1.0
        return ",".join(str(round(v)) for v in numbers[:3]) + f",{round(alpha * 255 if alpha <= 1 else alpha)}"
    return color


def _read_limited(path: str, settings: Settings) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(settings.max_image_bytes + 1)  # the pipeline reports "too large" on the extra byte


# --- single image ------------------------------------------------------------------------------


def single_ui(photo: str | None, model: str, alpha_matting: bool, fg: float, bg: float, erode: float,
              post_process: bool, only_mask: bool, fill: bool, color: str | None) -> tuple[Any, ...]:
    """Single-image tab: cutout, before/after slider, download, and a status line."""
    if not photo:
        return None, None, gr.DownloadButton(value=None, interactive=False), "Upload a photo first."
    settings = get_settings()
    try:
        options = _options(model, alpha_matting, fg, bg, erode, post_process, only_mask, _fill_color(fill, color))
        result = remove_background(_read_limited(photo, settings), Path(photo).name, options)
        target = _save(result.png, result.output_name)
    except BgRemoveError as exc:
        return None, None, gr.DownloadButton(value=None, interactive=False), f"**Failed:** {exc.message} {exc.hint}"
    status = (f"Done in **{result.seconds:.2f} s** - {result.width} x {result.height} px - model `{result.model}` "
              f"(inference {result.stages['mask']:.2f} s)")
    return str(target), (photo, str(target)), gr.DownloadButton(value=str(target), interactive=True), status


def remove_image_background(image: str, model: str = "", alpha_matting: bool = False,
               alpha_matting_foreground_threshold: float = 240, alpha_matting_background_threshold: float = 10,
               alpha_matting_erode_size: float = 10, post_process_mask: bool = False, only_mask: bool = False,
               bg_color: str = "") -> str:
    """Remove the background of one image (PNG, JPEG or WebP). Returns the transparent PNG.

    Args:
        image: the photo to cut out.
        model: rembg model name (default: the server's REMBG_MODEL_NAME), e.g. isnet-general-use or u2net.
        alpha_matting: refine edges with alpha matting (slower).
        alpha_matting_foreground_threshold: 0-255, alpha matting's foreground threshold.
        alpha_matting_background_threshold: 0-255, alpha matting's background threshold.
        alpha_matting_erode_size: erosion size for alpha matting, in pixels.
        post_process_mask: smooth the mask boundary.
        only_mask: return the mask instead of the cutout.
        bg_color: fill the background with a colour, #rrggbb[aa] or r,g,b[,a]; empty keeps it transparent.
    """
    settings = get_settings()
    try:
        options = _options(model, alpha_matting, alpha_matting_foreground_threshold,
                           alpha_matting_background_threshold, alpha_matting_erode_size, post_process_mask,
                           only_mask, bg_color)
        result = remove_background(_read_limited(image, settings), Path(image).name, options)
        return str(_save(result.png, result.output_name))
    except BgRemoveError as exc:
        raise gr.Error(f"{exc.message} {exc.hint}".strip()) from exc


# --- batch -------------------------------------------------------------------------------------


def _batch_inputs(paths: list[str], settings: Settings) -> list[BatchInput]:
    inputs: list[BatchInput] = []
    for path in paths:
        file = Path(path)
        with open(file, "rb") as handle:
            is_zip = looks_like_zip(handle.read(4))
        if is_zip:
            prefix = "" if len(paths) == 1 else f"{file.stem}/"
            inputs.extend(inputs_from_zip(file, settings, prefix=prefix))
        else:
            inputs.append(BatchInput(file.name, path=file))
    return inputs


def _paths(*uploads: Any) -> list[str]:
    paths: list[str] = []
    for upload in uploads:
        if not upload:
            continue
        for item in upload if isinstance(upload, list) else [upload]:
            paths.append(item if isinstance(item, str) else getattr(item, "name", str(item)))
    return paths


def _row(name: str, result: BatchItemResult | None, state: str) -> list[Any]:
    if result is None:
        return [name, state, "", "", ""]
    if result.status == "completed":
        return [name, "Completed", f"{result.width} x {result.height}", f"{result.seconds:.2f}", ""]
    return [name, "Failed", "", f"{result.seconds:.2f}", f"{result.error} {result.hint or ''}".strip()]


def _run_batch_events(inputs: list[BatchInput], options: RemovalOptions, settings: Settings) -> Iterator[tuple[str, Any]]:
    """Run the batch in a worker thread and yield ("start", index) / ("done", result) events as they happen."""
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def work() -> None:
        try:
            for result in run_batch(inputs, options, settings=settings, on_start=lambda i: events.put(("start", i))):
                events.put(("done", result))
        except BgRemoveError as exc:
            events.put(("error", exc))
        finally:
            events.put(("end", None))

    threading.Thread(target=work, name="bgremove-ui-batch", daemon=True).start()
    while True:
        kind, payload = events.get()
        if kind == "end":
            return
        if kind == "error":
            raise payload
        yield kind, payload


def batch_ui(files: list[Any] | None, folder: list[Any] | None, model: str, alpha_matting: bool, fg: float, bg: float,
             erode: float, post_process: bool, only_mask: bool, fill: bool, color: str | None,
             progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, ...]]:
    """Batch tab: a live table of every file, a gallery, and Download All / Download JSON at the end."""
    settings = get_settings()
    no_download = gr.DownloadButton(value=None, interactive=False)
    paths = _paths(files, folder)
    if not paths:
        yield [], [], no_download, no_download, "Add images, a folder or a zip first."
        return
    try:
        options = _options(model, alpha_matting, fg, bg, erode, post_process, only_mask, _fill_color(fill, color))
        inputs = _batch_inputs(paths, settings)
        if len(inputs) > settings.max_batch_files:
            raise BgRemoveError(f"{len(inputs)} files; the limit is {settings.max_batch_files}.",
                                hint="Split the batch or raise MAX_BATCH_FILES.")
        job = _job_dir()
    except BgRemoveError as exc:
        yield [], [], no_download, no_download, f"**Failed:** {exc.message} {exc.hint}"
        return
    states: list[tuple[BatchItemResult | None, str]] = [(None, "Queued")] * len(inputs)
    finished: list[BatchItemResult] = []
    gallery: list[tuple[str, str]] = []
    zip_path = job / "bgremove-results.zip"
    progress(0, desc="Starting")
    yield [_row(i.name, None, "Queued") for i in inputs], [], no_download, no_download, f"0 of {len(inputs)} done"
    try:
        with zipfile.ZipFile(zip_path, "w") as archive:
            for kind, payload in _run_batch_events(inputs, options, settings):
                if kind == "start":
                    states[payload] = (None, "Processing")
                else:
                    result: BatchItemResult = payload
                    states[result.index] = (result, "")
                    if result.png is not None and result.output:
                        archive.writestr(result.output, result.png)
                        png_path = job / "png" / result.output
                        png_path.parent.mkdir(parents=True, exist_ok=True)
                        png_path.write_bytes(result.png)
                        gallery.append((str(png_path), result.output))
                        result.png = None
                    finished.append(result)
                    progress(len(finished) / len(inputs), desc=f"{len(finished)} of {len(inputs)}")
                rows = [_row(inputs[i].name, res, state) for i, (res, state) in enumerate(states)]
                yield rows, list(gallery), no_download, no_download, f"{len(finished)} of {len(inputs)} done"
            manifest = build_manifest(finished, options.model or settings.model_name)
            archive.writestr("manifest.json", json.dumps(manifest, indent=2))
        json_path = job / "bgremove-results.json"
        json_path.write_text(json.dumps(manifest, indent=2))
    except BgRemoveError as exc:  # the model itself is unavailable: nothing can be processed
        yield [], [], no_download, no_download, f"**Failed:** {exc.message} {exc.hint}"
        return
    except OSError as exc:  # disk full or read-only: no partial zip is offered
        shutil.rmtree(job, ignore_errors=True)
        yield [], [], no_download, no_download, f"**Failed:** cannot write results ({exc.strerror}). {StorageFull.default_hint}"
        return
    failed = [item for item in manifest["items"] if item["status"] == "failed"]
    summary = f"**{manifest['completed']} completed, {manifest['failed']} failed** of {manifest['count']}."
    if failed:
        summary += "\n\n" + "\n".join(f"- `{item['filename']}`: {item['error']} *{item['hint'] or ''}*" for item in failed)
    rows = [_row(inputs[i].name, res, state) for i, (res, state) in enumerate(states)]
    yield (rows, list(gallery), gr.DownloadButton(value=str(zip_path), interactive=True),
           gr.DownloadButton(value=str(json_path), interactive=True), summary)


def remove_backgrounds_batch(files: list[str], model: str = "") -> tuple[str, dict[str, Any]]:
    """Remove backgrounds from many images or a zip. Returns a zip (PNGs + manifest.json) and the manifest.

    Args:
        files: images (PNG, JPEG, WebP) and/or zips of images.
        model: rembg model name (default: the server's REMBG_MODEL_NAME).
    """
    settings = get_settings()
    try:
        options = RemovalOptions(model=model or None).validate()
        inputs = _batch_inputs(_paths(files), settings)
        if not inputs or len(inputs) > settings.max_batch_files:
            raise BgRemoveError(f"{len(inputs)} files; send 1 to {settings.max_batch_files}.")
        zip_path = _job_dir() / "bgremove-results.zip"
        try:
            with open(zip_path, "wb") as handle:
                manifest = write_zip(run_batch(inputs, options, settings=settings), handle, options.model or settings.model_name)
        except OSError as exc:
            zip_path.unlink(missing_ok=True)
            raise StorageFull(f"Cannot write the result zip ({exc.strerror}).") from exc
    except BgRemoveError as exc:
        raise gr.Error(f"{exc.message} {exc.hint}".strip()) from exc
    return str(zip_path), manifest


# --- layout ------------------------------------------------------------------------------------


def _option_controls() -> list[gr.components.Component]:
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            alpha_matting = gr.Checkbox(label="Alpha matting (finer hair and edges, slower)")
            post_process = gr.Checkbox(label="Smooth the mask (post-process)")
            only_mask = gr.Checkbox(label="Mask only")
        with gr.Row():
            fg = gr.Slider(0, 255, value=240, step=1, label="Foreground threshold")
            bg = gr.Slider(0, 255, value=10, step=1, label="Background threshold")
            erode = gr.Slider(0, 40, value=10, step=1, label="Erode size")
        with gr.Row():
            fill = gr.Checkbox(label="Fill the background with a colour")
            color = gr.ColorPicker(value="#ffffff", label="Background colour")
    return [alpha_matting, fg, bg, erode, post_process, only_mask, fill, color]


def _footer() -> str:
    cache = get_cache()
    provider = cache.active_provider() or "not loaded yet"
    return f"bgremove {__version__} - onnxruntime provider: `{provider}` - models loaded: {', '.join(cache.loaded_names()) or 'none'}"


def build_ui(settings: Settings | None = None) -> gr.Blocks:
    settings = settings or get_settings()
    choices = model_choices(settings)
    private: dict[str, Any] = {"api_visibility": "private", "concurrency_id": POOL}
    ttl = settings.result_ttl_seconds
    with gr.Blocks(title="bgremove - background removal", delete_cache=(max(1, min(60, ttl // 2)), ttl),
                   analytics_enabled=False) as demo:
        gr.Markdown("# bgremove\nRemove the background of PNG, JPEG and WebP photos. Results are transparent PNGs; "
                    f"uploads and results are deleted from the server after {max(1, ttl // 60)} minutes.")
        with gr.Tab("Single image", id="single"):
            with gr.Row(equal_height=False):
                with gr.Column():
                    photo = gr.Image(label="Photo", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                     height=400, elem_id="photo")
                    model = gr.Dropdown(choices, value=settings.model_name, label="Model", elem_id="model")
                    single_options = _option_controls()
                    run = gr.Button("Remove background", variant="primary", elem_id="run-single")
                    if EXAMPLES:
                        gr.Examples(EXAMPLES, inputs=[photo], label="Examples")
                with gr.Column():
                    status = gr.Markdown("", elem_id="status")
                    cutout = gr.Image(label="Cutout (transparent PNG)", type="filepath", format="png", image_mode="RGBA",
                                      interactive=False, height=400, elem_id="cutout")
                    compare = gr.ImageSlider(label="Before / after", type="filepath", format="png", image_mode=None, interactive=False,
                                             elem_id="compare")
                    download = gr.DownloadButton("Download PNG", interactive=False, elem_id="download-png")
            run.click(lambda: "Processing...", outputs=status, api_visibility="private", queue=False).then(
                single_ui, inputs=[photo, model, *single_options], outputs=[cutout, compare, download, status], **private
            )
        with gr.Tab("Batch", id="batch"):
            with gr.Row():
                files = gr.File(label="Images or zips", file_count="multiple", elem_id="batch-files")
                folder = gr.File(label="...or a whole folder", file_count="directory", elem_id="batch-folder")
            batch_model = gr.Dropdown(choices, value=settings.model_name, label="Model")
            batch_options = _option_controls()
            run_batch_button = gr.Button("Remove backgrounds", variant="primary", elem_id="run-batch")
            batch_status = gr.Markdown("", elem_id="batch-status")
            table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, wrap=True, elem_id="batch-table",
                                 column_widths=["20%", "11%", "11%", "8%", "50%"])
            gallery = gr.Gallery(label="Results", format="png", columns=5, height="auto", elem_id="gallery")
            with gr.Row():
                zip_button = gr.DownloadButton("Download All (zip)", interactive=False, elem_id="download-zip")
                json_button = gr.DownloadButton("Download JSON", interactive=False, elem_id="download-json")
            run_batch_button.click(
                batch_ui, inputs=[files, folder, batch_model, *batch_options],
                outputs=[table, gallery, zip_button, json_button, batch_status], **private,
            )
        footer = gr.Markdown(_footer(), elem_id="footer")
        # Named endpoints for gradio_client: hidden components, public API names.
        with gr.Row(visible=False):
            api_image = gr.File(label="image", type="filepath")
            api_model = gr.Textbox("", label="model")
            api_flags = [gr.Checkbox(label="alpha_matting"), gr.Number(240, label="alpha_matting_foreground_threshold"),
                         gr.Number(10, label="alpha_matting_background_threshold"),
                         gr.Number(10, label="alpha_matting_erode_size"), gr.Checkbox(label="post_process_mask"),
                         gr.Checkbox(label="only_mask"), gr.Textbox("", label="bg_color")]
            api_png = gr.File(label="png")
            api_files = gr.File(label="files", file_count="multiple", type="filepath")
            api_zip = gr.File(label="zip")
            api_manifest = gr.JSON(label="manifest")
            api_button = gr.Button()
            api_batch_button = gr.Button()
        api_button.click(remove_image_background, inputs=[api_image, api_model, *api_flags], outputs=api_png,
                         api_name="remove", concurrency_id=POOL)
        api_batch_button.click(remove_backgrounds_batch, inputs=[api_files, api_model], outputs=[api_zip, api_manifest],
                               api_name="remove_batch", concurrency_id=POOL)
        demo.load(lambda: (gr.Dropdown(choices=model_choices(settings)), gr.Dropdown(choices=model_choices(settings)), _footer()),
                  outputs=[model, batch_model, footer], api_visibility="private", queue=False)
    demo.queue(max_size=settings.max_queue_size, default_concurrency_limit=settings.max_concurrent_inferences)
    return demo
