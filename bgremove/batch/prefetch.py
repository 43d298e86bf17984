"""Read ahead: the next items' bytes come off the disk (or out of an archive) while the current ones run.

The model takes one pass at a time (engines.py) and the batch runs BATCH_CONCURRENCY items at once, so one
item decodes or encodes while another's forward pass runs; what was left on the critical path is reading
the file itself, which on a network disk or a cold cache can take as long as the pass. One reader thread
loads the bytes of the next `depth` items, so a worker starts decoding the moment it is free. Memory stays
bounded: at most `depth` items are held read but not yet taken, whatever the size of the folder.

Jobs run BATCH_CONCURRENCY items at once through `overlapped` (one decodes or encodes while the other is in the
model), yielded in input order, and `commit_behind` writes each result durably on a writer thread while the next
items run. A cancel still takes effect within one item: no item starts once the job is stopped, the item that was
in the model is finished and kept (as the lone item was before), and the results of items that were only decoding
are dropped (they stay to do, and a resumed job runs them again).

Ray's actors (`batch/ray.py`) run BATCH_CONCURRENCY rows at once on threads over one model, as `run_batch` does,
so there too one row is read, decoded, encoded or written while another is in the model.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Generic, TypeVar

Item = TypeVar("Item")
READ_AHEAD = 2  # items read before a worker asks for them: enough to hide a read behind one forward pass


class ReadAhead(Generic[Item]):
    """Hands out `load(item)` by index, having started `load` on up to `depth` items past the furthest asked for."""

    def __init__(self, inputs: Sequence[Item], load: Callable[[Item], Item], depth: int = READ_AHEAD) -> None:
        self._inputs = inputs
        self._load = load
        self._depth = depth
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bgremove-read")
        self._reads: dict[int, Future[Item]] = {}
        self._next = 0
        self._lock = threading.Lock()

    def take(self, index: int) -> Item:
        """Item `index` loaded, and the loads of the following `depth` items started."""
        with self._lock:
            while self._next < min(index + 1 + self._depth, len(self._inputs)):
                self._reads[self._next] = self._reader.submit(self._load, self._inputs[self._next])
                self._next += 1
            read = self._reads.pop(index, None)
        return read.result() if read is not None else self._load(self._inputs[index])

    @property
    def held(self) -> int:
        """Items read (or being read) that no worker has taken yet: never more than `depth` (+1 being taken)."""
        with self._lock:
            return len(self._reads)

    def close(self) -> None:
        with self._lock:
            for read in self._reads.values():
                read.cancel()
            self._reads.clear()
        self._reader.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> ReadAhead[Item]:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()


Result = TypeVar("Result")


def commit_behind(results: Iterable[Result], commit: Callable[[Result], None]) -> None:
    """`commit` each result on a writer thread, in order, while `results` produces the next one (an executor's
    lazy iterator runs the next item meanwhile): nothing waits on the disk, one item is in the model at a time, so
    a cancel checked by the executor before each item still stops within one item, and item n is committed before
    item n + 1. Returns once every produced result is committed (a commit's error is raised here)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bgremove-write") as writer:
        previous: Future[None] | None = None
        for result in results:
            if previous is not None:
                previous.result()  # durable order: item n is committed before item n + 1
            previous = writer.submit(commit, result)
        if previous is not None:
            previous.result()


def overlapped(count: int, run: Callable[[int], Result], *, window: int, should_continue: Callable[[], bool]) -> Iterator[Result]:
    """`run(0)` ... `run(count - 1)`, up to `window` at once, yielded in input order.

    The model takes one pass at a time, so with a window of 2 the next item decodes (and the last one encodes)
    while the current one is in the model. An item starts only while `should_continue()`, asked after each yield,
    holds; once it does not, the result just yielded (the oldest item, the one in the model when the stop came) is
    the last: items still running finish before this returns and their results are dropped. At most `window` items
    are held, whatever `count` is."""
    # Named after the caller (a job worker "bgremove-job-0" runs items on "bgremove-job-0-item_0"...): logs and
    # thread dumps keep saying whose work it is.
    window = max(1, window)
    with ThreadPoolExecutor(max_workers=window, thread_name_prefix=f"{threading.current_thread().name}-item") as pool:
        running: deque[Future[Result]] = deque()
        started = 0
        while True:
            while started < count and len(running) < window and should_continue():
                running.append(pool.submit(run, started))
                started += 1
            if not running:
                return
            result = running.popleft().result()
            yield result
            if not should_continue():
                return
