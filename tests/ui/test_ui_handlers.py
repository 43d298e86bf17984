"""The UI's handlers called as Gradio calls them (raw upload payloads, widget values), on the tiny model, no server.
The batch tab's handlers (jobs) are in test_jobs_ui.py."""

from __future__ import annotations

import dataclasses
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bgremove.batch.jobs import JobRunner
from bgremove.core.errors import BgRemoveError
from bgremove.core.options import parse_margin, parse_options
from bgremove.core.pipeline import METADATA_KEYS, remove_background
from bgremove.core.sessions import LoadedModel, SessionCache
from bgremove.core.store import list_models
from bgremove.web.ui_controls import ControlSet
from bgremove.web.ui_handlers import PREPARING, UNEXPECTED, SingleView, UiHandlers
from bgremove.web.ui_models import availability, engine_label, footer, model_choices, model_details, model_info
from tests.ui.conftest import NOT_AN_IMAGE, product_photo, ui_settings, upload_payload, write_photo


def widget_values(controls: ControlSet, **changes: Any) -> list[Any]:
    """The widgets' initial values, with some changed by elem_id suffix (`format`, `bg-mode`, `bg-color`...)."""
    by_id = {f"t-{key.replace('_', '-')}": value for key, value in changes.items()}
    values = [by_id.pop(component.elem_id, component.value) for component in controls.inputs]
    assert not by_id, f"no widget {sorted(by_id)}"
    return values


def run_single(cache: SessionCache, controls: ControlSet, photo: Path, on_arrival: bool = False, **changes: Any) -> SingleView:
    runner = JobRunner(cache.settings, cache)  # not started: the single-image tab never uses it
    try:
        return UiHandlers(cache.settings, cache, runner).single(
            controls, upload_payload(photo), widget_values(controls, **changes), on_arrival=on_arrival
        )
    finally:
        runner.close()


# --- single image ----------------------------------------------------------------------------------------------


def test_default_output_is_a_transparent_png_named_after_the_photo(
    ui_cache: SessionCache, tmp_path: Path, tab_controls: ControlSet
) -> None:
    view = run_single(ui_cache, tab_controls, write_photo(tmp_path / "box.jpg"), on_arrival=True)
    assert view.status.startswith("Done in") and "transparent PNG, 320 × 240 px" in view.status, view.status
    assert view.download is not None and Path(view.download).name == "box-nobg.png" and view.download_label == "Download PNG"
    assert view.result is not None and view.result[1] == view.download  # the preview is the file that will be downloaded
    image = Image.open(view.download)
    assert image.format == "PNG" and image.mode == "RGBA"
    assert np.asarray(image)[0, 0, 3] == 0 and np.asarray(image)[120, 160, 3] > 200
    metadata = view.metadata or {}
    assert set(metadata) <= set(METADATA_KEYS) and metadata["output"] == "box-nobg.png" and metadata["foreground_found"]
    assert view.photo_problem == ""


def test_an_option_change_recomposes_without_running_the_model_again(
    ui_cache: SessionCache, tmp_path: Path, tab_controls: ControlSet
) -> None:
    photo = write_photo(tmp_path / "box.jpg")
    first = run_single(ui_cache, tab_controls, photo, on_arrival=True)
    again = run_single(ui_cache, tab_controls, photo, format="jpg", bg_mode="white", crop=True)
    assert "model did not run again" not in first.status
    assert "model did not run again" in again.status, again.status
    assert again.download is not None and Image.open(again.download).size < Image.open(str(first.download)).size


def test_a_large_photo_shows_a_preview_first_then_offers_the_full_size_file(
    ui_cache: SessionCache, tmp_path: Path, tab_controls: ControlSet
) -> None:
    photo = write_photo(tmp_path / "large.png", product_photo((2000, 1600)))  # 3.2 MP
    runner = JobRunner(ui_cache.settings, ui_cache)
    try:
        handlers = UiHandlers(ui_cache.settings, ui_cache, runner)
        steps = list(handlers.single_steps(tab_controls, upload_payload(photo), widget_values(tab_controls), on_arrival=True))
        small = list(
            handlers.single_steps(tab_controls, upload_payload(write_photo(tmp_path / "small.png")), widget_values(tab_controls))
        )
    finally:
        runner.close()
    preview, final = steps
    assert preview.status == PREPARING and preview.download is None and preview.result is not None
    assert Image.open(preview.result[1]).width * Image.open(preview.result[1]).height <= 1.5e6  # quick to make and show
    assert final.status.startswith("Done in") and final.result == preview.result  # the preview stays on screen
    assert final.download is not None and Image.open(final.download).size == (2000, 1600)  # the file is full size
    assert len(small) == 1 and small[0].status.startswith("Done in")  # a small photo needs no preview step


def test_jpg_on_a_picked_colour_is_described_and_downloaded_as_such(
    ui_cache: SessionCache, tmp_path: Path, tab_controls: ControlSet
) -> None:
    view = run_single(
        ui_cache, tab_controls, write_photo(tmp_path / "box.png"), format="jpg", bg_mode="colour", bg_color="#81d4fa"
    )
    assert "JPG on sky" in view.status and "#" not in view.status, view.status
    assert view.download is not None and Path(view.download).name == "box-nobg.jpg" and view.download_label == "Download JPG"
    image = Image.open(view.download)
    assert image.format == "JPEG" and (view.metadata or {})["format"] == "jpg"
    corners = np.asarray(image)[[0, 0, -1, -1], [0, -1, 0, -1]].astype(int)
    assert np.abs(corners - [0x81, 0xD4, 0xFA]).max() <= 6, corners


def test_white_fills_the_background_with_white(ui_cache: SessionCache, tmp_path: Path, tab_controls: ControlSet) -> None:
    view = run_single(ui_cache, tab_controls, write_photo(tmp_path / "box.png"), bg_mode="white")
    assert "PNG on white" in view.status, view.status
    assert np.asarray(Image.open(str(view.download)).convert("RGBA"))[0, 0].tolist() == [255, 255, 255, 255]


def test_the_colour_pickers_rgba_values_are_understood(ui_cache: SessionCache, tmp_path: Path, tab_controls: ControlSet) -> None:
    view = run_single(
        ui_cache, tab_controls, write_photo(tmp_path / "box.png"), bg_mode="colour", bg_color="rgba(0, 0, 255, 0.5)"
    )
    assert "PNG on your colour, partly see-through" in view.status, view.status
    assert np.asarray(Image.open(str(view.download)))[0, 0].tolist() == [0, 0, 255, 128]


def test_a_background_image_upload_goes_behind_the_subject(
    ui_cache: SessionCache, tmp_path: Path, tab_controls: ControlSet
) -> None:
    backdrop = write_photo(tmp_path / "backdrop.png", Image.new("RGB", (50, 50), (0, 200, 0)))
    view = run_single(
        ui_cache,
        tab_controls,
        write_photo(tmp_path / "box.png"),
        format="webp",
        bg_mode="image",
        bg_image=upload_payload(backdrop),
    )
    assert "WebP on your background image" in view.status
    image = np.asarray(Image.open(str(view.download)).convert("RGB")).astype(int)
    assert np.abs(image[0, 0] - [0, 200, 0]).max() <= 8


def test_a_zip_output_previews_its_colour_image(ui_cache: SessionCache, tmp_path: Path, tab_controls: ControlSet) -> None:
    view = run_single(ui_cache, tab_controls, write_photo(tmp_path / "box.png"), format="zip")
    assert view.download is not None and Path(view.download).name == "box-nobg.zip"
    with zipfile.ZipFile(view.download) as archive:
        assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
        color = archive.read("color.jpg")
    assert view.result is not None and Path(view.result[1]).read_bytes() == color


def test_mask_output_is_described_as_a_mask(ui_cache: SessionCache, tmp_path: Path, tab_controls: ControlSet) -> None:
    view = run_single(ui_cache, tab_controls, write_photo(tmp_path / "box.png"), channels="alpha")
    assert "black-and-white mask (PNG)" in view.status and Image.open(str(view.download)).mode == "L"


def test_scale_position_margin_and_region_widgets_reach_their_options(
    ui_cache: SessionCache, tmp_path: Path, tab_controls: ControlSet
) -> None:
    values = widget_values(
        tab_controls,
        crop=True,
        crop_margin_top=10,
        crop_margin_right=20,
        crop_margin_bottom=10,
        crop_margin_left=20,
        crop_margin_unit="px",
        scale=True,
        scale_0=60,
        position=True,
        position_0=50,
        position_1=100,
        roi_left=10,
        roi_top=0,
        roi_right=90,
        roi_bottom=100,
    )
    options, _ = tab_controls.read(values)
    expected = parse_options(
        {"crop": True, "crop_margin": "10px 20px", "scale": "60%", "position": "50% 100%", "roi": "10% 0% 90% 100%"},
        model=ui_cache.settings.model_name,
    )
    assert parse_margin(str(options.crop_margin)) == parse_margin("10px 20px")  # four sides, spelled in full
    assert options.model_copy(update={"crop_margin": expected.crop_margin}) == expected


def test_a_blank_photo_says_no_clear_subject_found(ui_cache: SessionCache, tmp_path: Path, tab_controls: ControlSet) -> None:
    blank = write_photo(tmp_path / "night.png", Image.new("RGB", (200, 150)))  # nothing bright: the tiny model sees nothing
    view = run_single(ui_cache, tab_controls, blank)
    assert (view.metadata or {})["foreground_found"] is False
    assert "No clear subject found" in view.status


@pytest.mark.parametrize(
    ("name", "data"),
    [("notes.png", NOT_AN_IMAGE), ("empty.jpg", b""), ("half.jpg", None)],
    ids=["text", "empty", "truncated"],
)
def test_a_file_that_is_no_photo_is_explained_where_the_photo_was(
    ui_cache: SessionCache, tmp_path: Path, name: str, data: bytes | None, tab_controls: ControlSet
) -> None:
    if data is None:  # the first half of a real JPEG, as an interrupted download leaves it
        whole = write_photo(tmp_path / "whole.jpg", quality=95).read_bytes()
        data = whole[: len(whole) // 2]
    (tmp_path / name).write_bytes(data)
    view = run_single(ui_cache, tab_controls, tmp_path / name, on_arrival=True)
    with pytest.raises(BgRemoveError) as expected:  # what the core (and so REST) says about the same bytes
        remove_background(data, name, parse_options(), settings=ui_cache.settings, cache=ui_cache)
    assert view.photo_problem == f"**{expected.value.message}**\n\n{expected.value.hint}"
    assert str(tmp_path) not in view.photo_problem and "Traceback" not in view.photo_problem
    assert view.result is None and view.download is None and view.metadata is None and view.status == ""


def test_a_photo_over_the_size_limit_is_explained_where_it_was(
    tmp_path: Path, tiny_model: Path, tab_controls: ControlSet
) -> None:
    cache = SessionCache(ui_settings(tmp_path, tiny_model, MAX_IMAGE_SIZE_MB="0.001"))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8))
    view = run_single(cache, tab_controls, write_photo(tmp_path / "noise.png", noise), on_arrival=True)  # 30 KB, over 1 KB
    assert view.photo_problem.startswith("**") and "limit" in view.photo_problem, view.photo_problem
    assert view.download is None


def test_an_invalid_option_is_explained_next_to_the_result(
    ui_cache: SessionCache, tmp_path: Path, tab_controls: ControlSet
) -> None:
    view = run_single(ui_cache, tab_controls, write_photo(tmp_path / "box.png"), crop_margin_top=80, crop_margin_unit="%")
    with pytest.raises(BgRemoveError) as expected:
        parse_options({"crop_margin": "80% 0% 0% 0%"})
    assert view.status == f"**Failed:** {expected.value.message} {expected.value.hint}"
    assert view.photo_problem == "" and view.download is None


@dataclasses.dataclass(frozen=True)
class ExplodingModel(LoadedModel):
    def predict(self, image: Image.Image) -> Any:
        raise RuntimeError("onnxruntime exploded reading /srv/secret/model.onnx")


class ExplodingCache(SessionCache):
    def get(self, name: str | None = None) -> LoadedModel:
        loaded = super().get(name)
        return ExplodingModel(**{f.name: getattr(loaded, f.name) for f in dataclasses.fields(loaded)})


def test_an_unexpected_error_is_logged_not_shown(
    ui_cache: SessionCache, tmp_path: Path, caplog: pytest.LogCaptureFixture, tab_controls: ControlSet
) -> None:
    cache = ExplodingCache(ui_cache.settings)
    with caplog.at_level(logging.ERROR):
        status = run_single(cache, tab_controls, write_photo(tmp_path / "box.png"), on_arrival=True).status
    assert status.startswith(f"**Failed:** {UNEXPECTED}")
    assert "/srv/secret" not in status and "RuntimeError" not in status
    assert "/srv/secret/model.onnx" in caplog.text  # the server log keeps the details


# --- models and engine -------------------------------------------------------------------------------------------


def test_model_sizes_licences_and_provenance_come_from_the_store(ui_cache: SessionCache) -> None:
    settings = ui_cache.settings
    entries = {entry.name: entry for entry in list_models(settings)}
    labels = dict((value, label) for label, value in model_choices(settings))
    for name, entry in entries.items():
        if not entry.on_disk and not entry.download_failed:
            assert f"downloads {entry.size_mb} MB" in labels[name]
        chooser = model_info(name, settings)  # where the model is chosen: its licence and size
        assert f"{entry.size_mb} MB" in chooser and f"**{entry.license}**" in chooser
        assert ("AGPL" in chooser.split("·", 1)[1]) == ("AGPL" in entry.license.upper())  # said in words, not only named
        details = model_details(name, settings, ui_cache)  # under Details: where they come from, and the checksum
        assert entry.source in details and entry.license in details and (entry.sha256 or "") in details
        assert entry.source not in chooser
    failed = dataclasses.replace(entries["u2netp"], on_disk=False, download_failed=True)
    assert availability(failed) == "cannot be downloaded right now"


def test_details_name_the_engine_that_runs(ui_cache: SessionCache) -> None:
    assert engine_label(ui_cache) == "not loaded yet"
    ui_cache.get()
    label = engine_label(ui_cache)
    assert label.startswith(("OpenVINO CPU", "onnxruntime ")) and "ExecutionProvider" not in label
    assert f"Runs on: {label}." in model_details(None, ui_cache.settings, ui_cache)
    assert "engine" not in footer(ui_cache) and "tiny" in footer(ui_cache)
