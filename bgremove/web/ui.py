"""The Gradio Blocks: Single image and Batch tabs, plus /remove and /remove_batch for gradio_client and MCP.

Layout only. The option controls come from the schema (`ui_controls.ControlSet`), the handlers call the core
(`ui_handlers`), the public endpoints are built from the schema too (`ui_api`). The app factory mounts this with
`css=CSS` (Gradio 6 takes css at mount time) and starts `start_sweeper`; `remove_work_files` runs at shutdown.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from bgremove.web.ui_api import add_api_endpoints
from bgremove.web.ui_controls import SWATCHES, ControlContext, ControlSet
from bgremove.web.ui_files import remove_work_files, start_sweeper, sweep_expired
from bgremove.web.ui_handlers import TABLE_HEADERS, UiHandlers, shielded
from bgremove.web.ui_models import footer, model_choices, model_info

__all__ = ["CSS", "build_ui", "remove_work_files", "start_sweeper", "sweep_expired", "ui_login"]

ASSETS = Path(__file__).resolve().parents[2] / "assets"
EXAMPLES = [str(p) for p in sorted(ASSETS.glob("example-*.jpg"))]
POOL = "inference"  # one concurrency pool for single, batch and API events

_CHECKERBOARD = "repeating-conic-gradient(#d9d9d9 0% 25%, #ffffff 0% 50%) 50% / 20px 20px"
CSS = f"""
/* Transparency shows as a checkerboard, in the cutout, the before/after slider and the gallery (issue 17.8). */
#single-cutout img, #single-compare img, #batch-gallery img {{
  background: {_CHECKERBOARD} !important;
}}
#single-status, #batch-status {{ min-height: 1.5em; }}
/* The picked colour is visible even when it is white on a white card. */
.bg-picker input[type=color], .bg-picker button, .bg-picker .swatch {{ border: 1px solid #888 !important; }}
.swatch {{ border: 1px solid #888 !important; max-width: 40px; min-height: 32px; }}
{"".join(f".swatch-{name} {{ background: {colour} !important; }}" for name, colour in SWATCHES.items())}
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


def ui_login(settings: Settings) -> Callable[[str, str], bool]:
    """Gradio login when API_KEYS is set: any user name, an API key as the password."""
    keys = [key.encode() for key in settings.api_keys]

    def check(_username: str, password: str) -> bool:
        return any(hmac.compare_digest(password.encode(), key) for key in keys)

    return check


def build_ui(settings: Settings, cache: SessionCache) -> gr.Blocks:
    """The whole UI for one app; settings and cache are the app's own (tests pass theirs)."""
    handlers = UiHandlers(settings, cache)
    # preprocess=False: the handlers get uploads as raw payloads and our pipeline decodes them (see payload_path).
    private: dict[str, Any] = {"api_visibility": "private", "concurrency_id": POOL, "preprocess": False}
    quick: dict[str, Any] = {"api_visibility": "private", "queue": False}
    ttl = settings.result_ttl_seconds
    with gr.Blocks(
        title="bgremove - background removal", delete_cache=(max(1, min(60, ttl // 2)), ttl), analytics_enabled=False
    ) as demo:
        gr.Markdown(
            "# bgremove\nRemove the background of PNG, JPEG and WebP photos: a transparent cutout, or a "
            "ready-to-use JPG, WebP or PNG on a colour or image. Uploads and results are deleted from the server "
            f"after {max(1, ttl // 60)} minutes."
        )
        with gr.Tab("Single image", id="single"):
            with gr.Row(equal_height=False):
                with gr.Column():
                    photo = gr.Image(
                        label="Photo", type="filepath", sources=["upload", "clipboard"], height=400, elem_id="single-photo"
                    )
                    single = option_panel("single", settings)
                    run = gr.Button("Remove background", variant="primary", elem_id="single-run")
                    if EXAMPLES:
                        gr.Examples(EXAMPLES, inputs=[photo], label="Examples")
                with gr.Column():
                    status = gr.Markdown("", elem_id="single-status")
                    cutout = gr.Image(label="Cutout", type="filepath", interactive=False, height=400, elem_id="single-cutout")
                    compare = gr.ImageSlider(label="Before / after", type="filepath", interactive=False, elem_id="single-compare")
                    download = gr.DownloadButton("Download", interactive=False, elem_id="single-download")
                    metadata = gr.JSON(label="Metadata", elem_id="single-metadata")

            def run_single(upload: Any, *values: Any) -> tuple[Any, ...]:
                return handlers.single(single, upload, values)

            run.click(lambda: "Processing...", outputs=status, **quick).then(
                run_single, inputs=[photo, *single.inputs], outputs=[cutout, compare, download, metadata, status], **private
            )
            photo.change(lambda: "", outputs=status, **quick)
        with gr.Tab("Batch", id="batch"):
            with gr.Row():
                files = gr.File(label="Images or zips", file_count="multiple", elem_id="batch-files")
                folder = gr.File(label="...or a whole folder", file_count="directory", elem_id="batch-folder")
            batch = option_panel("batch", settings)
            run_batch_button = gr.Button("Remove backgrounds", variant="primary", elem_id="batch-run")
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

            def run_batch(file_list: Any, folder_list: Any, *values: Any, progress: gr.Progress = gr.Progress()) -> Iterator[Any]:
                yield from handlers.batch(batch, (file_list, folder_list), values, progress)

            run_batch_button.click(
                run_batch,
                inputs=[files, folder, *batch.inputs],
                outputs=[table, gallery, zip_button, json_button, batch_status],
                **private,
            )
        page_footer = gr.Markdown(footer(cache), elem_id="footer")
        add_api_endpoints(settings, cache, POOL)

        models = [single.controls["model"].main, batch.controls["model"].main]
        infos = [single.controls["model"].extras["info"], batch.controls["model"].extras["info"]]

        def refresh(*chosen: str | None) -> tuple[Any, ...]:
            """On page load: what is on disk (or failed to download) now, and what really runs."""
            choices = model_choices(settings)
            return (
                *[gr.Dropdown(choices=choices) for _ in models],
                *[model_info(name, settings) for name in chosen],
                footer(cache),
            )

        def keep() -> tuple[Any, ...]:
            return tuple(gr.skip() for _ in range(2 * len(models) + 1))

        demo.load(shielded(refresh, keep), inputs=models, outputs=[*models, *infos, page_footer], **quick)
    demo.queue(max_size=settings.max_queue_size, default_concurrency_limit=settings.max_concurrent_inferences)
    blocks: gr.Blocks = demo
    return blocks


def option_panel(prefix: str, settings: Settings) -> ControlSet:
    """The schema's controls for one tab (the model dropdown shows its weights' licence and source)."""
    return ControlSet.build(
        ControlContext(
            prefix=prefix,
            model_choices=model_choices(settings),
            default_model=settings.model_name,
            model_info=shielded(lambda name: model_info(name, settings), lambda: ""),
        )
    )
