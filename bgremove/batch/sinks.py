"""Where a batch's results go: a zip, a folder, or a list in memory. Each writes outputs as they arrive
(then drops their bytes) and manifest.json last, so every door produces the same layout."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import IO, Any, Protocol

from bgremove.batch.engine import MANIFEST_NAME, ItemResult, build_manifest
from bgremove.core.files import write_atomically


class Sink(Protocol):
    def add(self, item: ItemResult) -> None: ...

    def close(self, model: str) -> dict[str, Any]: ...


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

    def close(self, model: str) -> dict[str, Any]:
        manifest = build_manifest(self.items, model)
        self.archive.writestr(MANIFEST_NAME, json.dumps(manifest, indent=2))
        self.archive.close()
        return manifest


class FolderSink:
    """Outputs written under a folder (`write_atomically`: an interrupted run leaves no truncated file)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.items: list[ItemResult] = []
        root.mkdir(parents=True, exist_ok=True)

    def add(self, item: ItemResult) -> None:
        if item.data is not None and item.output:
            write_atomically(self.root / item.output, item.data)
        item.release()
        self.items.append(item)

    def close(self, model: str) -> dict[str, Any]:
        manifest = build_manifest(self.items, model)
        write_atomically(self.root / MANIFEST_NAME, json.dumps(manifest, indent=2).encode())
        return manifest
