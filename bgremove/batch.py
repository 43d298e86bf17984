"""Many inputs (files, folders, zips) through the pipeline with bounded workers.

Results arrive as each item finishes (the UI updates its table live), one bad file is a
failed entry, never a failed batch, and every door writes the same manifest.json.
"""

from __future__ import annotations

import json
import re
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

from bgremove.config import Settings, get_settings
from bgremove.errors import BgRemoveError, ImageTooLarge, UnsupportedFormat
from bgremove.pipeline import RemovalOptions, looks_like_zip, remove_background
from bgremove.sessions import SessionCache, get_cache

JUNK_NAMES = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$|Thumbs\.db$|desktop\.ini$)")


@dataclass(frozen=True)
class BatchInput:
    """One item: a name (relative path kept in the output) and its bytes, a file, or an error found early."""

    name: str
    data: bytes | None = None
    path: Path | None = None
    error: BgRemoveError | None = None

    def read(self) -> bytes:
        if self.error is not None:
            raise self.error
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()


@dataclass
class BatchItemResult:
    index: int
    filename: str
    status: Literal["completed", "failed"]
    output: str | None = None
    width: int | None = None
    height: int | None = None
    model: str | None = None
    seconds: float = 0.0
    error: str | None = None
    hint: str | None = None
    png: bytes | None = field(default=None, repr=False)

    def manifest_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "filename": self.filename,
            "status": self.status,
            "output": self.output,
            "width": self.width,
            "height": self.height,
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


def output_names(names: Iterable[str]) -> list[str]:
    """`a/b.jpg` -> `a/b.png`, unique (case-insensitively: `x.jpg` and `x.png` become `x.png` and `x-2.png`)."""
    taken: set[str] = set()
    result = []
    for name in names:
        safe = PurePosixPath(safe_relative_name(name))
        stem = safe.stem or "image"
        candidate = str(safe.with_name(f"{stem}.png"))
        counter = 2
        while candidate.lower() in taken or candidate.lower() == "manifest.json":
            candidate = str(safe.with_name(f"{stem}-{counter}.png"))
            counter += 1
        taken.add(candidate.lower())
        result.append(candidate)
    return result


def run_batch(
    inputs: list[BatchInput],
    options: RemovalOptions | None = None,
    *,
    settings: Settings | None = None,
    cache: SessionCache | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Iterator[BatchItemResult]:
    """Process `inputs` with BATCH_CONCURRENCY workers; yield each result as it finishes.

    At most 2 x workers items are in flight, so a huge folder never holds all its bytes in memory.
    """
    settings = settings or get_settings()
    cache = cache or get_cache()
    options = options or RemovalOptions()
    names = output_names(item.name for item in inputs)
    workers = settings.batch_concurrency

    def work(index: int) -> BatchItemResult:
        if on_start is not None:
            on_start(index)
        item = inputs[index]
        started = time.perf_counter()
        try:
            result = remove_background(item.read(), item.name, options, settings=settings, cache=cache)
        except BgRemoveError as exc:
            return BatchItemResult(index, item.name, "failed", model=options.model or settings.model_name,
                                   seconds=time.perf_counter() - started, error=exc.message, hint=exc.hint)
        except OSError as exc:  # unreadable file on disk
            return BatchItemResult(index, item.name, "failed", seconds=time.perf_counter() - started,
                                   error=f"{item.name} could not be read ({exc.strerror or exc}).",
                                   hint="Check the file exists and is readable.")
        return BatchItemResult(index, item.name, "completed", output=names[index], width=result.width,
                               height=result.height, model=result.model, seconds=result.seconds, png=result.png)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bgremove-batch") as pool:
        pending: set[Future[BatchItemResult]] = set()
        next_index = 0
        while next_index < len(inputs) or pending:
            while next_index < len(inputs) and len(pending) < 2 * workers:
                pending.add(pool.submit(work, next_index))
                next_index += 1
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()


def build_manifest(results: Iterable[BatchItemResult], model: str) -> dict[str, Any]:
    items = sorted(results, key=lambda r: r.index)
    return {
        "model": model,
        "count": len(items),
        "completed": sum(r.status == "completed" for r in items),
        "failed": sum(r.status == "failed" for r in items),
        "items": [r.manifest_entry() for r in items],
    }


def write_zip(results: Iterable[BatchItemResult], target: IO[bytes], model: str,
              on_result: Callable[[BatchItemResult], None] | None = None) -> dict[str, Any]:
    """Stream each PNG into a zip as it arrives (then drop its bytes), and manifest.json last."""
    finished: list[BatchItemResult] = []
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:  # PNG is already compressed
        for result in results:
            if result.png is not None and result.output:
                archive.writestr(result.output, result.png)
                result.png = None
            finished.append(result)
            if on_result is not None:
                on_result(result)
        manifest = build_manifest(finished, model)
        archive.writestr("manifest.json", json.dumps(manifest, indent=2))
    return manifest


def inputs_from_zip(source: IO[bytes] | Path, settings: Settings | None = None, prefix: str = "") -> list[BatchInput]:
    """Entries of a zip as inputs. Zip bombs (entry count, total size) fail the whole request;
    nested zips, oversized or encrypted entries become failed items."""
    settings = settings or get_settings()
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsupportedFormat(f"{prefix or 'The upload'} is not a readable zip archive ({exc}).",
                                hint="Re-create the zip, or send the images as separate files.") from exc
    with archive:
        entries = [info for info in archive.infolist() if not info.is_dir() and not JUNK_NAMES.search(info.filename)]
        if len(entries) > settings.max_batch_files:
            raise ImageTooLarge(f"The zip has {len(entries)} files; the limit is {settings.max_batch_files}.",
                                hint="Split it into smaller zips or raise MAX_BATCH_FILES.")
        declared = sum(info.file_size for info in entries)
        if declared > settings.max_batch_uncompressed_bytes:
            raise ImageTooLarge(
                f"The zip expands to {declared / 1e6:.0f} MB; the limit is {settings.max_batch_uncompressed_mb:g} MB.",
                hint="Split it into smaller zips or raise MAX_BATCH_UNCOMPRESSED_MB.")
        items = []
        for info in entries:
            name = prefix + info.filename
            items.append(_zip_entry(archive, info, name, settings))
        return items


def _zip_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, settings: Settings) -> BatchInput:
    if info.flag_bits & 0x1:
        return BatchInput(name, error=UnsupportedFormat(f"{name} is encrypted.", hint="Zip it again without a password."))
    if info.file_size > settings.max_image_bytes:
        return BatchInput(name, error=ImageTooLarge(
            f"{name} is {info.file_size / 1e6:.1f} MB; the limit is {settings.max_image_size_mb:g} MB."))
    try:
        with archive.open(info) as handle:
            data = handle.read(settings.max_image_bytes + 1)  # the declared size can lie
    except (zipfile.BadZipFile, OSError, NotImplementedError, EOFError) as exc:
        return BatchInput(name, error=UnsupportedFormat(f"{name} cannot be extracted ({exc}).", hint="Re-create the zip."))
    if len(data) > settings.max_image_bytes:
        return BatchInput(name, error=ImageTooLarge(f"{name} is over {settings.max_image_size_mb:g} MB."))
    if looks_like_zip(data):
        return BatchInput(name, error=UnsupportedFormat(f"{name} is a zip inside the zip; nested zips are not opened.",
                                                        hint="Put the images in one zip (folders inside are fine)."))
    return BatchInput(name, data=data)


def inputs_from_paths(paths: Iterable[Path], settings: Settings | None = None) -> tuple[list[BatchInput], list[Path]]:
    """Files as given, folders recursively (relative paths kept). Returns inputs and skipped non-image files."""
    settings = settings or get_settings()
    allowed = {f".{ext}" for ext in settings.allowed_extensions}
    items: list[BatchInput] = []
    skipped: list[Path] = []
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                relative = file.relative_to(path).as_posix()
                if file.suffix.lower() in allowed and not any(part.startswith(".") for part in file.relative_to(path).parts):
                    items.append(BatchInput(relative, path=file))
                else:
                    skipped.append(file)
        elif path.suffix.lower() == ".zip":
            items.extend(inputs_from_zip(path, settings, prefix=f"{path.stem}/"))
        else:
            items.append(BatchInput(path.name, path=path))
    return items, skipped

