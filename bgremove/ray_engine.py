"""`remove --engine ray`: the local batch, spread over a Ray cluster with Ray Data.

The driver does what must be done once: list the inputs (local folders with `inputs_from_paths`,
URIs with pyarrow.fs or fsspec), name every output with `output_names`, and check the model
loads. Ray Data then carries one small row per input (name, output name, where to read it) to
an actor pool; each actor keeps its own SessionCache (one loaded model per actor), runs each row
through `run_batch` (so errors, hints and PNG bytes are the local engine's), writes the PNG
straight to OUTDIR (image bytes never pass through the driver) and returns the manifest fields.
The driver streams those back for progress and writes manifest.json with `build_manifest`.

Resuming: an input whose output PNG already exists, decodes completely and has the input's
(EXIF-rotated) size is not processed again; the manifest lists it as completed with the
existing file. If OUTDIR's manifest.json names another model, nothing is skipped.

Ray is optional (`pip install -r requirements-ray.txt`): nothing here imports it at module level.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from PIL import Image

from bgremove.batch import BatchInput, BatchItemResult, build_manifest, inputs_from_paths, inputs_from_zip, output_names, run_batch
from bgremove.catalog import is_custom_model
from bgremove.config import Settings, get_settings
from bgremove.errors import BgRemoveError, InvalidOption
from bgremove.pipeline import RemovalOptions
from bgremove.sessions import SessionCache

if TYPE_CHECKING:
    import argparse

    from pyarrow.fs import FileSystem

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -r requirements-ray.txt"
LOCAL_SOURCE = -1  # a row's `source` when it is a path on the (shared) local disk
EXIF_ORIENTATION = 0x0112


class RayUnavailable(BgRemoveError):
    """Ray is not installed, or the cluster at --address cannot be reached."""


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
    """An input behind a pyarrow FileSystem; `run_batch` reads it like a local file (OSError -> failed item)."""

    filesystem: Any = None
    fs_path: str = ""

    def read(self) -> bytes:
        with self.filesystem.open_input_stream(self.fs_path) as handle:
            return handle.read()


def inputs_from_uri(uri: str, settings: Settings) -> tuple[list[BatchInput], list[str]]:
    """Like `inputs_from_paths` for one URI: a folder recursively (same order, filters and relative names),
    a zip, or one file. Returns inputs and skipped non-image files."""
    from pyarrow import fs as pafs

    filesystem, root = resolve_filesystem(uri)
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise InvalidOption(f"no such file or folder: {uri}")
    allowed = {f".{ext}" for ext in settings.allowed_extensions}
    if info.type == pafs.FileType.Directory:
        files = [entry.path for entry in filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
                 if entry.type == pafs.FileType.File]
        items: list[BatchInput] = []
        skipped: list[str] = []
        for path in sorted(files, key=lambda p: PurePosixPath(p).parts):  # the order Path objects sort in
            relative = PurePosixPath(path).relative_to(PurePosixPath(root))
            if relative.suffix.lower() in allowed and not any(part.startswith(".") for part in relative.parts):
                items.append(RemoteInput(relative.as_posix(), filesystem=filesystem, fs_path=path))
            else:
                skipped.append(f"{uri.rstrip('/')}/{relative.as_posix()}")
        return items, skipped
    name = PurePosixPath(root).name
    if name.lower().endswith(".zip"):
        with filesystem.open_input_stream(root) as handle:
            return inputs_from_zip(io.BytesIO(handle.read()), settings, prefix=f"{PurePosixPath(name).stem}/"), []
    return [RemoteInput(name, filesystem=filesystem, fs_path=root)], []


# --- the plan: everything decided on the driver -------------------------------------------------------


@dataclass
class RayBatchPlan:
    """What to process and where: rows for Ray Data, and results already known (inputs failed on the driver)."""

    rows: list[dict[str, Any]]
    known: list[BatchItemResult]
    skipped_files: list[str]
    model: str  # the manifest's model (catalog name or the custom model's path)
    item_model: str  # what each completed item reports (a custom model's file name)
    options: RemovalOptions
    settings: Settings
    filesystems: list[Any]
    output_fs: Any
    output_root: str
    output_label: str
    resume: bool

    @property
    def count(self) -> int:
        return len(self.rows) + len(self.known)


def plan_batch(
    inputs: Sequence[str | Path],
    output: str | Path,
    options: RemovalOptions | None = None,
    *,
    settings: Settings | None = None,
    resume: bool = True,
) -> RayBatchPlan:
    """List the inputs, name the outputs as the local engine does, and check the model loads (fails fast)."""
    from pyarrow import fs as pafs

    settings = settings or get_settings()
    options = (options or RemovalOptions()).validate()
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
    del check
    item_model = PurePosixPath(model).name if is_custom_model(model) else model

    if is_uri(output):
        output_fs, output_root = resolve_filesystem(str(output))
    else:
        output_fs, output_root = pafs.LocalFileSystem(), str(Path(output).expanduser().resolve())
    output_fs.create_dir(output_root, recursive=True)
    if resume:
        resume = _same_model_as_before(output_fs, output_root, model)

    names = output_names(item.name for item in items)
    filesystems: list[Any] = []
    rows: list[dict[str, Any]] = []
    known: list[BatchItemResult] = []
    for index, item in enumerate(items):
        row: dict[str, Any] = {"index": index, "name": item.name, "output": names[index],
                               "source": LOCAL_SOURCE, "path": None, "data": None}
        if item.error is not None:  # found while listing (zip entry too big, encrypted...): the local engine's entry
            known.append(_renumbered(next(run_batch([item], options, settings=settings)), index, None))
            continue
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
    return RayBatchPlan(rows, known, skipped, model, item_model, options, settings, filesystems,
                        output_fs, output_root, str(output), resume)


def _same_model_as_before(filesystem: Any, root: str, model: str) -> bool:
    """Resume only over outputs of the same model: OUTDIR's manifest.json (if any) must name it."""
    try:
        with filesystem.open_input_stream(f"{root}/manifest.json") as handle:
            previous = json.loads(handle.read()).get("model")
    except (OSError, ValueError, AttributeError):  # no manifest yet (first or interrupted run), or not ours
        return True
    if previous is not None and previous != model:
        log.warning("%s/manifest.json was made with %s, not %s: processing every input again", root, previous, model)
        return False
    return True


def _renumbered(result: BatchItemResult, index: int, output: str | None) -> BatchItemResult:
    result.index = index
    if result.status == "completed":
        result.output = output
    return result


# --- the actor ------------------------------------------------------------------------------------------


class RemovalWorker:
    """One Ray actor: its own SessionCache (the model loads once per actor), one row at a time."""

    def __init__(self, settings: Settings, options: RemovalOptions, filesystems: list[Any], output_fs: Any,
                 output_root: str, item_model: str, resume: bool) -> None:
        from pyarrow import fs as pafs

        self.settings = settings
        self.options = options
        self.filesystems = filesystems
        self.output_fs = output_fs
        self.output_root = output_root
        self.output_is_local = isinstance(output_fs, pafs.LocalFileSystem)
        self.item_model = item_model
        self.resume = resume
        self.cache = SessionCache(settings)
        try:
            self.cache.get(options.model)
        except BgRemoveError as exc:  # e.g. the model is missing on this node: every row reports it, as locally
            log.warning("Actor could not load its model: %s", exc)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        item = self._input(row)
        if self.resume:
            size = self._existing_output_size(row["output"], item)
            if size is not None:
                done = BatchItemResult(row["index"], item.name, "completed", output=row["output"], width=size[0],
                                       height=size[1], model=self.item_model, seconds=time.perf_counter() - started)
                return _row(done, resumed=True)
        result = _renumbered(next(run_batch([item], self.options, settings=self.settings, cache=self.cache)),
                             row["index"], row["output"])
        if result.png is not None and result.output:
            try:
                self._write(result.output, result.png)
            except OSError as exc:
                result = BatchItemResult(row["index"], item.name, "failed", model=result.model, seconds=result.seconds,
                                         error=f"{result.output} could not be written ({exc}).",
                                         hint="Check that OUTDIR is writable from every node.")
            result.png = None
        return _row(result, resumed=False)

    def _input(self, row: dict[str, Any]) -> BatchInput:
        if row["data"] is not None:
            return BatchInput(row["name"], data=row["data"])
        if row["source"] == LOCAL_SOURCE:
            return BatchInput(row["name"], path=Path(row["path"]))  # read by run_batch: the local engine's OSError text
        return RemoteInput(row["name"], filesystem=self.filesystems[row["source"]], fs_path=row["path"])

    def _target(self, output: str) -> str:
        return f"{self.output_root}/{output}"

    def _write(self, output: str, png: bytes) -> None:
        target = self._target(output)
        parent = target.rsplit("/", 1)[0]
        self.output_fs.create_dir(parent, recursive=True)
        if not self.output_is_local:  # an object store's PUT is already all-or-nothing
            with self.output_fs.open_output_stream(target) as handle:
                handle.write(png)
            return
        # On a disk, write then rename: a run killed mid-write leaves no truncated PNG for the resume check to trust.
        partial = f"{parent}/.{output.rsplit('/', 1)[-1]}.{os.getpid()}.partial"
        with self.output_fs.open_output_stream(partial) as handle:
            handle.write(png)
        self.output_fs.move(partial, target)

    def _existing_output_size(self, output: str, item: BatchInput) -> tuple[int, int] | None:
        """The output's size if it exists, decodes completely and matches the input's size; else None."""
        from pyarrow import fs as pafs

        target = self._target(output)
        if self.output_fs.get_file_info(target).type != pafs.FileType.File:
            return None
        try:
            with self.output_fs.open_input_file(target) as handle, Image.open(handle, formats=["PNG"]) as png:
                png.load()  # a truncated file fails here
                size = png.size
            expected = _input_size(item)
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
            return None
        return size if size == expected else None


def _input_size(item: BatchInput) -> tuple[int, int]:
    """Width and height the pipeline's output will have: the input's header size, EXIF rotation applied."""
    source: Any
    if item.data is not None:
        source = io.BytesIO(item.data)
    elif isinstance(item, RemoteInput):
        source = item.filesystem.open_input_file(item.fs_path)
    else:
        assert item.path is not None
        source = item.path.open("rb")
    with source, Image.open(source) as image:  # reads the header only
        width, height = image.size
        try:
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        except (OSError, SyntaxError, ValueError, TypeError, KeyError):  # damaged EXIF: the pipeline keeps the stored orientation
            orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _row(result: BatchItemResult, *, resumed: bool) -> dict[str, Any]:
    return {"index": result.index, "filename": result.filename, "status": result.status, "output": result.output,
            "width": result.width, "height": result.height, "model": result.model, "seconds": float(result.seconds),
            "error": result.error, "hint": result.hint, "resumed": resumed}


def _result(row: dict[str, Any]) -> BatchItemResult:
    def number(value: Any) -> int | None:
        return None if value is None else int(value)

    return BatchItemResult(int(row["index"]), row["filename"], row["status"], output=row["output"],
                           width=number(row["width"]), height=number(row["height"]), model=row["model"],
                           seconds=float(row["seconds"]), error=row["error"], hint=row["hint"])


# --- running it -----------------------------------------------------------------------------------------


@dataclass
class RayBatchReport:
    manifest: dict[str, Any]
    results: list[BatchItemResult]
    resumed: int = 0  # inputs whose valid output was already there
    workers: int = 0
    skipped_files: list[str] = field(default_factory=list)


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (ray without the [data] extra has no ray.data)
    except ImportError as exc:
        raise RayUnavailable(f"--engine ray needs Ray ({exc.name or 'ray'} is not installed): {INSTALL_HINT}",
                             hint="") from None
    return ray


def run_ray_batch(
    plan: RayBatchPlan,
    *,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    num_cpus: int | None = None,
    on_result: Callable[[BatchItemResult], None] | None = None,
) -> RayBatchReport:
    """Run `plan` on Ray: the Ray this process already joined (see `connect`), else a new local instance
    (address None) or the cluster at `address`, shut down at the end. Writes PNGs and manifest.json."""
    ray = import_ray()
    results = list(plan.known)
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
            for row in _dataset(ray, plan, pool, gpus_per_worker).iter_rows():
                result = _result(row)
                resumed += bool(row["resumed"])
                results.append(result)
                if on_result is not None:
                    on_result(result)
        finally:
            if started_here:
                ray.shutdown()
    manifest = build_manifest(results, plan.model)
    with plan.output_fs.open_output_stream(f"{plan.output_root}/manifest.json") as handle:
        handle.write(json.dumps(manifest, indent=2).encode())
    return RayBatchReport(manifest, sorted(results, key=lambda r: r.index), resumed, pool, plan.skipped_files)


def connect(address: str | None = None, *, num_cpus: int | None = None, workers: int | None = None) -> None:
    """ray.init for this engine: a new local instance (address None) or the cluster at `address`,
    no dashboard, no usage stats, and this package shipped to every worker. Call it yourself (and
    ray.shutdown after) to reuse one Ray across several `run_ray_batch` calls."""
    import bgremove

    ray = import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home, on air-gapped machines too
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        # Workers import bgremove from this upload: nodes need requirements*.txt installed, not our code.
        # (Ray accepts local directories only here, at the job level, not per actor.)
        "runtime_env": {"py_modules": [bgremove]},
    }
    if address is None:
        # A new local instance; with --workers above the core count, the user asked to oversubscribe.
        kwargs["num_cpus"] = num_cpus or max(os.cpu_count() or 1, workers or 0)
    else:
        _check_reachable(address)
    try:
        ray.init(address=address or "local", **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailable(f"Could not start or join Ray at {address or 'a new local instance'} ({exc}).",
                             hint="Check --address (host:6379, auto or ray://host:10001), that the cluster runs the same "
                                  "Ray and Python versions and, if it uses token auth, RAY_AUTH_MODE=token with its "
                                  "token in ~/.ray/auth_token or RAY_AUTH_TOKEN.") from exc


def _check_reachable(address: str) -> None:
    """A host:port nobody listens on makes ray.init retry for minutes; say so in seconds instead."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():  # auto, ray://...: Ray's own lookup and timeouts
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise RayUnavailable(f"No Ray cluster answers at {address} ({exc.strerror or exc}).",
                             hint="Start one with `ray start --head` (it prints the address), or leave out --address "
                                  "for a local one.") from None


def _pool_size(ray: Any, workers: int | None, gpus_per_worker: float, rows: int) -> int:
    """--workers, else what the cluster has room for now (one CPU, or gpus_per_worker GPUs, per actor)."""
    if workers is None:
        resources = ray.cluster_resources()
        if gpus_per_worker > 0:
            workers = int(resources.get("GPU", 0) // gpus_per_worker)
            if workers == 0:  # actors asking for GPUs would wait forever
                raise RayUnavailable(f"--gpus-per-worker {gpus_per_worker:g}: the Ray cluster has "
                                     f"{resources.get('GPU', 0):g} GPUs.",
                                     hint="Leave out --gpus-per-worker, or give --workers if an autoscaler adds GPU nodes.")
        else:
            workers = int(resources.get("CPU", 1))
    return max(1, min(workers, rows))


def _dataset(ray: Any, plan: RayBatchPlan, pool: int, gpus_per_worker: float) -> Any:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI shows one bar of images, as the local engine does
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-run INFO lines; Ray still writes them to its log files
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled" notice
    # Small blocks keep every actor busy: an actor takes a whole block at a time.
    rows_per_block = max(1, min(16, len(plan.rows) // (pool * 4)))
    dataset = ray.data.from_items(plan.rows, override_num_blocks=math.ceil(len(plan.rows) / rows_per_block))
    remote_args: dict[str, Any] = {"num_cpus": 1}
    if gpus_per_worker > 0:
        remote_args["num_gpus"] = gpus_per_worker
    return dataset.map(
        RemovalWorker,
        fn_constructor_kwargs={"settings": plan.settings, "options": plan.options, "filesystems": plan.filesystems,
                               "output_fs": plan.output_fs, "output_root": plan.output_root,
                               "item_model": plan.item_model, "resume": plan.resume},
        compute=ray.data.ActorPoolStrategy(size=pool),
        **remote_args,
    )


# --- the CLI door ---------------------------------------------------------------------------------------


def remove_with_ray(args: argparse.Namespace, options: RemovalOptions, settings: Settings) -> int:
    """`python -m bgremove remove ... --engine ray`: same outputs, manifest and exit codes as the local engine."""
    from tqdm import tqdm

    ray = import_ray()  # before listing or loading anything: a one-line error if Ray is missing
    connect(args.address, workers=args.workers)  # and one if the cluster is not there, before a long listing
    try:
        plan = plan_batch(args.inputs, args.output, options, settings=settings)
        with tqdm(total=plan.count, unit="img", desc="removing", file=sys.stderr, disable=None) as bar:
            report = run_ray_batch(plan, workers=args.workers, gpus_per_worker=args.gpus_per_worker or 0.0,
                                   on_result=lambda _: bar.update(1))
    finally:
        ray.shutdown()  # a local instance stops; a cluster only loses this job
    manifest = report.manifest
    if args.json:
        print(json.dumps(manifest, indent=2))
    failed = [r for r in report.results if r.status == "failed"]
    print(f"{manifest['completed']} of {manifest['count']} images written to {plan.output_label}"
          + (f" ({report.resumed} already there, kept)" if report.resumed else "")
          + (f"; skipped {len(plan.skipped_files)} non-image files" if plan.skipped_files else ""), file=sys.stderr)
    for item in failed:
        print(f"FAILED {item.filename}: {item.error} {item.hint or ''}".rstrip(), file=sys.stderr)
    return 1 if failed else 0
