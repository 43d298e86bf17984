"""The access log's policy: health polls are logged at DEBUG, every other request at INFO.

Load balancers, Docker's HEALTHCHECK and the UI poll /api/health every few seconds; at INFO those lines
drowned everything else (2,128 of them in one session). uvicorn writes each request as one INFO record on the
`uvicorn.access` logger; a filter on that logger demotes the health polls, so they show with LOG_LEVEL=debug.
"""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"


class DemotePaths(logging.Filter):
    """Access records for these paths become DEBUG records (and pass only where DEBUG is enabled)."""

    def __init__(self, paths: frozenset[str]) -> None:
        super().__init__()
        self.paths = paths

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access record: args = (client address, method, path with query, HTTP version, status code)
        args = record.args if isinstance(record.args, tuple) else ()
        path = str(args[2]).split("?", 1)[0] if len(args) >= 3 else ""
        if path not in self.paths:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(ACCESS_LOGGER).isEnabledFor(logging.DEBUG)


def log_polls_at_debug(*paths: str) -> None:
    """Install the filter once per process (the logger is process-wide; every app asks for the same paths)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    wanted = frozenset(paths)
    for existing in logger.filters:
        if isinstance(existing, DemotePaths):
            existing.paths = existing.paths | wanted
            return
    logger.addFilter(DemotePaths(wanted))
