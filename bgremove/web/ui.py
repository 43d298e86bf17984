"""The Gradio Blocks: Single image and Batch tabs, plus /remove and /remove_batch for gradio_client and MCP.

The single-image tab is one screen: a photo dropped on the left is processed at once; the before/after result is
beside it (under it on a phone) with the common choices (background, format, crop) and one download button right
under it; every other option folds away under "More options", provenance and metadata under "Details". Each option
change re-composes the same photo, which the prediction cache answers without running the model again.

Layout only. The option controls come from the schema (`ui_controls.ControlSet`), the handlers call the core
(`ui_handlers`), the public endpoints are built from the schema too (`ui_api`). The app factory mounts this with
`css=CSS` (Gradio 6 takes css at mount time) and starts `start_sweeper`; `remove_work_files` runs at shutdown.

The Batch tab submits a durable job to the app's JobRunner and polls it every POLL_SECONDS; the job's id lives in
the address (?job=ID) and in the browser's localStorage, so a reload (or a restart of the server) reattaches.
With API_KEYS set, `ui_login`'s KeyLogins is the login, and a user's jobs belong to their key's owner, exactly as
if they had been submitted to /api/jobs with that key.
"""

from __future__ import annotations

import hmac
import threading
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.components import Component

from bgremove.batch.jobs import JobRunner
from bgremove.core.errors import BgRemoveError
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from bgremove.web.admission import Admission
from bgremove.web.keys import matching_key
from bgremove.web.ui_api import add_api_endpoints
from bgremove.web.ui_controls import SWATCHES, ControlContext, ControlSet, payload_path
from bgremove.web.ui_files import Expired, remove_work_files, start_sweeper, sweep_expired
from bgremove.web.ui_handlers import TABLE_HEADERS, BatchView, SingleView, UiHandlers, failure, shielded
from bgremove.web.ui_models import footer, model_choices, model_details, model_info
from bgremove.web.ui_touchup import editor_background, read_hints, strokes_to_hints, touchup_panel

__all__ = [
    "CSS",
    "LOGIN_MESSAGE",
    "KeyLogins",
    "LoginRequired",
    "build_ui",
    "job_owner",
    "remove_work_files",
    "start_sweeper",
    "sweep_expired",
    "ui_login",
]

ASSETS = Path(__file__).resolve().parents[2] / "assets"
EXAMPLES = [str(p) for p in sorted(ASSETS.glob("example-*.jpg"))]
POOL = "inference"  # one concurrency pool for single-image and API events (batch jobs run on the job runner)
POLL_SECONDS = 1.0  # how often the batch tab asks its job for progress
BROWSER_KEY = "bgremove-batch-job"  # localStorage key of this browser's last batch job
# The attached job in the address bar (?job=ID): a reload, a bookmark or a shared link brings the job back.
SET_JOB_IN_ADDRESS = """(job) => {
  const url = new URL(window.location.href);
  if (job) { url.searchParams.set("job", job); } else { url.searchParams.delete("job"); }
  window.history.replaceState(window.history.state, "", url);
}"""

# On a phone the result is under the photo: bring it (and the download under it) into view once it is there.
SHOW_RESULT_ON_A_PHONE = """() => {
  const status = document.getElementById("single-status");
  if (window.innerWidth <= 640 && status && /^Done/.test(status.innerText.trim())) {
    status.scrollIntoView({ behavior: "smooth", block: "start" });
  }
}"""
_CHECKERBOARD = "repeating-conic-gradient(#d9d9d9 0% 25%, #ffffff 0% 50%) 50% / 20px 20px"
_DARK_SWATCHES = {"black"}
CSS = f"""
/* Transparency shows as a checkerboard, in the before/after slider and the gallery. */
#single-result img, #batch-gallery img {{
  background: {_CHECKERBOARD} !important;
}}
#single-status, #batch-status {{ min-height: 1.5em; }}
#intro p {{ margin: 0; }}
/* A photo that cannot be used is explained where it was dropped. */
#single-photo-problem {{ border: 2px solid #d33; border-radius: 8px; padding: 12px 16px; background: #fff4f4; }}
#single-download {{ font-size: 1.05em; }}
/* A box option (margins, region) reads like the other controls' labels, not like a grey panel. */
.box-option .box-label {{ background: var(--block-background-fill); padding: 8px 12px 0; }}
.box-option .box-label p {{ font-size: var(--block-info-text-size); color: var(--block-info-text-color); }}
.box-option .box-label strong {{ color: var(--block-label-text-color); }}
/* The picked colour is visible even when it is white on a white card. */
.bg-picker input[type=color], .bg-picker button {{ border: 1px solid #888 !important; }}
.swatch {{ border: 1px solid #888 !important; min-height: 32px; }}
{"".join(f".swatch-{name} {{ background: {colour} !important; color: {'#fff' if name in _DARK_SWATCHES else '#222'} !important; }}" for name, colour in SWATCHES.items())}
/* On a phone the photo and the result share the screen with the controls under them. */
@media (max-width: 640px) {{
  #single-photo, #single-result {{ height: 300px !important; }}
  #single-photo img, #single-result img {{ max-height: 260px !important; }}
}}
/* A control that only matters while its flag is on (alpha-matting sliders, crop margin) looks inactive. */
.dependent:has(:disabled) {{ opacity: 0.45; }}
/* On a phone a dropdown's text must not run under its arrow. */
input[role=combobox] {{ text-overflow: ellipsis; padding-right: 2.2em !important; min-width: 0; }}
/* The gallery leaves no blank space: rows of thumbnails at their own aspect ratio (Gradio's square cells
   letterbox every photo that is not square), and the block is only as tall as its rows. */
#batch-gallery .grid-wrap {{ height: auto !important; min-height: 0 !important; max-height: none !important; }}
#batch-gallery .grid-container {{ display: flex !important; flex-wrap: wrap; gap: 8px; }}
#batch-gallery .gallery-item {{ flex: 0 0 auto; height: 200px; width: auto; }}
#batch-gallery .thumbnail-item {{ height: 100% !important; width: auto !important; aspect-ratio: auto !important; }}
#batch-gallery .thumbnail-item img {{ height: 100% !important; width: auto !important; object-fit: contain; }}
"""


class KeyLogins:
    """The UI's login when API_KEYS is set: any user name, an API key as the password.

    Gradio keeps only the user name of a login, but a job belongs to the key's owner (the same keyed hash
    /api/jobs uses), so each name stays tied to the key it first logged in with: a second key cannot log in
    under that name (it would see the first key's jobs) until the server restarts, which also ends every login.
    """

    def __init__(self, settings: Settings) -> None:
        self._keys = list(settings.api_keys)
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, username: str, password: str) -> bool:
        key = matching_key(password, self._keys)  # the one key reader, as the REST guards read a header
        if key is None:
            return False
        with self._lock:
            bound = self._names.setdefault(username, key)
        return hmac.compare_digest(bound.encode(), key.encode())

    def key_of(self, username: str | None) -> str | None:
        """The API key `username` logged in with (None: not logged in through this object)."""
        with self._lock:
            return self._names.get(username) if username is not None else None


def ui_login(settings: Settings) -> KeyLogins:
    """Gradio login when API_KEYS is set (pass it as mount_gradio_app's `auth`)."""
    return KeyLogins(settings)


LOGIN_MESSAGE = (
    "Enter a user name and one of the server's API keys as the password. A user name stays tied to the first key used with it."
)


class LoginRequired(BgRemoveError):
    """A batch event came without a login this UI knows (API_KEYS is set)."""

    default_hint = "Reload the page and log in again with your API key."


def job_owner(settings: Settings, runner: JobRunner, auth: Any, username: str | None) -> str:
    """The owner of the jobs this UI user submits and sees: the REST door's (`JobStore.owner_of` of the key)."""
    if not settings.api_keys:
        return ""
    key = auth.key_of(username) if isinstance(auth, KeyLogins) else None
    if key is None:
        raise LoginRequired("Batch jobs need the API key you logged in with, and this page's login is unknown.")
    return runner.store.owner_of(key)


def build_ui(
    settings: Settings, cache: SessionCache, jobs: JobRunner | None = None, admission: Admission | None = None
) -> gr.Blocks:
    """The whole UI for one app; settings, cache and job runner are the app's own (tests pass theirs).

    Without `jobs` the UI opens the job store of DATA_DIR itself and never starts workers: the app's runner,
    which holds DATA_DIR's lock, picks its jobs up at its next poll.
    """
    runner = jobs or JobRunner(settings, cache)
    gate = admission or Admission.for_settings(settings)  # the app's gate, shared with REST and jobs
    handlers = UiHandlers(settings, cache, runner, gate)
    # preprocess=False: the handlers get uploads as raw payloads and our pipeline decodes them (see payload_path).
    private: dict[str, Any] = {"api_visibility": "private", "concurrency_id": POOL, "preprocess": False}
    quick: dict[str, Any] = {"api_visibility": "private", "queue": False}
    ttl = settings.result_ttl_seconds
    with gr.Blocks(
        title="bgremove - background removal", delete_cache=(max(1, min(60, ttl // 2)), ttl), analytics_enabled=False
    ) as demo:
        gr.Markdown(
            "# bgremove\nDrop a photo: its background is removed at once. Files are deleted from the server after "
            f"{max(1, ttl // 60)} minutes (batch jobs after {settings.job_retention_hours:g} hours).",
            elem_id="intro",
        )
        # The last batch job of this browser, so that a reload finds it even without ?job= in the address. Outside
        # the tabs: a BrowserState inside an unopened tab is not read before the page's load event. The secret is
        # derived from DATA_DIR's store, so the value still decrypts after a restart (the jobs survive one too); it is
        # sent to the browser, and as an HMAC under the store's salt it reveals nothing of the salt or of any owner.
        saved_job = gr.BrowserState("", storage_key=BROWSER_KEY, secret=runner.store.owner_of(BROWSER_KEY))
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Single image", id="single"):
                with gr.Row(equal_height=False):
                    with gr.Column(min_width=320):
                        problem = gr.Markdown("", visible=False, elem_id="single-photo-problem")
                        photo = gr.Image(
                            label="Your photo (PNG, JPEG or WebP)",
                            type="filepath",
                            sources=["upload", "clipboard"],
                            height=440,
                            buttons=[],
                            placeholder="Drop a photo here, or click to choose one",
                            elem_id="single-photo",
                        )
                        # Touch-up: Keep / Remove strokes over the photo; every re-compose reads them (ui_touchup).
                        # Open, it takes the photo's place (the editor shows the same photo), so on a laptop the
                        # editor and the before/after view stand side by side and each stroke's effect is in view.
                        with gr.Accordion("Touch up", open=False, elem_id="single-touchup") as touch_section:
                            touch = touchup_panel()
                        if EXAMPLES:
                            gr.Examples(
                                EXAMPLES, inputs=[photo], label="No photo at hand? Try one of these", elem_id="single-examples"
                            )
                    with gr.Column(min_width=320):
                        status = gr.Markdown("", elem_id="single-status")
                        result = gr.ImageSlider(
                            label="Before / after",
                            type="filepath",
                            interactive=False,
                            height=440,
                            buttons=["fullscreen"],  # one download button, under the choices
                            elem_id="single-result",
                        )
                        placed: list[gr.DownloadButton] = []
                        single = option_panel(
                            "single",
                            settings,
                            between=lambda: placed.append(
                                gr.DownloadButton("Download", variant="primary", interactive=False, elem_id="single-download")
                            ),
                        )
                        download = placed[0]
                        with gr.Accordion("Details", open=False, elem_id="single-details"):
                            details = gr.Markdown(model_details(None, settings, cache), elem_id="single-model-details")
                            metadata = gr.JSON(label="About this result", elem_id="single-metadata")

                single_outputs = [result, download, metadata, status, problem, photo]

                def show_single(view: SingleView) -> tuple[Any, ...]:
                    """A SingleView as updates of `single_outputs`; an unusable photo is cleared and explained."""
                    offered = view.download is not None
                    return (
                        view.result,
                        gr.update(value=view.download, label=view.download_label, interactive=offered),
                        view.metadata,
                        view.status,
                        gr.update(value=view.photo_problem, visible=bool(view.photo_problem)),
                        gr.update(value=None) if view.photo_problem else gr.skip(),
                    )

                def arrive(upload: Any, *values: Any) -> Iterator[tuple[Any, ...]]:
                    if not payload_path(upload):  # the photo was removed: so is its result (a problem stays shown)
                        yield (None, gr.update(value=None, label="Download", interactive=False), None, "", gr.skip(), gr.skip())
                        return
                    for view in handlers.single_steps(single, upload, values, on_arrival=True):
                        yield show_single(view)

                def recompose(upload: Any, hints: str, *values: Any) -> Iterator[tuple[Any, ...]]:
                    if not payload_path(upload):  # nothing to apply the option (or the strokes) to yet
                        yield tuple(gr.skip() for _ in single_outputs)
                        return
                    try:
                        marks = read_hints(hints, settings.result_ttl_seconds)
                    except Expired as exc:
                        yield show_single(SingleView.failed(exc, on_arrival=False))
                        return
                    for view in handlers.single_steps(single, upload, values, hints=marks):
                        yield show_single(view)

                def working(upload: Any) -> tuple[Any, Any]:
                    """At once, before the work is queued: say what is happening, take an old problem away."""
                    if not payload_path(upload):
                        return gr.skip(), gr.skip()
                    return "Removing the background...", gr.update(value="", visible=False)

                photo.change(working, inputs=photo, outputs=[status, problem], preprocess=False, **quick).then(
                    arrive, inputs=[photo, *single.inputs], outputs=single_outputs, show_progress_on=[result], **private
                ).then(None, js=SHOW_RESULT_ON_A_PHONE, **quick).then(
                    # A new photo starts a new touch-up: the editor shows it, without strokes.
                    editor_background,
                    inputs=photo,
                    outputs=touch.editor,
                    preprocess=False,
                    **quick,
                )
                touch_section.expand(lambda: gr.update(visible=False), outputs=photo, **quick)
                touch_section.collapse(lambda: gr.update(visible=True), outputs=photo, **quick)
                # Each stroke (and undo, clear, eraser) becomes the hints; their change re-composes like an option.
                # (`input`, not `change`: Gradio 6.31's editor sends `change` only when its value is set, not per stroke.)
                gr.on(
                    [touch.editor.input, touch.editor.clear],
                    strokes_to_hints,
                    inputs=touch.editor,
                    outputs=touch.hints,
                    trigger_mode="always_last",
                    **quick,
                )
                gr.on(
                    [touch.hints.change, *[typing.cast(Any, component).change for component in single.inputs]],
                    recompose,
                    inputs=[photo, touch.hints, *single.inputs],
                    outputs=single_outputs,
                    trigger_mode="always_last",
                    show_progress="minimal",
                    show_progress_on=[status],
                    **private,
                )
            with gr.Tab("Batch", id="batch"):
                with gr.Row():
                    files = gr.File(label="Images or zips", file_count="multiple", elem_id="batch-files")
                    folder = gr.File(label="...or a whole folder", file_count="directory", elem_id="batch-folder")
                batch = option_panel("batch", settings)
                with gr.Row():
                    run_batch_button = gr.Button("Remove backgrounds", variant="primary", elem_id="batch-run", scale=3)
                    cancel_button = gr.Button("Cancel", variant="stop", interactive=False, elem_id="batch-cancel", scale=1)
                batch_status = gr.Markdown("", elem_id="batch-status")
                table = gr.Dataframe(
                    headers=TABLE_HEADERS,
                    value=[],
                    interactive=False,
                    wrap=True,
                    elem_id="batch-table",
                    column_widths=["20%", "11%", "11%", "8%", "50%"],
                )
                gallery = gr.Gallery(label="Results", height="auto", object_fit="contain", visible=False, elem_id="batch-gallery")
                with gr.Row():
                    zip_button = gr.DownloadButton("Download All (zip)", interactive=False, elem_id="batch-download-zip")
                    json_button = gr.DownloadButton("Download manifest (JSON)", interactive=False, elem_id="batch-download-json")
                # The attached job's id: a hidden textbox rather than gr.State, because the address bar is set
                # from it in the browser (gr.State never reaches the browser).
                job_box = gr.Textbox("", visible=False, elem_id="batch-job-id")
                # The signature of the view on screen: a poll that finds the same draws nothing. Not a gr.State: any
                # State makes Gradio hold a heartbeat stream open per page and per gradio_client, which delays a
                # server's shutdown by its graceful timeout.
                seen = gr.Textbox("", visible=False, elem_id="batch-seen")
                poll_timer = gr.Timer(POLL_SECONDS, active=False)
        page_footer = gr.Markdown(footer(cache), elem_id="footer")
        add_api_endpoints(settings, cache, POOL, gate)

        batch_outputs = [
            table,
            gallery,
            zip_button,
            json_button,
            batch_status,
            cancel_button,
            poll_timer,
            job_box,
            seen,
            saved_job,
        ]

        def show(view: BatchView | None) -> dict[Component, Any]:
            """A BatchView as updates of the batch outputs (a field left None, or no view at all, changes nothing)."""
            if view is None:
                return {seen: gr.skip()}  # Gradio reads an empty dict as one value, not as "no updates"
            nothing = gr.update(value=None, interactive=False)
            updates: dict[Component, Any] = {
                zip_button: gr.update(value=view.zip_path, interactive=True) if view.zip_path else nothing,
                json_button: gr.update(value=view.json_path, interactive=True) if view.json_path else nothing,
                batch_status: view.status,
                job_box: view.job_id,
                seen: view.signature,
                saved_job: view.job_id,
            }
            if view.rows is not None:
                updates[table] = view.rows
            if view.gallery is not None:
                updates[gallery] = gr.update(value=view.gallery, visible=bool(view.gallery))
            if view.active is not None:
                updates[cancel_button] = gr.update(interactive=view.active)
                updates[poll_timer] = gr.Timer(active=view.active)
            return updates

        def owner(request: gr.Request | None) -> str:
            # demo.auth is what mount_gradio_app was given as `auth` (ui_login's KeyLogins when API_KEYS is set).
            return job_owner(settings, runner, demo.auth, request.username if request is not None else None)

        def unknown_login(job_id: str, exc: BgRemoveError) -> dict[Component, Any]:
            """The job stays attached (in the address too) for when the page is logged in again; polling stops."""
            return show(BatchView(job_id=job_id, status=failure(exc), active=False))

        def submit(request: gr.Request, file_list: Any, folder_list: Any, *values: Any) -> dict[Component, Any]:
            # `request` first: Gradio fills a gr.Request parameter by position, not after *values.
            try:
                who = owner(request)
            except BgRemoveError as exc:
                return show(BatchView.message(failure(exc)))
            return show(handlers.submit(batch, (file_list, folder_list), values, who))

        def poll(job_id: str, signature: str, request: gr.Request) -> dict[Component, Any]:
            if not job_id:  # nothing attached: stop polling, leave the page as it is
                return {poll_timer: gr.Timer(active=False)}
            try:
                return show(handlers.poll(job_id, owner(request), signature))
            except BgRemoveError as exc:
                return unknown_login(job_id, exc)

        def cancel(job_id: str, request: gr.Request) -> dict[Component, Any]:
            try:
                return show(handlers.cancel(job_id, owner(request)))
            except BgRemoveError as exc:
                return unknown_login(job_id, exc)

        def reattach(stored: str | None, request: gr.Request) -> dict[Component, Any]:
            """On page load: the job in the address (?job=ID), else this browser's last one, as it stands now."""
            from_url = str(request.query_params.get("job") or "").strip()
            job_id = from_url or str(stored or "").strip()
            if not job_id:
                return show(None)
            try:
                view = handlers.view(job_id, owner(request))
            except BgRemoveError as exc:
                return {**unknown_login(job_id, exc), tabs: gr.Tabs(selected="batch")}
            if not view.job_id and not from_url:  # this browser's last job is gone (retention, another login): quietly
                return show(BatchView.message(""))
            # The Batch tab opens on whatever job was found (the address keeps its id, so every reload agrees).
            return {**show(view), tabs: gr.Tabs(selected="batch")}

        # Polling stops while uploading: a poll of the previous job answering late must not reattach it.
        run_batch_button.click(
            lambda: ("Uploading...", gr.Timer(active=False)), outputs=[batch_status, poll_timer], **quick
        ).then(
            submit,
            inputs=[files, folder, *batch.inputs],
            outputs=batch_outputs,
            api_visibility="private",
            concurrency_id="batch-submit",  # reading and storing uploads: never waits behind inference
            preprocess=False,
        )
        cancel_button.click(cancel, inputs=job_box, outputs=batch_outputs, **quick)
        poll_timer.tick(poll, inputs=[job_box, seen], outputs=batch_outputs, **quick)
        job_box.change(None, inputs=job_box, js=SET_JOB_IN_ADDRESS, **quick)
        demo.load(reattach, inputs=saved_job, outputs=[*batch_outputs, tabs], **quick)

        models = [single.controls["model"].main, batch.controls["model"].main]
        infos = [single.controls["model"].extras["info"], batch.controls["model"].extras["info"]]

        def refresh(*chosen: str | None) -> tuple[Any, ...]:
            """On page load: what is on disk (or failed to download) now, and what really runs."""
            choices = model_choices(settings)
            return (
                *[gr.Dropdown(choices=choices) for _ in models],
                *[model_info(name, settings) for name in chosen],
                model_details(chosen[0], settings, cache),
                footer(cache),
            )

        def keep() -> tuple[Any, ...]:
            return tuple(gr.skip() for _ in range(2 * len(models) + 2))

        demo.load(shielded(refresh, keep), inputs=models, outputs=[*models, *infos, details, page_footer], **quick)
        typing.cast(gr.Dropdown, models[0]).change(
            shielded(lambda name: model_details(name, settings, cache), gr.skip), inputs=models[0], outputs=details, **quick
        )
    demo.queue(max_size=settings.max_queue_size, default_concurrency_limit=settings.max_concurrent_inferences)
    blocks: gr.Blocks = demo
    return blocks


def option_panel(prefix: str, settings: Settings, between: Callable[[], None] | None = None) -> ControlSet:
    """The schema's controls for one tab (the model dropdown shows its weights' licence)."""
    return ControlSet.build(
        ControlContext(
            prefix=prefix,
            model_choices=model_choices(settings),
            default_model=settings.model_name,
            model_info=shielded(lambda name: model_info(name, settings), lambda: ""),
        ),
        between,
    )
