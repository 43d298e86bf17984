"""What the UI says about models and the engine: the dropdown's choices, the model info line and the footer.

Every number and licence comes from `store.list_models`, so the dropdown, the model info, `/api/models` and
`models list` say the same thing (one size per model; the licence of the weights on disk, not the catalog's guess).
"""

from __future__ import annotations

from pathlib import PurePath

from bgremove import __version__
from bgremove.core.registry import is_custom_model
from bgremove.core.sessions import SessionCache
from bgremove.core.settings import Settings
from bgremove.core.store import CatalogEntry, list_models


def availability(entry: CatalogEntry) -> str:
    """On disk, or what choosing it costs; a model whose download failed here is not offered as a download."""
    if entry.on_disk:
        return "on disk"
    if entry.download_failed:
        return "cannot be downloaded right now"
    return f"downloads {entry.size_mb} MB"


def model_choices(settings: Settings) -> list[tuple[str, str]]:
    """Dropdown (label, value) pairs; a custom REMBG_MODEL_NAME file comes first, as it is the default."""
    choices = [(f"{entry.name} ({availability(entry)}) - {entry.good_for}", entry.name) for entry in list_models(settings)]
    if is_custom_model(settings.model_name):
        choices.insert(0, (f"{PurePath(settings.model_name).name} (custom model, on disk)", settings.model_name))
    return choices


def model_info(name: str | None, settings: Settings) -> str:
    """One Markdown line: size, where the weights came from, their licence and checksum."""
    name = name or settings.model_name
    if is_custom_model(name):
        return f"**{PurePath(name).name}**: a custom ONNX model set by REMBG_MODEL_NAME (licence: whatever its author chose)."
    entry = next((e for e in list_models(settings) if e.name == name), None)
    if entry is None:
        return ""
    where = "on disk" if entry.on_disk else availability(entry)
    parts = [
        f"**{entry.name}** ({where}, {entry.size_mb} MB)",
        f"licence **{entry.license}**",
        f"{'from' if entry.on_disk else 'downloads from'} `{entry.source}`",
    ]
    if entry.sha256:
        parts.append(f"sha256 `{entry.sha256[:12]}…`")
    return " · ".join(parts)


def engine_label(cache: SessionCache) -> str:
    """What really runs: `OpenVINO CPU bf16` or `onnxruntime CPU` (not an onnxruntime provider name for OpenVINO)."""
    provider = cache.active_provider()
    if provider is None:
        return "not loaded yet"
    if provider.lower().startswith("openvino"):
        return provider
    return f"onnxruntime {provider.removesuffix('ExecutionProvider')}"


def footer(cache: SessionCache) -> str:
    loaded = ", ".join(PurePath(name).name for name in cache.loaded_names()) or "none"
    return f"bgremove {__version__} · engine: `{engine_label(cache)}` · models loaded: {loaded}"
