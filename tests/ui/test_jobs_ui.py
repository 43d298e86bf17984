"""The batch tab on durable jobs: its handlers in-process against a real JobRunner on the tiny model (submit, poll,
done, zip; cancel; reattach by id; keys), and one browser test that reloads the page while the job is held
mid-way and after it ends, and finds the job again with its download."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from bgremove.batch.jobs import JobNotFound, JobRunner
from bgremove.core.errors import BgRemoveError
from bgremove.core.sessions import SessionCache
from bgremove.web.ui import KeyLogins, LoginRequired, build_ui, job_owner
from bgremove.web.ui_controls import ControlSet
from bgremove.web.ui_handlers import BatchView, UiHandlers
from tests.jobs.conftest import GatedCache
from tests.jobs.server import build_app
from tests.ui.conftest import (
    NOT_AN_IMAGE,
    LiveUi,
    product_photo,
    serve,
    ui_settings,
    upload_payload,
    write_photo,
)

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"


class JobGate(GatedCache):
    """A job worker's forward pass waits inside its slot until `gate` opens (`entered` counts the passes that got
    there): a job held mid-way, deterministically. Interactive requests and the warm-up pass straight through."""

    only_threads = "bgremove-job-"


@pytest.fixture()
def make_tab(
    tmp_path: Path, tiny_model: Path, tab_controls: ControlSet
) -> Iterator[Callable[..., tuple[UiHandlers, ControlSet]]]:
    """`make_tab(cache=None, **env)` -> (handlers, batch controls) on a started JobRunner in tmp_path."""
    runners: list[JobRunner] = []

    def make(cache_class: type[SessionCache] = SessionCache, **env: str) -> tuple[UiHandlers, ControlSet]:
        settings = ui_settings(tmp_path, tiny_model, **env)
        cache = cache_class(settings)
        runner = JobRunner(settings, cache, poll_seconds=0.05)
        runner.start()
        runners.append(runner)
        return UiHandlers(settings, cache, runner), tab_controls

    yield make
    for runner in runners:
        runner.close()


def widget_values(controls: ControlSet, **changes: Any) -> list[Any]:
    """The widgets' initial values, some changed by elem_id suffix (`format`, `quality`...)."""
    by_id = {f"t-{key.replace('_', '-')}": value for key, value in changes.items()}
    values = [by_id.pop(str(component.elem_id), component.value) for component in controls.inputs]
    assert not by_id, f"no widget {sorted(by_id)}"
    return values


def submit(handlers: UiHandlers, controls: ControlSet, paths: list[Path], owner: str = "", **changes: Any) -> BatchView:
    payloads = [upload_payload(path) for path in paths]
    return handlers.submit(controls, (payloads, None), widget_values(controls, **changes), owner)


def until_final(handlers: UiHandlers, job_id: str, owner: str = "") -> BatchView:
    """Poll as the tab's timer does until the job stops being active; every poll draws something or nothing."""
    seen = ""
    deadline = time.monotonic() + 60
    while True:
        view = handlers.poll(job_id, owner, seen)
        if view is not None:
            assert view.job_id == job_id, view.status
            if not view.active:
                return view
            seen = view.signature
        assert time.monotonic() < deadline, "the job did not finish in 60 s"
        time.sleep(0.05)


def zip_names(path: str | None) -> tuple[list[str], dict[str, Any]]:
    assert path is not None, "no zip offered"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        return names, json.loads(archive.read("manifest.json"))


# --- submit -> poll -> done --------------------------------------------------------------------------------------


def test_a_job_runs_to_done_and_its_zip_holds_every_input_once(make_tab: Any, tmp_path: Path) -> None:
    handlers, controls = make_tab()
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    photos = [write_photo(first / "a.png"), write_photo(second / "a.png"), write_photo(tmp_path / "b.jpg")]
    archive = tmp_path / "shop.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("shop/c.png", (tmp_path / "b.jpg").read_bytes())
    started = submit(handlers, controls, [*photos, archive], format="webp")
    assert started.active and len(started.job_id) == 32, started.status
    assert [row[0] for row in started.rows or []] == ["a.png", "a.png", "b.jpg", "shop/c.png"]
    assert started.zip_path is None and started.json_path is None  # nothing offered before the job ends

    final = until_final(handlers, started.job_id)
    assert final.status == "**Done: all 4 completed.**"
    assert [row[1] for row in final.rows or []] == ["Completed"] * 4
    names, manifest = zip_names(final.zip_path)
    assert sorted(names) == ["a-2.webp", "a.webp", "b.webp", "manifest.json", "shop/c.webp"]  # each input exactly once
    assert [entry["filename"] for entry in manifest["items"]] == ["a.png", "a.png", "b.jpg", "shop/c.png"]
    assert (manifest["count"], manifest["completed"], manifest["failed"]) == (4, 4, 0)
    assert json.loads(Path(final.json_path or "").read_text()) == manifest
    with zipfile.ZipFile(final.zip_path or "") as zipped:
        assert Image.open(io.BytesIO(zipped.read("b.webp"))).mode == "RGBA"
    assert [caption for _, caption in final.gallery or []] == ["a.webp", "a-2.webp", "b.webp", "shop/c.webp"]
    assert all(Image.open(path).size == (320, 240) for path, _ in final.gallery or [])
    assert handlers.poll(final.job_id, "", final.signature) is None  # a finished job draws nothing more


def test_a_partial_job_is_reported_as_partial(make_tab: Any, tmp_path: Path) -> None:
    handlers, controls = make_tab()
    notes = tmp_path / "notes.png"
    notes.write_bytes(NOT_AN_IMAGE)
    started = submit(handlers, controls, [write_photo(tmp_path / "a.jpg"), notes, write_photo(tmp_path / "b.png")])
    final = until_final(handlers, started.job_id)
    assert final.status.startswith("**Partly done: 2 completed, 1 failed** of 3."), final.status
    assert "`notes.png`:" in final.status and "not a supported image" in final.status
    assert [row[1] for row in final.rows or []] == ["Completed", "Failed", "Completed"]
    assert "not a supported image" in (final.rows or [])[1][4]
    names, manifest = zip_names(final.zip_path)
    assert sorted(names) == ["a.png", "b.png", "manifest.json"]
    assert [entry["status"] for entry in manifest["items"]] == ["completed", "failed", "completed"]


def test_a_job_where_everything_failed_offers_the_manifest_but_no_zip(make_tab: Any, tmp_path: Path) -> None:
    handlers, controls = make_tab()
    notes = tmp_path / "notes.png"
    notes.write_bytes(NOT_AN_IMAGE)
    final = until_final(handlers, submit(handlers, controls, [notes]).job_id)
    assert final.status.startswith("**Failed: none of the 1 files could be processed.**"), final.status
    assert final.zip_path is None and final.json_path is not None and final.gallery == []


def test_zip_outputs_show_their_colour_image_in_the_gallery(make_tab: Any, tmp_path: Path) -> None:
    handlers, controls = make_tab()
    final = until_final(handlers, submit(handlers, controls, [write_photo(tmp_path / "a.png")], format="zip").job_id)
    names, _ = zip_names(final.zip_path)
    assert sorted(names) == ["a.zip", "manifest.json"]
    [(thumbnail, caption)] = final.gallery or []
    assert caption == "a.zip" and Image.open(thumbnail).mode == "RGB"  # color.jpg, not the zip


def test_an_invalid_option_is_refused_before_anything_is_queued(make_tab: Any, tmp_path: Path) -> None:
    handlers, controls = make_tab()
    view = submit(handlers, controls, [write_photo(tmp_path / "a.jpg")], quality=0)
    with pytest.raises(BgRemoveError) as expected:
        controls.read(widget_values(controls, quality=0))
    assert view.status == f"**Failed:** {expected.value.message} {expected.value.hint}"
    assert view.job_id == "" and view.rows == [] and not view.active
    assert handlers.jobs.store.jobs_of("") == []


def test_nothing_uploaded_asks_for_files(make_tab: Any) -> None:
    handlers, controls = make_tab()
    view = handlers.submit(controls, (None, None), widget_values(controls), "")
    assert view.status == "Add images, a folder or a zip first." and view.job_id == ""


# --- cancel -------------------------------------------------------------------------------------------------------


def test_cancel_stops_the_job_and_keeps_the_file_done(make_tab: Any, tmp_path: Path) -> None:
    handlers, controls = make_tab(JobGate)
    gate = handlers.cache
    assert isinstance(gate, JobGate)
    photos = [write_photo(tmp_path / f"p{number}.png") for number in range(4)]
    started = submit(handlers, controls, photos)
    assert gate.entered.acquire(timeout=30), "the job never started its first file"
    running = handlers.view(started.job_id, "")
    assert [row[1] for row in running.rows or []] == ["Processing", "Queued", "Queued", "Queued"]
    assert running.status.startswith("**Processing:** 0 of 4 done"), running.status

    cancelled = handlers.cancel(started.job_id, "")  # while the first file is inside the model
    assert cancelled.status.startswith("**Cancelled:** 0 of 4"), cancelled.status
    assert cancelled.active is False and cancelled.zip_path is None and cancelled.json_path is not None
    gate.gate.set()  # from now on every file could run: only the cancel stops them
    handlers.jobs.stop()  # returns once the worker has left the job

    after = handlers.view(started.job_id, "")  # the file in work when the cancel came is done, and in the zip
    assert [row[1] for row in after.rows or []] == ["Completed", "Cancelled", "Cancelled", "Cancelled"]
    assert after.status.startswith("**Cancelled:** 1 of 4 completed before the cancel; they are in the zip."), after.status
    names, manifest = zip_names(after.zip_path)
    assert sorted(names) == ["manifest.json", "p0.png"]
    assert (manifest["count"], manifest["completed"], manifest["failed"]) == (4, 1, 3)
    assert handlers.cancel(started.job_id, "").status == after.status  # Cancel on a finished job never deletes it


# --- reattach -----------------------------------------------------------------------------------------------------


def test_a_new_page_reattaches_by_id_and_an_unknown_id_gets_the_stores_message(make_tab: Any, tmp_path: Path) -> None:
    handlers, controls = make_tab()
    final = until_final(handlers, submit(handlers, controls, [write_photo(tmp_path / "a.jpg")]).job_id)
    fresh = UiHandlers(handlers.settings, handlers.cache, JobRunner(handlers.settings, handlers.cache))  # another process
    try:
        again = fresh.view(final.job_id, "")
    finally:
        fresh.jobs.close()
    assert (again.job_id, again.status, again.rows, again.active) == (final.job_id, final.status, final.rows, False)
    assert zip_names(again.zip_path) == zip_names(final.zip_path)

    for wrong in ("0" * 32, "../../etc/passwd"):
        gone = handlers.view(wrong, "")
        with pytest.raises(JobNotFound) as expected:
            handlers.jobs.store.get("0" * 32, "")
        assert gone.job_id == "" and gone.rows == [] and expected.value.hint in gone.status
        assert "Traceback" not in gone.status and str(tmp_path) not in gone.status


# --- API keys -----------------------------------------------------------------------------------------------------


def test_a_login_name_stays_with_its_key(tmp_path: Path, tiny_model: Path) -> None:
    logins = KeyLogins(ui_settings(tmp_path, tiny_model, API_KEYS=f"{KEY_A},{KEY_B}"))
    assert logins("alice", KEY_A) and logins("alice", KEY_A)
    assert not logins("alice", KEY_B)  # would see alice's jobs
    assert not logins("carol", "not-a-key-0123456789")
    assert logins("bob", KEY_B)
    assert (logins.key_of("alice"), logins.key_of("bob"), logins.key_of("carol"), logins.key_of(None)) == (
        KEY_A,
        KEY_B,
        None,
        None,
    )


def test_jobs_from_the_ui_belong_to_the_login_keys_owner_as_in_rest(make_tab: Any, tmp_path: Path) -> None:
    handlers, controls = make_tab(API_KEYS=f"{KEY_A},{KEY_B}")
    settings, runner = handlers.settings, handlers.jobs
    logins = KeyLogins(settings)
    assert logins("alice", KEY_A) and logins("bob", KEY_B)
    alice, bob = job_owner(settings, runner, logins, "alice"), job_owner(settings, runner, logins, "bob")
    with pytest.raises(LoginRequired):
        job_owner(settings, runner, logins, "mallory")
    final = until_final(handlers, submit(handlers, controls, [write_photo(tmp_path / "a.jpg")], alice).job_id, alice)

    rest = TestClient(build_app(settings))  # the REST door on the same DATA_DIR (no lifespan: it only reads)
    assert rest.get(f"/api/jobs/{final.job_id}", headers={"X-API-Key": KEY_A}).json()["status"] == "done"
    assert rest.get(f"/api/jobs/{final.job_id}", headers={"X-API-Key": KEY_B}).status_code == 404
    assert handlers.view(final.job_id, bob).job_id == ""  # bob's page cannot reattach alice's job


def test_build_ui_takes_the_apps_runner_and_needs_no_heartbeat(tmp_path: Path, tiny_model: Path) -> None:
    settings = ui_settings(tmp_path, tiny_model)
    cache = SessionCache(settings)
    runner = JobRunner(settings, cache)
    try:
        demo = build_ui(settings, cache, jobs=runner)
        ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
        assert {"batch-cancel", "batch-job-id", "batch-download-zip", "batch-download-json"} <= ids
        # No session heartbeat: with one, every open page and gradio_client holds a stream that stalls shutdown.
        assert demo.get_config_file()["connect_heartbeat"] is False
    finally:
        runner.close()


# --- the browser --------------------------------------------------------------------------------------------------


@pytest.fixture()
def gated_ui(tmp_path: Path, tiny_model: Path) -> Iterator[tuple[LiveUi, JobGate]]:
    settings = ui_settings(tmp_path, tiny_model)
    cache = JobGate(settings)
    with serve(settings, cache) as live:
        try:
            yield live, cache
        finally:
            cache.gate.set()  # a failed test must not leave a worker waiting


def new_page(browser: Browser) -> Page:
    """A page in a context of its own: its own cookies (login) and localStorage (the remembered job)."""
    page = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True).new_page()
    page.set_default_timeout(30_000)
    return page


def start_batch(page: Page, photos: list[Path]) -> None:
    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-files input[type=file]").set_input_files(photos)
    for photo in photos:
        expect(page.locator("#batch-files")).to_contain_text(photo.stem)
    page.locator("#batch-run").click()


@pytest.mark.browser
@pytest.mark.slow
def test_a_reloaded_page_finds_its_job_running_and_then_done(
    browser: Browser, gated_ui: tuple[LiveUi, JobGate], tmp_path: Path
) -> None:
    live, gate = gated_ui
    page = new_page(browser)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The page's quick events (load, poll, cancel) answer over HTTP: one that failed on the server shows here.
    page.on(
        "response", lambda answer: errors.append(answer.url) if "/gradio_api/" in answer.url and answer.status >= 400 else None
    )
    page.goto(live.url + "/")
    start_batch(page, [write_photo(tmp_path / "product.jpg"), write_photo(tmp_path / "tall.png", product_photo((200, 300)))])
    assert gate.entered.acquire(timeout=30), "the job never started"
    expect(page).to_have_url(re.compile(r"\?job=[0-9a-f]{32}$"))
    job_id = page.url.split("?job=")[1]

    page.reload()  # mid-way: the first file is inside the model
    status = page.locator("#batch-status")
    expect(status).to_contain_text("Processing: 0 of 2 done")
    expect(page.locator("#batch-table")).to_contain_text("Processing")
    expect(page.locator("#batch-cancel")).to_be_enabled()
    expect(page.locator("#batch-download-zip")).to_be_disabled()

    gate.gate.set()  # the polling, re-armed by the reload, follows the job to its end
    expect(status).to_contain_text("Done: all 2 completed.")
    expect(page.locator("#batch-cancel")).to_be_disabled()

    page.goto(live.url + "/")  # after: no id in the address, the browser's storage remembers it
    expect(status).to_contain_text("Done: all 2 completed.")
    expect(page).to_have_url(f"{live.url}/?job={job_id}")
    table = page.locator("#batch-table").inner_text()
    assert table.count("Completed") == 2 and "Processing" not in table, table
    button = page.locator("#batch-download-zip")
    expect(button).to_be_enabled()
    with page.expect_download() as info:
        button.click()
    with zipfile.ZipFile(info.value.path()) as archive:
        assert sorted(archive.namelist()) == ["manifest.json", "product.png", "tall.png"]
    page.screenshot(path=tmp_path / "reattached.png", full_page=True)
    page.context.close()
    assert errors == [], errors


@pytest.mark.browser
@pytest.mark.slow
def test_with_api_keys_the_job_belongs_to_the_login_key(browser: Browser, tmp_path: Path, tiny_model: Path) -> None:
    with serve(ui_settings(tmp_path, tiny_model, API_KEYS=f"{KEY_A},{KEY_B}")) as live:
        page = new_page(browser)
        page.goto(live.url + "/")
        login(page, "alice", KEY_A)
        start_batch(page, [write_photo(tmp_path / "a.jpg")])
        expect(page.locator("#batch-status")).to_contain_text("Done: all 1 completed.")
        job_id = page.url.split("?job=")[1]
        as_a = httpx.get(f"{live.url}/api/jobs/{job_id}", headers={"X-API-Key": KEY_A})
        assert as_a.json()["status"] == "done"  # REST with alice's key sees the job she submitted in the UI
        assert httpx.get(f"{live.url}/api/jobs/{job_id}", headers={"X-API-Key": KEY_B}).status_code == 404

        other = new_page(browser)  # bob, given alice's link
        other.goto(page.url)
        login(other, "bob", KEY_B)
        expect(other.locator("#batch-status")).to_contain_text(f"There is no job '{job_id}'")
        expect(other.locator("#batch-download-zip")).to_be_disabled()
        page.context.close()
        other.context.close()


def login(page: Page, name: str, key: str) -> None:
    page.get_by_label("username").fill(name)
    page.get_by_label("password").fill(key)
    page.get_by_role("button", name="Login").click()
    expect(page.get_by_role("tab", name="Batch")).to_be_visible()
