"""Health polls are logged at DEBUG, every other request at INFO (records in uvicorn's own access-log shape;
the live `python app.py` log is checked in tests/test_docs.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from bgremove.core.observability import configure_logging
from bgremove.core.settings import Settings
from bgremove.web.app import create_app


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture()
def access(make_settings: Callable[..., Settings]) -> Iterator[Callable[[str], tuple[logging.Logger, Collect]]]:
    """An app built (it installs the access-log policy), then logging configured at a level, records collected."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    create_app(make_settings(), ui=False)
    logger = logging.getLogger("uvicorn.access")
    collect = Collect()

    def at(level: str) -> tuple[logging.Logger, Collect]:
        configure_logging(level)  # as app.py does with LOG_LEVEL; it resets the access logger's handlers
        logger.addHandler(collect)
        return logger, collect

    yield at
    logger.removeHandler(collect)
    root.handlers[:] = handlers
    root.setLevel(level)


def request(logger: logging.Logger, method: str, path: str, status: int = 200) -> None:
    """What uvicorn's h11/httptools protocols log for each response."""
    logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:50000", method, path, "1.1", status)


def test_health_polls_are_left_out_at_info(access: Callable[[str], tuple[logging.Logger, Collect]]) -> None:
    logger, collect = access("info")
    for _ in range(3):
        request(logger, "GET", "/api/health")
    request(logger, "POST", "/api/remove")
    request(logger, "GET", "/api/healthz", 404)
    assert [(r.levelname, r.args[2]) for r in collect.records] == [("INFO", "/api/remove"), ("INFO", "/api/healthz")]  # type: ignore[index]


def test_health_polls_show_at_debug(access: Callable[[str], tuple[logging.Logger, Collect]]) -> None:
    logger, collect = access("debug")
    request(logger, "GET", "/api/health?probe=1")
    request(logger, "GET", "/api/models")
    assert [(r.levelname, r.args[2]) for r in collect.records] == [("DEBUG", "/api/health?probe=1"), ("INFO", "/api/models")]  # type: ignore[index]
