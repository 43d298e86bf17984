"""The Ray actor of `remove --engine ray`, watching itself: what tests/batch/test_ray.py swaps in to see whether
an actor works on a second row while one is in the model, and how many rows it holds at once.

A row is "in work" from the start of its read to the end of its call. Each forward pass waits, before the model
runs, until another row of this actor is in work too, or every row has been read (the last pass has no one to
overlap it): an actor that takes one row at a time never gets there, so that pass counts as `alone` (after
WAIT_SECONDS, once per actor) instead of hanging the test. The tally goes to `<OUTDIR>.probe/<pid>.json` after
every call. Shipped to the actors by value (`ray.cloudpickle.register_pickle_by_value`): a worker need not find
the tests folder.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgremove.batch.engine import BatchInput
from bgremove.batch.ray import RemovalWorker

ROWS = 6  # the photos the test gives this actor
WAIT_SECONDS = 60.0  # only an actor that never overlaps waits this long, once


@dataclass(frozen=True)
class WatchedInput(BatchInput):
    """A row's input that says when `process_item` starts reading it."""

    on_read: Callable[[str], None] | None = field(default=None, repr=False, compare=False)

    def read(self) -> bytes:
        if self.on_read is not None:
            self.on_read(self.name)
        return super().read()


class WatchedWorker(RemovalWorker):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._changed = threading.Condition()
        self._in_work: set[str] = set()
        self.tally = {"reads": 0, "passes": 0, "alone": 0, "peak": 0}
        session = self.cache.get(self.options.model).inner  # the actor's one model, shared by its threads
        run = session.run

        def forward(tensor: Any) -> Any:
            with self._changed:
                overlapped = self._changed.wait_for(
                    lambda: len(self._in_work) > 1 or self.tally["reads"] == ROWS,
                    timeout=WAIT_SECONDS if not self.tally["alone"] else 0,
                )
                self.tally["alone"] += not overlapped
                self.tally["passes"] += 1
            return run(tensor)

        session.run = forward  # type: ignore[method-assign]

    def _input(self, row: dict[str, Any]) -> BatchInput:
        item = super()._input(row)
        return WatchedInput(item.name, data=item.data, path=item.path, error=item.error, on_read=self._reading)

    def _reading(self, name: str) -> None:
        with self._changed:
            self._in_work.add(name)
            self.tally["reads"] += 1
            self.tally["peak"] = max(self.tally["peak"], len(self._in_work))
            self._changed.notify_all()

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        try:
            return super().__call__(row)
        finally:
            with self._changed:
                self._in_work.discard(row["name"])
                self._changed.notify_all()
                folder = Path(f"{self.output_root}.probe")
                folder.mkdir(exist_ok=True)
                (folder / f"{os.getpid()}.json").write_text(json.dumps(self.tally))
