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

    def close(self, model: str, **run: str) -> dict[str, Any]:
        """Write manifest.json, merged into the one an earlier run left there; return this run's manifest."""
        manifest = build_manifest(self.items, model, **run)
        merged = merge_manifests(read_manifest(self.root / MANIFEST_NAME), manifest)
        write_atomically(self.root / MANIFEST_NAME, json.dumps(merged, indent=2).encode())
        return manifest


def read_manifest(path: Path) -> dict[str, Any] | None:
    """An earlier run's manifest.json, or None when there is none or it cannot be read as one."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and isinstance(found.get("items"), list) else None


def merge_manifests(earlier: dict[str, Any] | None, latest: dict[str, Any]) -> dict[str, Any]:
    """A second run into the same folder adds to its manifest instead of hiding the first run's files.

    The latest run's items replace earlier items with the same input name or the same output file (that file
    was just rewritten); every other earlier item is kept, first, in its order. Counts are recomputed.
    """
    if earlier is None:
        return latest
    names = {item["filename"] for item in latest["items"]}
    outputs = {item["output"] for item in latest["items"] if item.get("output")}
    kept = [
        item
        for item in earlier["items"]
        if isinstance(item, dict) and item.get("filename") not in names and not (item.get("output") and item["output"] in outputs)
    ]
    items = kept + latest["items"]
    return {
        **latest,  # the latest run's model, engine and precision
        "count": len(items),
        "completed": sum(item.get("status") == "completed" for item in items),
        "failed": sum(item.get("status") == "failed" for item in items),
        "items": items,
    }
