"""The UI's handlers called as Gradio calls them (raw upload payloads, widget values), on the tiny model, no server.
The batch tab's handlers (jobs) are in test_jobs_ui.py."""

from __future__ import annotations

import dataclasses
import logging
import zipfile
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from bgremove.batch.jobs import JobRunner
from bgremove.core.errors import BgRemoveError, UnsupportedFormat
from bgremove.core.options import parse_options
from bgremove.core.pipeline import METADATA_KEYS, remove_background
from bgremove.core.sessions import LoadedModel, SessionCache
from bgremove.core.store import list_models
from bgremove.web.ui import option_panel
from bgremove.web.ui_controls import ControlSet
from bgremove.web.ui_handlers import UNEXPECTED, UiHandlers
from bgremove.web.ui_models import availability, engine_label, footer, model_choices, model_info
from tests.ui.conftest import NOT_AN_IMAGE, upload_payload, write_photo


def controls_for(cache: SessionCache) -> ControlSet:
    with gr.Blocks():
        return option_panel("t", cache.settings)


def widget_values(controls: ControlSet, **changes: Any) -> list[Any]:
    """The widgets' initial values, with some changed by elem_id suffix (`format`, `bg-mode`, `bg-color`...)."""
    by_id = {f"t-{key.replace('_', '-')}": value for key, value in changes.items()}
    values = [by_id.pop(component.elem_id, component.value) for component in controls.inputs]
    assert not by_id, f"no widget {sorted(by_id)}"
    return values


def run_single(cache: SessionCache, photo: Path, **changes: Any) -> tuple[Any, ...]:
    controls = controls_for(cache)
    runner = JobRunner(cache.settings, cache)  # not started: the single-image tab never uses it
    try:
        return UiHandlers(cache.settings, cache, runner).single(
            controls, upload_payload(photo), widget_values(controls, **changes)
        )
    finally:
        runner.close()


# --- single image ----------------------------------------------------------------------------------------------


def test_default_output_is_a_transparent_png_named_after_the_photo(ui_cache: SessionCache, tmp_path: Path) -> None:
    cutout, compare, download, metadata, status = run_single(ui_cache, write_photo(tmp_path / "box.jpg"))
    assert status.startswith("Done in"), status
    assert cutout["label"] == "Cutout (transparent PNG)"
    assert Path(download["value"]).name == "box-nobg.png" and download["label"] == "Download PNG"
    assert cutout["value"] == download["value"] == compare[1]  # the preview is the file that will be downloaded
    image = Image.open(download["value"])
    assert image.format == "PNG" and image.mode == "RGBA"
    assert np.asarray(image)[0, 0, 3] == 0 and np.asarray(image)[120, 160, 3] > 200
    assert set(metadata) <= set(METADATA_KEYS) and metadata["output"] == "box-nobg.png" and metadata["foreground_found"]


def test_jpg_on_a_picked_colour_is_labelled_and_downloaded_as_such(ui_cache: SessionCache, tmp_path: Path) -> None:
    cutout, _, download, metadata, _ = run_single(
        ui_cache, write_photo(tmp_path / "box.png"), format="jpg", bg_mode="colour", bg_color="#ff0000"
    )
    assert cutout["label"] == "Cutout on #ff0000 (JPG)"
    assert Path(download["value"]).name == "box-nobg.jpg" and download["label"] == "Download JPG"
    image = Image.open(download["value"])
    assert image.format == "JPEG" and metadata["format"] == "jpg"
    corners = np.asarray(image)[[0, 0, -1, -1], [0, -1, 0, -1]].astype(int)
    assert np.abs(corners - [255, 0, 0]).max() <= 6, corners


def test_the_colour_pickers_rgba_values_are_understood(ui_cache: SessionCache, tmp_path: Path) -> None:
    cutout, _, download, _, _ = run_single(
        ui_cache, write_photo(tmp_path / "box.png"), bg_mode="colour", bg_color="rgba(0, 0, 255, 0.5)"
    )
    assert cutout["label"] == "Cutout on 0,0,255,128, partly transparent (PNG)"
    assert np.asarray(Image.open(download["value"]))[0, 0].tolist() == [0, 0, 255, 128]


def test_a_background_image_upload_goes_behind_the_subject(ui_cache: SessionCache, tmp_path: Path) -> None:
    backdrop = write_photo(tmp_path / "backdrop.png", Image.new("RGB", (50, 50), (0, 200, 0)))
    cutout, _, download, _, _ = run_single(
        ui_cache, write_photo(tmp_path / "box.png"), format="webp", bg_mode="image", bg_image=upload_payload(backdrop)
    )
    assert cutout["label"] == "Cutout on your background image (WebP)"
    image = np.asarray(Image.open(download["value"]).convert("RGB")).astype(int)
    assert np.abs(image[0, 0] - [0, 200, 0]).max() <= 8


def test_a_zip_output_previews_its_colour_image(ui_cache: SessionCache, tmp_path: Path) -> None:
    cutout, _, download, _, _ = run_single(ui_cache, write_photo(tmp_path / "box.png"), format="zip")
    assert Path(download["value"]).name == "box-nobg.zip"
    with zipfile.ZipFile(download["value"]) as archive:
        assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
        color = archive.read("color.jpg")
    assert Path(cutout["value"]).read_bytes() == color


def test_mask_output_is_labelled_a_mask(ui_cache: SessionCache, tmp_path: Path) -> None:
    cutout, _, download, _, _ = run_single(ui_cache, write_photo(tmp_path / "box.png"), channels="alpha")
    assert cutout["label"] == "Mask (greyscale PNG)" and Image.open(download["value"]).mode == "L"


def test_a_blank_photo_says_no_clear_subject_found(ui_cache: SessionCache, tmp_path: Path) -> None:
    blank = write_photo(tmp_path / "night.png", Image.new("RGB", (200, 150)))  # nothing bright: the tiny model sees nothing
    *_, metadata, status = run_single(ui_cache, blank)
    assert metadata["foreground_found"] is False
    assert "No clear subject found" in status


def test_a_text_file_gets_the_same_message_and_hint_as_rest(ui_cache: SessionCache, tmp_path: Path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_bytes(NOT_AN_IMAGE)
    cutout, compare, download, metadata, status = run_single(ui_cache, notes)
    with pytest.raises(UnsupportedFormat) as expected:  # what the core (and so REST) says about the same bytes
        remove_background(NOT_AN_IMAGE, "notes.png", parse_options(), settings=ui_cache.settings, cache=ui_cache)
    assert status == f"**Failed:** {expected.value.message} {expected.value.hint}"
    assert str(tmp_path) not in status and "Traceback" not in status
    assert cutout["value"] is None and compare is None and metadata is None and download["interactive"] is False


def test_an_invalid_option_gets_the_schemas_message(ui_cache: SessionCache, tmp_path: Path) -> None:
    *_, status = run_single(ui_cache, write_photo(tmp_path / "box.png"), crop_margin="80%")
    with pytest.raises(BgRemoveError) as expected:
        parse_options({"crop_margin": "80%"})
    assert status == f"**Failed:** {expected.value.message} {expected.value.hint}"


@dataclasses.dataclass(frozen=True)
class ExplodingModel(LoadedModel):
    def predict(self, image: Image.Image) -> Any:
        raise RuntimeError("onnxruntime exploded reading /srv/secret/model.onnx")


class ExplodingCache(SessionCache):
    def get(self, name: str | None = None) -> LoadedModel:
        loaded = super().get(name)
        return ExplodingModel(**{f.name: getattr(loaded, f.name) for f in dataclasses.fields(loaded)})


def test_an_unexpected_error_is_logged_not_shown(
    ui_cache: SessionCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ExplodingCache(ui_cache.settings)
    with caplog.at_level(logging.ERROR):
        *_, status = run_single(cache, write_photo(tmp_path / "box.png"))
    assert status.startswith(f"**Failed:** {UNEXPECTED}")
    assert "/srv/secret" not in status and "RuntimeError" not in status
    assert "/srv/secret/model.onnx" in caplog.text  # the server log keeps the details


# --- models and engine -------------------------------------------------------------------------------------------


def test_model_sizes_and_availability_come_from_the_store(ui_cache: SessionCache) -> None:
    settings = ui_cache.settings
    entries = {entry.name: entry for entry in list_models(settings)}
    labels = dict((value, label) for label, value in model_choices(settings))
    for name, entry in entries.items():
        if not entry.on_disk and not entry.download_failed:
            assert f"downloads {entry.size_mb} MB" in labels[name]
        assert f"{entry.size_mb} MB" in model_info(name, settings)  # one number for the size, everywhere
        assert entry.license in model_info(name, settings) and entry.source in model_info(name, settings)
    failed = dataclasses.replace(entries["u2netp"], on_disk=False, download_failed=True)
    assert availability(failed) == "cannot be downloaded right now"


def test_footer_names_the_engine_that_runs(ui_cache: SessionCache) -> None:
    assert engine_label(ui_cache) == "not loaded yet"
    ui_cache.get()
    label = engine_label(ui_cache)
    assert label.startswith(("OpenVINO CPU", "onnxruntime ")) and "ExecutionProvider" not in label
    assert f"engine: `{label}`" in footer(ui_cache) and "provider" not in footer(ui_cache)
