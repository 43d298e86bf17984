"""`remove --engine ray`: the local batch, spread over a Ray cluster with Ray Data.

The driver does what must be done once: list the inputs (local paths with the engine's `inputs_from_paths`,
URIs through pyarrow.fs with the same order, filters and relative names), name every output with the
engine's `output_names` and the format's extension, and check the model loads. Ray Data then carries one
small row per input (where to read it, its output name) to an actor pool; each actor keeps its own
SessionCache (one loaded model per actor) and runs each row through the engine's `process_item`, the same
per-item function and error boundary as every other door. It writes the output straight to OUTDIR (image
bytes never pass through the driver) and returns the item's manifest entry. The driver streams those back
for progress and writes manifest.json with `build_manifest`.

An actor never waits on I/O: like the local engine's `run_batch`, it runs BATCH_CONCURRENCY rows at once on
threads over its one SessionCache, whose model takes one pass at a time (engines.py), so while one row is in
the model another is read and decoded, or encoded and written. Memory stays bounded per actor, whatever the
dataset's size: at most BATCH_CONCURRENCY rows in work and twice that many small blocks queued (see `_dataset`).

Resuming: manifest.json is written every CHECKPOINT_SECONDS while the batch runs, not only at the end, so a
killed run leaves the entries of what it finished. A rerun into the same OUTDIR keeps an output when that
manifest (same model) lists its input as completed under the output name this run would use, and the file
is there and decodes completely at the listed size; its entry is carried over. Everything else runs again.

Ray is optional (`pip install -r requirements-ray.txt`): nothing here imports it at module level. The CLI door
(`remove --engine ray`) is `bgremove.cli._remove_with_ray`.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from PIL import Image

from bgremove.batch.engine import (
    MANIFEST_NAME,
    BatchInput,
    ItemResult,
    build_manifest,
    inputs_from_paths,
    inputs_from_zip,
    output_extension,
    output_names,
    process_item,
)
from bgremove.batch.executors import RayUnavailable, connect_ray
from bgremove.batch.executors import import_ray as _import_ray
from bgremove.core.errors import BgRemoveError, InvalidOption
from bgremove.core.files import write_atomically
from bgremove.core.options import RemovalOptions
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem

log = logging.getLogger(__name__)

LOCAL_SOURCE = -1  # a row's `source` when it is a path on the (shared) local disk
CHECKPOINT_SECONDS = 10.0
MAX_ROWS_PER_BLOCK = 4  # a thread's last block runs with no other row to overlap it: keep it short
IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}


# --- where things live: local paths or pyarrow.fs / fsspec URIs --------------------------------------


def is_uri(location: str | Path) -> bool:
    """`s3://bucket/x`, `gs://...`, `file:///...`: anything with a scheme. A Path never is one."""
    return not isinstance(location, Path) and "://" in location


def resolve_filesystem(uri: str) -> tuple[FileSystem, str]:
    """A URI as (pyarrow FileSystem, path in it): pyarrow's own for s3/gs/hdfs/file, else fsspec's."""
    import pyarrow as pa
    from pyarrow import fs as pafs

    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        import fsspec  # any protocol fsspec knows (az://, gcs via gcsfs, http://...), wrapped for pyarrow

        fsspec_fs, path = fsspec.core.url_to_fs(uri)
        filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec_fs))
    return filesystem, path.rstrip("/") or path


@dataclass(frozen=True)
class RemoteInput(BatchInput):
    """An input behind a pyarrow FileSystem; `process_item` reads it like a local file (OSError -> failed item)."""

    filesystem: Any = None
    fs_path: str = ""

    def read(self) -> bytes:
        with self.filesystem.open_input_stream(self.fs_path) as handle:
            data: bytes = handle.read()
        return data


def inputs_from_uri(uri: str, settings: Settings) -> tuple[list[BatchInput], list[str]]:
    """`inputs_from_paths` for one URI: a folder recursively (the same order, filters and relative names),
    a zip, or one file. Returns inputs and skipped non-image files."""
    from pyarrow import fs as pafs

    filesystem, root = resolve_filesystem(uri)
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise InvalidOption(f"no such file or folder: {uri}")
    if info.type == pafs.FileType.Directory:
        entries = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
        files = sorted(
            (entry.path for entry in entries if entry.type == pafs.FileType.File), key=lambda path: PurePosixPath(path).parts
        )  # the order inputs_from_paths's Paths sort in
        items: list[BatchInput] = []
        skipped: list[str] = []
        for path in files:
            relative = PurePosixPath(path).relative_to(PurePosixPath(root))
            if _listed(relative, settings):
                items.append(RemoteInput(relative.as_posix(), filesystem=filesystem, fs_path=path))
            else:
                skipped.append(f"{uri.rstrip('/')}/{relative.as_posix()}")
        return items, skipped
    name = PurePosixPath(root).name
    if name.lower().endswith(".zip"):
        with filesystem.open_input_stream(root) as handle:
            return inputs_from_zip(io.BytesIO(handle.read()), settings), []
    return [RemoteInput(name, filesystem=filesystem, fs_path=root)], []


def _listed(relative: PurePosixPath, settings: Settings) -> bool:
    """inputs_from_paths's rule for a folder's file: an allowed extension, no hidden part."""
    allowed = {f".{ext}" for ext in settings.allowed_extensions}
    return relative.suffix.lower() in allowed and not any(part.startswith(".") for part in relative.parts)


# --- the plan: everything decided on the driver -------------------------------------------------------


@dataclass
class RayBatchPlan:
    """What to process and where: rows for Ray Data, and results already known (inputs failed on the driver)."""

    rows: list[dict[str, Any]]
    known: list[ItemResult]
    skipped_files: list[str]
    model: str  # the manifest's model: what the local engine's manifest says (catalog name or custom model path)
    options: RemovalOptions
    settings: Settings
    filesystems: list[Any]
    output_fs: Any
    output_root: str
    output_label: str
    bg_image: bytes | None = field(default=None, repr=False)

    @property
    def count(self) -> int:
        return len(self.rows) + len(self.known)


def plan_batch(
    inputs: Sequence[str | Path],
    output: str | Path,
    options: RemovalOptions | None = None,
    *,
    settings: Settings,
    resume: bool = True,
    bg_image: bytes | None = None,
) -> RayBatchPlan:
    """List the inputs, name the outputs as the local engine does, and check the model loads (fails fast)."""
    from pyarrow import fs as pafs

    options = options or RemovalOptions()
    items: list[BatchInput] = []
    skipped: list[str] = []
    for location in inputs:
        if is_uri(location):
            found, skipped_here = inputs_from_uri(str(location), settings)
            items.extend(found)
            skipped.extend(skipped_here)
        else:
            path = Path(location)
            if not path.exists():
                raise InvalidOption(f"no such file or folder: {path}")
            found_local, skipped_local = inputs_from_paths([path], settings)
            items.extend(found_local)
            skipped.extend(str(p) for p in skipped_local)
    if not items:
        raise InvalidOption("no images found (accepted: " + ", ".join(settings.allowed_extensions) + ")")

    check = SessionCache(settings)
    model = check.get(options.model).name  # loads once on the driver, like the local CLI: a bad model stops here

    if is_uri(output):
        output_fs, output_root = resolve_filesystem(str(output))
    else:
        output_fs, output_root = pafs.LocalFileSystem(), str(Path(output).expanduser().resolve())
    output_fs.create_dir(output_root, recursive=True)
    previous = _previous_entries(output_fs, output_root, model) if resume else []

    names = output_names((item.name for item in items), output_extension(options))
    filesystems: list[Any] = []
    rows: list[dict[str, Any]] = []
    known: list[ItemResult] = []
    for index, item in enumerate(items):
        if item.error is not None:  # found while listing (zip entry too big, encrypted...): the engine's failed item
            known.append(process_item(item, options, settings=settings, cache=check, index=index, output=names[index]))
            continue
        earlier = previous[index] if index < len(previous) else None
        done = earlier if earlier and earlier.get("filename") == item.name and earlier.get("status") == "completed" else None
        row: dict[str, Any] = {
            "index": index,
            "name": item.name,
            "output": names[index],
            "source": LOCAL_SOURCE,
            "path": None,
            "data": None,
            "previous": json.dumps(done) if done else None,
        }
        if isinstance(item, RemoteInput):
            if not any(fs is item.filesystem for fs in filesystems):
                filesystems.append(item.filesystem)
            row["source"] = next(i for i, fs in enumerate(filesystems) if fs is item.filesystem)
            row["path"] = item.fs_path
        elif item.path is not None:
            row["path"] = str(item.path.resolve())
        else:
            row["data"] = item.data  # a zip entry, already in memory
        rows.append(row)
    return RayBatchPlan(
        rows, known, skipped, model, options, settings, filesystems, output_fs, output_root, str(output), bg_image
    )


def _previous_entries(filesystem: Any, root: str, model: str) -> list[dict[str, Any] | None]:
    """The items of OUTDIR's manifest.json by index, if it was made with the same model; else nothing to keep."""
    try:
        with filesystem.open_input_stream(f"{root}/{MANIFEST_NAME}") as handle:
            previous = json.loads(handle.read())
        items = previous["items"]
    except (OSError, ValueError, KeyError, TypeError):  # no manifest yet, or not ours
        return []
    if previous.get("model") != model:
        log.warning(
            "%s/%s was made with %s, not %s: processing every input again", root, MANIFEST_NAME, previous.get("model"), model
        )
        return []
    return [item if isinstance(item, dict) else None for item in items]


# --- the actor ------------------------------------------------------------------------------------------


class RemovalWorker:
    """One Ray actor: its own SessionCache (the model loads once per actor), called from BATCH_CONCURRENCY threads
    at once (`_dataset`); each call is one row, with no state shared between calls but the thread-safe cache."""

    def __init__(
        self,
        settings: Settings,
        options: RemovalOptions,
        filesystems: list[Any],
        output_fs: Any,
        output_root: str,
        bg_image: bytes | None,
    ) -> None:
        from pyarrow import fs as pafs

        self.settings = settings
        self.options = options
        self.filesystems = filesystems
        self.output_fs = output_fs
        self.output_root = output_root
        self.output_is_local = isinstance(output_fs, pafs.LocalFileSystem)
        self.bg_image = bg_image
        self.cache = SessionCache(settings)
        try:
            self.cache.get(options.model)
        except BgRemoveError as exc:  # e.g. the model is missing on this node: every row reports it, as locally
            log.warning("Actor could not load its model: %s", exc)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        index = int(row["index"])
        if row["previous"] is not None:
            entry: dict[str, Any] = json.loads(row["previous"])
            if self._same_output(str(entry.get("output")), row["output"]) and self._complete(entry):
                return {"index": index, "entry": json.dumps(entry), "resumed": True}
        item = self._input(row)
        result = process_item(
            item,
            self.options,
            settings=self.settings,
            cache=self.cache,
            index=index,
            output=row["output"],
            bg_image=self.bg_image,
        )
        if result.data is not None and result.output:
            try:
                self._write(result.output, result.data)
            except OSError as exc:
                result = ItemResult(
                    index,
                    item.name,
                    "failed",
                    model=result.model,
                    seconds=result.seconds,
                    error=f"{result.output} could not be written ({exc}).",
                    hint="Check that OUTDIR is writable from every node.",
                )
        result.release()
        return {"index": index, "entry": json.dumps(result.manifest_entry()), "resumed": False}

    def _same_output(self, earlier: str, planned: str) -> bool:
        """The name this run would write; with format=auto the encoder (so the extension) was chosen per file."""
        if self.options.format == "auto":
            return PurePosixPath(earlier).with_suffix("") == PurePosixPath(planned).with_suffix("")
        return earlier == planned

    def _input(self, row: dict[str, Any]) -> BatchInput:
        if row["data"] is not None:
            return BatchInput(row["name"], data=row["data"])
        if row["source"] == LOCAL_SOURCE:
            return BatchInput(row["name"], path=Path(row["path"]))  # read by process_item: the engine's OSError text
        return RemoteInput(row["name"], filesystem=self.filesystems[row["source"]], fs_path=row["path"])

    def _target(self, output: str) -> str:
        return f"{self.output_root}/{output}"

    def _write(self, output: str, data: bytes) -> None:
        target = self._target(output)
        if self.output_is_local:  # write then rename: a run killed mid-write leaves no truncated file to trust
            write_atomically(Path(target), data)
            return
        self.output_fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with self.output_fs.open_output_stream(target) as handle:  # an object store's PUT is all-or-nothing already
            handle.write(data)

    def _complete(self, entry: dict[str, Any]) -> bool:
        """The earlier output is there and whole: an image decodes at the entry's size, a zip's members read back."""
        from pyarrow import fs as pafs

        target = self._target(str(entry["output"]))
        if self.output_fs.get_file_info(target).type != pafs.FileType.File:
            return False
        try:
            with self.output_fs.open_input_file(target) as handle:
                data = handle.read()
            if entry.get("format") == "zip":
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    return archive.testzip() is None and len(archive.namelist()) > 0
            with Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS.values())) as image:
                image.load()  # a truncated file fails here
                return image.size == (entry.get("width"), entry.get("height"))
        except (OSError, SyntaxError, ValueError, EOFError, zipfile.BadZipFile, Image.DecompressionBombError):
            return False


def _result(row: dict[str, Any]) -> ItemResult:
    """A row from an actor back into the engine's ItemResult (its manifest entry is the metadata)."""
    entry = json.loads(row["entry"])
    return ItemResult(
        int(row["index"]),
        entry["filename"],
        entry["status"],
        output=entry.get("output"),
        model=entry.get("model"),
        seconds=float(entry.get("seconds") or 0.0),
        error=entry.get("error"),
        hint=entry.get("hint"),
        metadata=entry,
    )


# --- running it -----------------------------------------------------------------------------------------


@dataclass
class RayBatchReport:
    manifest: dict[str, Any]
    results: list[ItemResult]
    resumed: int = 0  # inputs whose valid output was already there
    workers: int = 0
    skipped_files: list[str] = field(default_factory=list)


def import_ray() -> Any:
    """Ray with Ray Data, or RayUnavailable in one line saying what to install."""
    return _import_ray("--engine ray", data=True)


def engine_of(plan: RayBatchPlan) -> dict[str, str]:
    """The engine and precision the workers run, for manifest.json as the local engine writes them: what the
    driver's settings select for this model (every node runs the same packages and settings)."""
    from bgremove.core.int8 import describe

    found = describe(plan.model, plan.settings)
    return {"engine": found["engine"], "precision": found["precision"]}


def run_ray_batch(
    plan: RayBatchPlan,
    *,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    num_cpus: int | None = None,
    on_result: Callable[[ItemResult], None] | None = None,
) -> RayBatchReport:
    """Run `plan` on Ray: the Ray this process already joined (see `connect`), else a new local instance
    (address None) or the cluster at `address`, shut down at the end. Writes the outputs and manifest.json."""
    ray = import_ray()
    results = list(plan.known)
    ran = engine_of(plan)
    for result in plan.known:
        if on_result is not None:
            on_result(result)
    resumed = 0
    pool = 0
    if plan.rows:
        started_here = not ray.is_initialized()
        if started_here:
            connect(address, num_cpus=num_cpus, workers=workers)
        try:
            pool = _pool_size(ray, workers, gpus_per_worker, len(plan.rows))
            log.info("%d images on %d Ray workers (model %s)", len(plan.rows), pool, plan.model)
            checkpoint = time.monotonic()
            for row in _dataset(ray, plan, pool, gpus_per_worker).iter_rows():
                result = _result(row)
                resumed += bool(row["resumed"])
                results.append(result)
                if on_result is not None:
                    on_result(result)
                if time.monotonic() - checkpoint > CHECKPOINT_SECONDS:  # what a killed run leaves for the next one
                    _write_manifest(plan, build_manifest(results, plan.model, **ran))
                    checkpoint = time.monotonic()
        finally:
            if started_here:
                ray.shutdown()
    manifest = build_manifest(results, plan.model, **ran)
    _write_manifest(plan, manifest)
    return RayBatchReport(manifest, sorted(results, key=lambda r: r.index), resumed, pool, plan.skipped_files)


def _write_manifest(plan: RayBatchPlan, manifest: dict[str, Any]) -> None:
    from pyarrow import fs as pafs

    data = json.dumps(manifest, indent=2).encode()
    if isinstance(plan.output_fs, pafs.LocalFileSystem):
        write_atomically(Path(plan.output_root) / MANIFEST_NAME, data)
        return
    with plan.output_fs.open_output_stream(f"{plan.output_root}/{MANIFEST_NAME}") as handle:
        handle.write(data)


def connect(address: str | None = None, *, num_cpus: int | None = None, workers: int | None = None) -> None:
    """Join Ray with the one recipe (`bgremove.batch.executors.connect_ray`, as JOB_EXECUTOR=ray does): a new
    local instance (address None) or the cluster at `address`, this package shipped to every worker. Call it
    yourself (and ray.shutdown after) to reuse one Ray across several `run_ray_batch` calls."""
    import_ray()
    connect_ray(address, num_cpus=num_cpus, workers=workers)


def _pool_size(ray: Any, workers: int | None, gpus_per_worker: float, rows: int) -> int:
    """--workers, else what the cluster has room for now (one CPU, or gpus_per_worker GPUs, per actor)."""
    if workers is None:
        resources = ray.cluster_resources()
        if gpus_per_worker > 0:
            workers = int(resources.get("GPU", 0) // gpus_per_worker)
            if workers == 0:  # actors asking for GPUs would wait forever
                raise RayUnavailable(
                    f"--gpus-per-worker {gpus_per_worker:g}: the Ray cluster has {resources.get('GPU', 0):g} GPUs.",
                    hint="Leave out --gpus-per-worker, or give --workers if an autoscaler adds GPU nodes.",
                )
        else:
            workers = int(resources.get("CPU", 1))
    return max(1, min(workers, rows))


def _dataset(ray: Any, plan: RayBatchPlan, pool: int, gpus_per_worker: float) -> Any:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI shows one bar of images, as the local engine does
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-run INFO lines; Ray still writes them to its log files
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled" notice
    # Each actor runs `threads` calls at once (one block of rows each, in turn), the local engine's BATCH_CONCURRENCY
    # workers over one model: true multi-threading, or Ray Data would run the calls one at a time. Small blocks keep
    # every thread busy to the end (a thread takes a whole block); at most 2 x threads blocks wait per actor.
    threads = plan.settings.batch_concurrency
    rows_per_block = max(1, min(MAX_ROWS_PER_BLOCK, len(plan.rows) // (pool * threads * 2)))
    dataset = ray.data.from_items(plan.rows, override_num_blocks=math.ceil(len(plan.rows) / rows_per_block))
    compute = ray.data.ActorPoolStrategy(
        size=pool,
        max_concurrent_calls_per_actor=threads,
        enable_true_multi_threading=True,
        max_tasks_in_flight_per_actor=2 * threads,
    )
    remote_args: dict[str, Any] = {"num_cpus": 1}
    if gpus_per_worker > 0:
        remote_args["num_gpus"] = gpus_per_worker
    return dataset.map(
        RemovalWorker,
        fn_constructor_kwargs={
            "settings": plan.settings,
            "options": plan.options,
            "filesystems": plan.filesystems,
            "output_fs": plan.output_fs,
            "output_root": plan.output_root,
            "bg_image": plan.bg_image,
        },
        compute=compute,
        **remote_args,
    )
