"""Where a batch's results go: a zip, a folder, or a list in memory. Each writes outputs as they arrive
(then drops their bytes) and manifest.json last, so every door produces the same layout."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import IO, Any, Protocol

from bgremove.batch.engine import MANIFEST_NAME, ItemResult, build_manifest


class Sink(Protocol):
    def add(self, item: ItemResult) -> None: ...

    def close(self, model: str, **run: str) -> dict[str, Any]: ...


class ZipSink:
    """Outputs streamed into a zip (stored: PNG/JPG/WebP are already compressed), manifest.json last."""

    def __init__(self, target: IO[bytes] | Path) -> None:
        self.archive = zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED)
        self.items: list[ItemResult] = []

    def add(self, item: ItemResult) -> None:
        if item.data is not None and item.output:
            self.archive.writestr(item.output, item.data)
        item.release()
        self.items.append(item)

    def close(self, model: str, **run: str) -> dict[str, Any]:
        manifest = build_manifest(self.items, model, **run)
        self.archive.writestr(MANIFEST_NAME, json.dumps(manifest, indent=2))
        self.archive.close()
        return manifest


class FolderSink:
    """Outputs written under a folder (write, then rename: an interrupted run leaves no truncated file)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.items: list[ItemResult] = []
        root.mkdir(parents=True, exist_ok=True)

    def add(self, item: ItemResult) -> None:
        if item.data is not None and item.output:
            write_atomically(self.root / item.output, item.data)
        item.release()
        self.items.append(item)

    def close(self, model: str, **run: str) -> dict[str, Any]:
        manifest = build_manifest(self.items, model, **run)
        write_atomically(self.root / MANIFEST_NAME, json.dumps(manifest, indent=2).encode())
        return manifest


class MemorySink:
    """Results kept with their bytes (tests, small in-process batches)."""

    def __init__(self) -> None:
        self.items: list[ItemResult] = []

    def add(self, item: ItemResult) -> None:
        self.items.append(item)

    def close(self, model: str, **run: str) -> dict[str, Any]:
        return build_manifest(self.items, model, **run)


def write_atomically(target: Path, data: bytes) -> None:
    """Write to a hidden temp file beside `target`, then rename over it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
