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
    """The line under the model chooser: the weights' licence first (the default ones may be AGPL-3.0), then size."""
    name = name or settings.model_name
    if is_custom_model(name):
        return f"**{PurePath(name).name}**: a custom model set up on this server. Licence: whatever its author chose."
    entry = next((e for e in list_models(settings) if e.name == name), None)
    if entry is None:
        return ""
    where = "on this server" if entry.on_disk else availability(entry)
    line = f"Licence of these weights: **{entry.license}** · {entry.size_mb} MB, {where}."
    if "AGPL" in entry.license.upper():
        line += " The AGPL sets conditions on services built with these weights: read it before commercial use."
    return line


def model_details(name: str | None, settings: Settings, cache: SessionCache) -> str:
    """Where the chosen weights come from (source, licence, checksum) and what runs them, for the Details fold."""
    name = name or settings.model_name
    runs_on = f"Runs on: {engine_label(cache)}."
    if is_custom_model(name):
        return f"**Model:** {PurePath(name).name} (a custom model file on this server).\n\n{runs_on}"
    entry = next((e for e in list_models(settings) if e.name == name), None)
    if entry is None:
        return runs_on
    lines = [
        f"**Model:** {entry.name}, {entry.size_mb} MB ({'on this server' if entry.on_disk else 'not on this server yet'})",
        f"**Licence:** {entry.license}",
        f"**Source:** `{entry.source}`",
    ]
    if entry.sha256:
        lines.append(f"**Checksum (sha256):** `{entry.sha256}`")
    return "\n\n".join([*lines, runs_on])


def engine_label(cache: SessionCache) -> str:
    """What really runs: `OpenVINO CPU bf16` or `onnxruntime CPU` (not an onnxruntime provider name for OpenVINO)."""
    provider = cache.active_provider()
    if provider is None:
        return "not loaded yet"
    if provider.lower().startswith("openvino"):
        return provider
    return f"onnxruntime {provider.removesuffix('ExecutionProvider')}"


def footer(cache: SessionCache) -> str:
    """The page's last line: the version, and which models this server has in memory."""
    loaded = ", ".join(PurePath(name).name for name in cache.loaded_names()) or "none yet"
    return f"bgremove {__version__} · models ready: {loaded}"
