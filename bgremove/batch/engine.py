"""The one batch engine: inputs (files, folders, zips, uploads) -> one item at a time through the pipeline -> sinks.

Every door that handles many images (REST batch, the UI's batch tab, the CLI, jobs, Ray) uses `process_item`
for each item and `run_batch` to drive them, so errors, hints, names and the manifest are the same everywhere.
Each item has its own error boundary: any exception from one file (RuntimeError or MemoryError from the
model included) marks that file failed, with a message and a hint, and the batch carries on.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

from bgremove.batch.prefetch import ReadAhead
from bgremove.core.codecs import looks_like_zip
from bgremove.core.errors import BgRemoveError, ImageTooLarge, UnsupportedFormat
from bgremove.core.options import RemovalOptions
from bgremove.core.pipeline import Result, remove_background
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings

log = logging.getLogger(__name__)

JUNK_NAMES = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$|Thumbs\.db$|desktop\.ini$)")
MANIFEST_NAME = "manifest.json"
UNEXPECTED_HINT = "This file could not be processed; the others were. Retry it alone, or report it with the server log."


@dataclass(frozen=True)
class BatchInput:
    """One item: a name (relative path kept in the output) and its bytes, a file, or an error found early."""

    name: str
    data: bytes | None = field(default=None, repr=False)
    path: Path | None = None
    error: BgRemoveError | None = None

    def in_memory(self) -> BatchInput:
        """This item with its file's bytes read (run ahead by `prefetch.ReadAhead`); unreadable stays as is,
        so its worker reports the error with the usual message."""
        if self.path is None or self.data is not None or self.error is not None:
            return self
        try:
            return dataclasses.replace(self, data=self.path.read_bytes())
        except OSError:
            return self

    def read(self) -> bytes:
        if self.error is not None:
            raise self.error
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()


@dataclass
class ItemResult:
    """What happened to one item; `result` holds the output bytes until a sink has written them."""

    index: int
    filename: str
    status: Literal["completed", "failed"]
    output: str | None = None
    model: str | None = None
    seconds: float = 0.0
    error: str | None = None
    hint: str | None = None
    result: Result | None = field(default=None, repr=False)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> bytes | None:
        return self.result.data if self.result is not None else None

    def release(self) -> None:
        """Drop the output bytes once written (a big batch never holds every output in memory)."""
        self.result = None

    def manifest_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            **self.metadata,
            "filename": self.filename,
            "status": self.status,
            "output": self.output,
            "model": self.model,
            "seconds": round(self.seconds, 4),
        }
        if self.status == "failed":
            entry["error"] = self.error
            entry["hint"] = self.hint
        return entry


def safe_relative_name(name: str) -> str:
    """A zip or folder name as a safe relative POSIX path: no absolute paths, `..`, drives or control chars."""
    parts = []
    for part in name.replace("\\", "/").split("/"):
        part = re.sub(r"[\x00-\x1f:*?\"<>|]+", "_", part).strip(" ")
        if part in ("", ".", ".."):
            continue
        parts.append(part[:150])
    return "/".join(parts) or "image"


def output_names(names: Iterable[str], extension: str = "png") -> list[str]:
    """`a/b.jpg` -> `a/b.<ext>`, unique case-insensitively (`x.jpg`, `x.png` -> `x.png`, `x-2.png`)."""
    taken: set[str] = set()
    result = []
    for name in names:
        safe = PurePosixPath(safe_relative_name(name))
        stem = safe.stem or "image"
        candidate = str(safe.with_name(f"{stem}.{extension}"))
        counter = 2
        while candidate.lower() in taken or candidate.lower() == MANIFEST_NAME:
            candidate = str(safe.with_name(f"{stem}-{counter}.{extension}"))
            counter += 1
        taken.add(candidate.lower())
        result.append(candidate)
    return result


def output_extension(options: RemovalOptions) -> str:
    """The extension every output of a batch gets (format=auto decides per file; png is its usual answer)."""
    return {"jpg": "jpg", "webp": "webp", "zip": "zip"}.get(options.format, "png")


def process_item(
    item: BatchInput,
    options: RemovalOptions,
    *,
    settings: Settings,
    cache: SessionCache,
    index: int = 0,
    output: str | None = None,
    bg_image: bytes | None = None,
    photo_images: Mapping[str, bytes] | None = None,
) -> ItemResult:
    """One item through the pipeline. Never raises for a bad file: any error becomes a failed item.
    `photo_images`: image inputs of this one photo (touch-up hints), name -> bytes."""
    started = time.perf_counter()
    model = options.model or PurePosixPath(settings.model_name).name

    def failed(error: str, hint: str) -> ItemResult:
        return ItemResult(index, item.name, "failed", model=model, seconds=time.perf_counter() - started, error=error, hint=hint)

    try:
        result = remove_background(
            item.read(), item.name, options, settings=settings, cache=cache, bg_image=bg_image, **(photo_images or {})
        )
    except BgRemoveError as exc:
        return failed(exc.message, exc.hint)
    except OSError as exc:  # unreadable file on disk
        return failed(f"{item.name} could not be read ({exc.strerror or exc}).", "Check the file exists and is readable.")
    except MemoryError:
        return failed(
            f"{item.name} needed more memory than the server has.",
            "Send a smaller image or lower MAX_IMAGE_PIXELS / MAX_CONCURRENT_INFERENCES.",
        )
    except Exception as exc:  # the per-item error boundary: a model or library failure fails this file only
        log.exception("Unexpected error processing %s", item.name)
        return failed(f"{item.name} failed inside the model or an image library ({type(exc).__name__}).", UNEXPECTED_HINT)
    name = output or result.output_name
    if result.extension != PurePosixPath(name).suffix.lstrip("."):  # format=auto chose another encoder
        name = str(PurePosixPath(name).with_suffix(f".{result.extension}"))
    metadata = {**result.metadata(), "output": name}
    return ItemResult(
        index, item.name, "completed", output=name, model=result.model, seconds=result.seconds, result=result, metadata=metadata
    )


def run_batch(
    inputs: list[BatchInput],
    options: RemovalOptions,
    *,
    settings: Settings,
    cache: SessionCache,
    bg_image: bytes | None = None,
    photo_images: Mapping[str, bytes] | None = None,
) -> Iterator[ItemResult]:
    """Process `inputs` with BATCH_CONCURRENCY workers; yield each result as it finishes.

    At most 2 x workers items are in flight, so a huge folder never holds all its bytes in memory. (Jobs, which
    must stop within one item and commit in order, run through `prefetch.overlapped` instead.)
    """
    names = output_names((item.name for item in inputs), output_extension(options))
    workers = settings.batch_concurrency
    ahead = ReadAhead(inputs, BatchInput.in_memory)  # the next files are read while these run

    def work(index: int) -> ItemResult:
        return process_item(
            ahead.take(index),
            options,
            settings=settings,
            cache=cache,
            index=index,
            output=names[index],
            bg_image=bg_image,
            photo_images=photo_images,
        )

    with ahead, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bgremove-batch") as pool:
        pending: set[Future[ItemResult]] = set()
        next_index = 0
        while next_index < len(inputs) or pending:
            while next_index < len(inputs) and len(pending) < 2 * workers:
                pending.add(pool.submit(work, next_index))
                next_index += 1
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()


def build_manifest(results: Iterable[ItemResult], model: str, **run: str) -> dict[str, Any]:
    """manifest.json, the same from every door: {model, count, completed, failed, items[...]} in input order;
    `run` adds what ran (the CLI's engine and precision)."""
    items = sorted(results, key=lambda r: r.index)
    return {
        "model": model,
        **run,
        "count": len(items),
        "completed": sum(r.status == "completed" for r in items),
        "failed": sum(r.status == "failed" for r in items),
        "items": [r.manifest_entry() for r in items],
    }


# --- inputs ---------------------------------------------------------------------------------------------------


def inputs_from_zip(source: IO[bytes] | Path, settings: Settings, prefix: str = "") -> list[BatchInput]:
    """Entries of a zip as inputs. Zip bombs (entry count, total size) fail the whole request;
    nested zips, oversized or encrypted entries become failed items."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsupportedFormat(
            f"{prefix or 'The upload'} is not a readable zip archive ({exc}).",
            hint="Re-create the zip, or send the images as separate files.",
        ) from exc
    with archive:
        entries = [info for info in archive.infolist() if not info.is_dir() and not JUNK_NAMES.search(info.filename)]
        if len(entries) > settings.max_batch_files:
            raise ImageTooLarge(
                f"The zip has {len(entries)} files; the limit is {settings.max_batch_files}.",
                hint="Split it into smaller zips or raise MAX_BATCH_FILES.",
            )
        declared = sum(info.file_size for info in entries)
        if declared > settings.max_batch_uncompressed_bytes:
            raise ImageTooLarge(
                f"The zip expands to {declared / 1e6:.0f} MB; the limit is {settings.max_batch_uncompressed_mb:g} MB.",
                hint="Split it into smaller zips or raise MAX_BATCH_UNCOMPRESSED_MB.",
            )
        return [_zip_entry(archive, info, prefix + info.filename, settings) for info in entries]


def _zip_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, settings: Settings) -> BatchInput:
    if info.flag_bits & 0x1:
        return BatchInput(name, error=UnsupportedFormat(f"{name} is encrypted.", hint="Zip it again without a password."))
    if info.file_size > settings.max_image_bytes:
        return BatchInput(
            name, error=ImageTooLarge(f"{name} is {info.file_size / 1e6:.1f} MB; the limit is {settings.max_image_size_mb:g} MB.")
        )
    try:
        with archive.open(info) as handle:
            data = handle.read(settings.max_image_bytes + 1)  # the declared size can lie
    except (zipfile.BadZipFile, OSError, NotImplementedError, EOFError) as exc:
        return BatchInput(name, error=UnsupportedFormat(f"{name} cannot be extracted ({exc}).", hint="Re-create the zip."))
    if len(data) > settings.max_image_bytes:
        return BatchInput(name, error=ImageTooLarge(f"{name} is over {settings.max_image_size_mb:g} MB."))
    if looks_like_zip(data):
        return BatchInput(
            name,
            error=UnsupportedFormat(
                f"{name} is a zip inside the zip; nested zips are not opened.",
                hint="Put the images in one zip (folders inside are fine).",
            ),
        )
    return BatchInput(name, data=data)


def inputs_from_files(files: list[tuple[str, IO[bytes]]], settings: Settings) -> list[BatchInput]:
    """Uploaded parts (REST, UI, jobs): zips are expanded (folders inside kept), other parts are images.

    The one output-folder rule (REST, UI, CLI, jobs alike): a zip's entries keep their paths inside the zip,
    a folder's files their paths inside the folder, a single file its name; all at the root of the output,
    and a name given twice gets `-2`, `-3` (see `output_names`). More than MAX_BATCH_FILES items, or no item at all, fails the request.
    """
    inputs: list[BatchInput] = []
    for number, (name, handle) in enumerate(files, start=1):
        name = name or f"file-{number}"
        head = handle.read(4)
        handle.seek(0)
        if looks_like_zip(head):
            inputs.extend(inputs_from_zip(handle, settings))
        else:
            data = handle.read(settings.max_image_bytes + 1)
            if len(data) > settings.max_image_bytes:
                inputs.append(
                    BatchInput(
                        name,
                        error=ImageTooLarge(
                            f"{name} is larger than {settings.max_image_size_mb:g} MB.",
                            hint="Send a smaller file or raise MAX_IMAGE_SIZE_MB.",
                        ),
                    )
                )
            else:
                inputs.append(BatchInput(name, data=data))
        if len(inputs) > settings.max_batch_files:
            raise ImageTooLarge(
                f"The batch has more than {settings.max_batch_files} files.", hint="Split it or raise MAX_BATCH_FILES."
            )
    if not inputs:
        raise UnsupportedFormat(
            "The batch is empty: no images were sent (or the zip holds no files).", hint="Add images, or a zip of images."
        )
    return inputs


def inputs_from_paths(paths: Iterable[Path], settings: Settings) -> tuple[list[BatchInput], list[Path]]:
    """Files as given, folders recursively, zips expanded: paths relative to each input (see inputs_from_files).

    Returns the inputs and the non-image files skipped in folders.
    """
    allowed = {f".{ext}" for ext in settings.allowed_extensions}
    items: list[BatchInput] = []
    skipped: list[Path] = []
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                relative = file.relative_to(path)
                if file.suffix.lower() in allowed and not any(part.startswith(".") for part in relative.parts):
                    items.append(BatchInput(relative.as_posix(), path=file))
                else:
                    skipped.append(file)
        elif path.suffix.lower() == ".zip":
            items.extend(inputs_from_zip(path, settings))
        else:
            items.append(BatchInput(path.name, path=path))
    return items, skipped
