"""The door kit: one admission gate across every door and the job workers, one intake wording, one key reader,
one error table, and metrics labelled by the matched route, per app."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import pytest
from fastapi.testclient import TestClient

from bgremove.core.sessions import SessionCache
from bgremove.web.admission import BUSY_MESSAGE, Admission
from bgremove.web.app import create_app
from bgremove.web.keys import matching_key, offered_key, request_key
from bgremove.web.ui import KeyLogins
from bgremove.web.ui_api import remove_batch_endpoint, remove_endpoint
from tests.conftest import encode, square_photo
from tests.web.conftest import GatedCache, HttpResponse, SettingsFactory, running

PHOTO = encode(square_photo((96, 64)), "PNG")
KEY = "k3y-0123456789abcdef"


def native(client: TestClient) -> HttpResponse:
    return client.post("/api/remove", files={"file": ("p.png", PHOTO)})


def removebg(client: TestClient) -> HttpResponse:
    return client.post("/v1.0/removebg", files={"image_file": ("p.png", PHOTO)})


def wait_until(condition: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture()
def gated(module_settings: SettingsFactory) -> Iterator[tuple[TestClient, GatedCache]]:
    """MAX_CONCURRENT_INFERENCES=1 + MAX_QUEUE_SIZE=1: two removals in flight across the whole app."""
    settings = module_settings(MAX_CONCURRENT_INFERENCES="1", MAX_QUEUE_SIZE="1")
    cache = GatedCache(settings)
    with running(create_app(settings, cache=cache, ui=False)) as client:
        yield client, cache
        cache.gate.set()


# --- one admission gate -----------------------------------------------------------------------------------------


def test_six_requests_across_both_rest_doors_admit_exactly_the_documented_two(gated: tuple[TestClient, GatedCache]) -> None:
    client, cache = gated
    with ThreadPoolExecutor(6) as pool:
        futures: list[tuple[str, Future[HttpResponse]]] = [
            (door, pool.submit(send, client)) for _ in range(3) for door, send in (("api", native), ("removebg", removebg))
        ]
        wait_until(lambda: sum(future.done() for _, future in futures) >= 4, "four refusals")
        assert cache.entered.acquire(timeout=30)  # one admitted request is inside the model, the other waits
        assert sum(future.done() for _, future in futures) == 4, "more than two requests were admitted"
        cache.gate.set()
        answers = [(door, future.result()) for door, future in futures]
    admitted = [door for door, answer in answers if answer.status_code == 200]
    refused = [(door, answer) for door, answer in answers if answer.status_code != 200]
    assert len(admitted) == 2 and len(refused) == 4, [(door, answer.status_code) for door, answer in answers]
    for door, answer in refused:
        assert answer.headers["retry-after"] == "5"
        if door == "api":  # the native shape
            assert answer.status_code == 503 and answer.json() == {"detail": BUSY_MESSAGE, "hint": "Retry after a few seconds."}
        else:  # remove.bg's shape and its rate-limit answer (what its published clients expect)
            assert answer.status_code == 429
            assert answer.json()["errors"][0]["code"] == "rate_limit_exceeded"
            assert answer.json()["errors"][0]["title"] == BUSY_MESSAGE
    assert client.app.state.admission.in_flight == 0  # type: ignore[attr-defined]
    assert native(client).status_code == 200 and removebg(client).status_code == 200


def test_gradio_endpoints_are_refused_while_the_rest_doors_hold_the_slots(
    gated: tuple[TestClient, GatedCache], tmp_path: Path
) -> None:
    """The gradio_client / MCP handlers take their slot from the same gate as REST (the app hands it to the UI)."""
    client, cache = gated
    app = client.app
    settings, admission = app.state.settings, app.state.admission  # type: ignore[attr-defined]
    photo = tmp_path / "p.png"
    photo.write_bytes(PHOTO)
    remove = remove_endpoint(settings, cache, admission)
    remove_batch = remove_batch_endpoint(settings, cache, admission)
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(native, client), pool.submit(removebg, client)]
        assert cache.entered.acquire(timeout=30)
        wait_until(lambda: admission.in_flight == 2, "both REST requests admitted")
        for call in (lambda: remove(str(photo)), lambda: remove_batch([str(photo)])):
            with pytest.raises(gr.Error, match="queue is full"):
                call()
        cache.gate.set()
        assert [future.result().status_code for future in held] == [200, 200]
    assert Path(remove(str(photo))).is_file()  # with the slots free, the same call goes through


def test_jobs_wait_for_a_slot_instead_of_being_refused(module_settings: SettingsFactory) -> None:
    settings = module_settings(MAX_CONCURRENT_INFERENCES="1", MAX_QUEUE_SIZE="1")
    with running(create_app(settings, ui=False)) as client:
        admission: Admission = client.app.state.admission  # type: ignore[attr-defined]
        taken = [admission.try_enter("test") for _ in range(admission.limit)]  # as if two requests were in flight
        assert all(taken) and not admission.try_enter("test")
        submitted = client.post("/api/jobs", files=[("files", ("p.png", PHOTO))])
        assert submitted.status_code == 202  # accepted: a job queues, it is not refused
        wait_until(lambda: admission.waiters == 1, "the job worker waiting for a slot")
        assert client.get(f"/api/jobs/{submitted.json()['id']}").json()["done"] == 0
        assert native(client).status_code == 503  # the doors see the same full gate
        for _ in taken:
            admission.leave()
        deadline = time.monotonic() + 60
        while (job := client.get(f"/api/jobs/{submitted.json()['id']}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["status"] == "done" and job["done"] == 1
        assert admission.in_flight == 0


def test_admission_counts_are_safe_across_threads() -> None:
    admission = Admission(3)
    admitted: list[bool] = []
    lock = threading.Lock()

    def enter() -> None:
        result = admission.try_enter()
        with lock:
            admitted.append(result)

    threads = [threading.Thread(target=enter) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted.count(True) == 3 and admission.in_flight == 3


# --- one key reader ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {b"x-api-key": KEY.encode()},
        {"X-Api-Key": KEY},
        {"authorization": f"Bearer {KEY}"},
        {b"authorization": f"bearer  {KEY}".encode()},
    ],
)
def test_every_way_of_sending_the_key_is_read_the_same(headers: dict[str, str] | dict[bytes, bytes]) -> None:
    assert offered_key(headers) == KEY and request_key(headers, [KEY, "another-key-0123456789"]) == KEY


def test_a_wrong_or_missing_key_matches_nothing_and_the_ui_login_agrees(module_settings: SettingsFactory) -> None:
    assert request_key({}, [KEY]) is None and request_key({"x-api-key": KEY + "x"}, [KEY]) is None
    assert matching_key("", [KEY]) is None
    logins = KeyLogins(module_settings(API_KEYS=KEY))
    assert logins("someone", KEY) and not logins("else", KEY[:-1])


def test_jobs_read_the_owner_with_the_same_reader(module_settings: SettingsFactory) -> None:
    """A Bearer token and an X-API-Key header of the same key own the same jobs."""
    with running(create_app(module_settings(API_KEYS=KEY), ui=False)) as client:
        job = client.post("/api/jobs", files=[("files", ("p.png", PHOTO))], headers={"X-API-Key": KEY}).json()
        listed = client.get("/api/jobs", headers={"Authorization": f"Bearer {KEY}"}).json()["jobs"]
        assert job["id"] in [entry["id"] for entry in listed]
        refused = client.get("/api/jobs", headers={"X-API-Key": "not-the-key-0123456789"})
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert set(refused.json()) == {"detail", "hint"}


# --- one intake wording ------------------------------------------------------------------------------------------


def test_an_oversized_background_is_refused_in_the_same_words_at_every_door(
    module_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = module_settings(MAX_IMAGE_SIZE_MB="0.01")
    big = encode(square_photo((64, 64)), "BMP")  # 12 KB: over the 10 KB limit, under the guard's body limit
    expected = "{} is larger than the limit of 0.01 MB."
    with running(create_app(settings, ui=False)) as client:
        small = encode(square_photo((16, 16)), "PNG")
        for path, files in (
            ("/api/remove", {"file": ("p.png", small)}),
            ("/api/remove/batch", {"files": ("p.png", small)}),
            ("/api/jobs", {"files": ("p.png", small)}),
        ):
            response = client.post(path, files={**files, "bg_image": ("bg.bmp", big)})
            assert response.status_code == 413, (path, response.text)
            assert response.json()["detail"] == expected.format("bg_image"), path
        remote = client.post("/v1.0/removebg", files={"image_file": ("p.png", small), "bg_image_file": ("bg.bmp", big)})
        assert remote.status_code == 400 and remote.json()["errors"][0]["code"] == "file_too_large"
        assert remote.json()["errors"][0]["title"] == expected.format("bg_image_file")
    background = tmp_path / "bg.bmp"
    background.write_bytes(big)
    photo = tmp_path / "p.png"
    photo.write_bytes(small)
    remove = remove_endpoint(settings, SessionCache(settings))  # the gradio_client / MCP door
    call = inspect.signature(remove).bind(str(photo), bg_image=str(background))
    call.apply_defaults()
    with pytest.raises(gr.Error) as refused:
        remove(*call.args)
    assert expected.format("bg_image") in str(refused.value)


# --- metrics ----------------------------------------------------------------------------------------------------


def counter(text: str, route: str, code: str = "200", method: str = "POST") -> float:
    prefix = f'bgremove_requests_total{{code="{code}",method="{method}",route="{route}"}} '
    values = [float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)]
    return values[0] if values else 0.0


def test_metrics_are_labelled_by_the_matched_route_and_each_app_counts_its_own(module_settings: SettingsFactory) -> None:
    first, second = create_app(module_settings(), ui=False), create_app(module_settings(), ui=False)
    with running(first) as one, running(second) as other:
        assert removebg(one).status_code == 200 and removebg(one).status_code == 200
        one.get("/api/jobs/0123456789abcdef0123456789abcdef")
        text = one.get("/metrics").text
        assert counter(text, "/v1.0/removebg") == 2
        assert counter(text, "/api/jobs/{job_id}", "404", "GET") == 1
        assert 'route="/ui"' not in text and "0123456789abcdef" not in text  # templates, never raw paths
        assert counter(other.get("/metrics").text, "/v1.0/removebg") == 0  # the second app counted nothing


def test_gradio_routes_get_their_own_labels(module_settings: SettingsFactory) -> None:
    with running(create_app(module_settings())) as client:
        assert client.get("/gradio_api/info").status_code == 200
        text = client.get("/metrics").text
    assert counter(text, "/gradio_api/info", method="GET") == 1
