"""The remove.bg door answers from the one error table: the table's status (or the one remove.bg's protocol fixes),
its Retry-After and its code, in remove.bg's envelope; it never decides a status of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from bgremove.core.errors import BgRemoveError
from bgremove.core.sessions import LoadedModel, SessionCache
from bgremove.core.settings import Settings
from bgremove.web.deps import get_cache
from bgremove.web.errors import TABLE
from tests.removebg.conftest import SettingsFactory, build_app, error_of, photo
from tests.web.conftest import running

PHOTO = photo((64, 48))


class RaisingCache(SessionCache):
    """Every model load fails with one given core error."""

    def __init__(self, settings: Settings, error: BgRemoveError) -> None:
        super().__init__(settings)
        self.error = error

    def get(self, name: str | None = None) -> LoadedModel:
        raise self.error


@pytest.fixture(scope="module")
def both(removebg_settings: SettingsFactory) -> Iterator[TestClient]:
    with running(build_app(removebg_settings())) as client:
        yield client


@pytest.mark.parametrize("error_class", sorted(TABLE, key=str))
def test_every_table_row_reaches_remove_bg_with_its_code_status_and_retry_after(
    both: TestClient, removebg_settings: SettingsFactory, error_class: type[BgRemoveError]
) -> None:
    error = error_class("Something specific went wrong.", hint="Do this about it.")
    app = both.app
    app.dependency_overrides[get_cache] = lambda: RaisingCache(removebg_settings(), error)  # type: ignore[attr-defined]
    try:
        remote = both.post("/v1.0/removebg", files={"image_file": ("p.png", PHOTO)})
        local = both.post("/api/remove", files={"file": ("p.png", PHOTO)})
    finally:
        app.dependency_overrides.clear()  # type: ignore[attr-defined]
    rule = TABLE[error_class]
    answer = error_of(remote, rule.removebg)
    assert answer == {"title": "Something specific went wrong.", "code": rule.code, "detail": "Do this about it."}
    assert local.status_code == rule.status
    assert remote.headers.get("retry-after") == local.headers.get("retry-after")  # one Retry-After for both doors
    assert remote.headers.get("retry-after") == (str(rule.retry_after) if rule.retry_after is not None else None)


def test_a_model_that_cannot_be_downloaded_promises_no_retry_and_shows_no_server_path(
    both: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # nothing listens there: every download fails at once
    monkeypatch.setenv("NO_PROXY", "")
    home = str(both.app.state.settings.session_path)  # type: ignore[attr-defined]
    response = both.post("/v1.0/removebg", files={"image_file": ("p.png", PHOTO)}, data={"model": "u2netp"})
    error = error_of(response, 503)
    assert error["code"] == "model_unavailable" and "u2netp" in error["title"]
    assert "retry-after" not in response.headers
    assert home not in response.text and "models pull u2netp" in error["detail"]
