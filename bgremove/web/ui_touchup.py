"""Touch-up in the browser: Keep and Remove brushes over the photo, turned into the core's keep/remove hint images.

One `gr.ImageEditor` whose background is a display copy of the photo and whose brush has two fixed colours: green
keeps, red removes. Its size slider, undo and clear are the editor's own. After each stroke the editor's layers are
split by colour into two white-on-black masks (`masks_from_editor`), stored in a work folder and named in a hidden
textbox (`TouchUp.hints`); the single-image handler reads them back (`read_hints`) for every re-compose, so an
option changed afterwards keeps the strokes. The prediction cache makes each touch-up cost only the local solver and
the edges, never the model. Strokes drawn on the downscaled display copy are fine: the core scales hints to the photo.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, ImageOps

from bgremove.web.ui_controls import payload_path
from bgremove.web.ui_files import WORK_ROOT, Expired, job_dir, save

KEEP_COLOUR = "#22c55e"  # green: this is part of the subject
REMOVE_COLOUR = "#ef4444"  # red: this is background
DISPLAY_SIDE = 1024  # the editor shows the photo at most this many px on its longer side (a 12 MP canvas is slow)
KEEP_NAME, REMOVE_NAME = "keep.png", "remove.png"
# A hints value is the name of one work folder of this process (made by `save_hints`), never a path: a browser
# cannot make the server read a file of its choosing.
HINTS_FOLDER = re.compile(r"job-[A-Za-z0-9_]{1,64}")
HELP = (
    "Paint with the **green** brush over what must stay and with the **red** brush over what must go: the result "
    "updates after each stroke. Brush size, undo and clear are in the editor's toolbar; close Touch up to drop "
    "another photo."
)


@dataclass(frozen=True)
class TouchUp:
    """The touch-up widgets of the single-image tab."""

    editor: gr.ImageEditor
    hints: gr.Textbox  # the work folder of the current strokes ("" for none); an input of every re-compose


def touchup_panel() -> TouchUp:
    """The Touch up accordion's content (built inside it by `build_ui`)."""
    gr.Markdown(HELP, elem_id="single-touchup-help")
    editor = gr.ImageEditor(
        type="numpy",
        image_mode="RGBA",
        sources=[],  # the photo comes from the drop zone; the editor only paints over it
        transforms=[],  # a crop or resize here would break the strokes' alignment with the photo
        layers=False,
        brush=gr.Brush(colors=[KEEP_COLOUR, REMOVE_COLOUR], default_color=KEEP_COLOUR, color_mode="fixed"),
        eraser=gr.Eraser(),
        buttons=[],
        label="Touch up: green keeps, red removes",
        show_label=False,  # the accordion and the help say it; on a phone the label would run under the toolbar
        height=440,
        interactive=True,
        elem_id="single-touchup-editor",
    )
    # Not a gr.State: any State makes Gradio hold a heartbeat stream open per page (see the batch tab's `seen`).
    hints = gr.Textbox("", visible=False, elem_id="single-touchup-hints")
    return TouchUp(editor, hints)


def editor_background(upload: Any) -> dict[str, Any] | None:
    """The editor's value for a newly arrived photo: a display copy as its background, no strokes yet."""
    photo = payload_path(upload)
    if not photo:
        return None
    try:
        with Image.open(photo) as image:
            shown = ImageOps.exif_transpose(image)  # the pipeline applies EXIF orientation too: strokes line up
            shown.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
            shown = shown.convert("RGB")
    except Exception:  # not an image: the drop zone explains it, the editor stays empty
        return None
    return {"background": np.asarray(shown), "layers": [], "composite": None}


def _pixels(layer: Any) -> np.ndarray | None:
    """A layer as an RGBA array, whatever `type` the editor delivered it in (array, PIL image, file path)."""
    if layer is None:
        return None
    if isinstance(layer, np.ndarray):
        array = layer
    elif isinstance(layer, Image.Image):
        array = np.asarray(layer.convert("RGBA"))
    else:
        with Image.open(payload_path(layer) or "") as image:
            array = np.asarray(image.convert("RGBA"))
    if array.ndim == 2:
        return None  # a grey layer has no brush colours
    if array.shape[2] == 3:  # no alpha: only non-black pixels are paint
        array = np.dstack([array, np.where(array.max(axis=2) > 0, 255, 0).astype(np.uint8)])
    return array


def _png(marks: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.where(marks, 255, 0).astype(np.uint8), "L").save(buffer, "PNG")
    return buffer.getvalue()


def masks_from_editor(value: Any) -> tuple[bytes | None, bytes | None]:
    """(keep mask, remove mask) as white-on-black PNGs from an ImageEditor value; None where nothing is painted.

    Paint is any visible pixel of a layer; green-dominant paint keeps, red-dominant paint removes (the brush's
    antialiased edge keeps its colour and only loses opacity, so the split holds there too).
    """
    layers = value.get("layers") if isinstance(value, dict) else None
    keep: np.ndarray | None = None
    remove: np.ndarray | None = None
    for layer in layers or []:
        rgba = _pixels(layer)
        if rgba is None:
            continue
        red, green = rgba[..., 0].astype(np.int16), rgba[..., 1].astype(np.int16)
        painted = rgba[..., 3] > 32
        keeps, removes = painted & (green > red), painted & (red > green)
        keep = keeps if keep is None or keep.shape != keeps.shape else keep | keeps
        remove = removes if remove is None or remove.shape != removes.shape else remove | removes
    return (
        _png(keep) if keep is not None and keep.any() else None,
        _png(remove) if remove is not None and remove.any() else None,
    )


def save_hints(keep: bytes | None, remove: bytes | None) -> str:
    """Store the masks for the re-composes to come; "" when nothing is painted."""
    if keep is None and remove is None:
        return ""
    folder = job_dir()  # swept after RESULT_TTL_SECONDS like every result folder
    for name, data in ((KEEP_NAME, keep), (REMOVE_NAME, remove)):
        if data is not None:
            save(data, folder, name)
    return folder.name


def read_hints(hints: Any, ttl: int) -> tuple[bytes | None, bytes | None]:
    """The masks `save_hints` stored under the name `hints` (no strokes or not a folder name: none). A folder that
    is gone (swept after `ttl` seconds, or the server restarted) raises `Expired`: the page still shows strokes that
    would otherwise be dropped without a word."""
    name = str(hints or "").strip()
    if not HINTS_FOLDER.fullmatch(name):
        return None, None
    folder = WORK_ROOT / name
    if not folder.is_dir():
        raise Expired.strokes(ttl)

    def read(file: Path) -> bytes | None:
        return file.read_bytes() if file.is_file() else None

    return read(folder / KEEP_NAME), read(folder / REMOVE_NAME)


def strokes_to_hints(value: Any) -> str:
    """The editor's change event: its strokes as the hints value every re-compose reads."""
    return save_hints(*masks_from_editor(value))
