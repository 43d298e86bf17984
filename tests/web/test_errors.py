"""One error shape, `{"detail": str, "hint": str}`, for every status the native API answers (issue 12.5)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from bgremove.core.errors import BgRemoveError
from bgremove.core.options import parse_options
from bgremove.core.sessions import LoadedModel, SessionCache
from bgremove.core.settings import Settings
from bgremove.web.app import create_app
from bgremove.web.deps import get_cache
from bgremove.web.errors import TABLE
from tests.conftest import encode, square_photo
from tests.web.conftest import FlakyCache, FlakyModel, SettingsFactory, running

PHOTO = encode(square_photo(), "PNG")


def assert_shape(body: object) -> None:
    assert isinstance(body, dict) and set(body) == {"detail", "hint"}, body
    assert isinstance(body["detail"], str) and body["detail"] and isinstance(body["hint"], str)


@pytest.fixture(scope="module")
def flaky(module_settings: SettingsFactory) -> Iterator[TestClient]:
    """The tiny model, failing with RuntimeError for one image size; server errors come back as responses."""
    settings = module_settings()
    with running(create_app(settings, cache=FlakyCache(settings), ui=False), raise_server_exceptions=False) as client:
        yield client


def test_unknown_api_path_is_404_in_our_shape(flaky: TestClient) -> None:
    response = flaky.get("/api/nothing/here")
    assert response.status_code == 404
    assert_shape(response.json())
    assert "/api/nothing/here" in response.json()["detail"] and "/docs" in response.json()["hint"]


def test_wrong_method_is_405_with_allow(flaky: TestClient) -> None:
    response = flaky.get("/api/remove")
    assert response.status_code == 405
    assert_shape(response.json())
    assert response.headers["allow"] == "POST" and response.json()["hint"] == "Use POST."
    assert flaky.delete("/api/health").headers["allow"] == "GET"


def test_paths_outside_the_api_keep_fastapis_own_answer(flaky: TestClient) -> None:
    response = flaky.get("/no-such-page")  # no Gradio in this app: FastAPI's plain 404
    assert response.status_code == 404 and response.json() == {"detail": "Not Found"}


def test_option_errors_read_exactly_as_the_schema_says(flaky: TestClient) -> None:
    response = flaky.post("/api/remove", files={"file": ("p.png", PHOTO)}, data={"quality": "0"})
    with pytest.raises(BgRemoveError) as refused:
        parse_options({"quality": "0"})
    assert response.status_code == 422
    assert response.json() == {"detail": refused.value.message, "hint": refused.value.hint}


@pytest.mark.parametrize("data", [{}, {"files": "not a file"}])  # no upload at all; text where a file belongs
def test_request_validation_errors_name_the_field_and_how_to_send_it(flaky: TestClient, data: dict[str, str]) -> None:
    response = flaky.post("/api/remove/batch", data=data)
    assert response.status_code == 422
    assert_shape(response.json())
    assert "'files'" in response.json()["detail"] and "`files`" in response.json()["hint"]


def test_unexpected_exception_is_a_generic_500_logged_with_the_request_id(
    flaky: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    odd = encode(square_photo(FlakyModel.fail_size), "PNG")
    response = flaky.post("/api/remove", files={"file": ("odd.png", odd)}, headers={"X-Request-ID": "trace-500"})
    assert response.status_code == 500
    assert_shape(response.json())
    text = response.text
    assert "Traceback" not in text and "RuntimeError" not in text and "/secret/server/path" not in text
    assert "trace-500" in response.json()["hint"] and response.headers["x-request-id"] == "trace-500"
    logged = [record for record in caplog.records if record.levelname == "ERROR" and record.exc_info]
    assert logged and "/secret/server/path" in str(logged[-1].exc_info[1] if logged[-1].exc_info else "")
    assert flaky.post("/api/remove", files={"file": ("p.png", PHOTO)}).status_code == 200  # nothing else broke


class RaisingCache(SessionCache):
    """A cache whose every model load fails with one given core error (to walk the whole status table)."""

    def __init__(self, settings: Settings, error: BgRemoveError) -> None:
        super().__init__(settings)
        self.error = error

    def get(self, name: str | None = None) -> LoadedModel:
        raise self.error


@pytest.mark.parametrize("error_class", sorted(TABLE, key=str))
def test_every_core_error_has_its_status_message_and_hint(
    flaky: TestClient, module_settings: SettingsFactory, error_class: type[BgRemoveError]
) -> None:
    error = error_class("Something specific went wrong.", hint="Do this about it.")
    app = flaky.app
    app.dependency_overrides[get_cache] = lambda: RaisingCache(module_settings(), error)  # type: ignore[attr-defined]
    try:
        response = flaky.post("/api/remove", files={"file": ("p.png", PHOTO)})
    finally:
        app.dependency_overrides.clear()  # type: ignore[attr-defined]
    rule = TABLE[error_class]
    assert response.status_code == rule.status
    assert response.json() == {"detail": "Something specific went wrong.", "hint": "Do this about it."}
    assert response.headers.get("retry-after") == (str(rule.retry_after) if rule.retry_after is not None else None)


def test_guard_refusals_share_the_shape(module_settings: SettingsFactory) -> None:
    app = create_app(module_settings(API_KEYS="k3y-0123456789abcdef"), ui=False)
    with TestClient(app) as client:
        refused = client.post("/api/remove", files={"file": ("p.png", PHOTO)})
    assert refused.status_code == 401
    assert_shape(refused.json())
