"""The model catalog: one table, readable in one screen (stdlib only, so config can validate names).

Sizes are rembg's release files (MB); resolution is the model's square input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["u2net", "isnet", "birefnet", "bria", "sam", "cloth"]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    label: str
    good_for: str
    size_mb: int
    input_size: int
    license: str
    family: Family


_SPECS = [
    ModelSpec("isnet-general-use", "IS-Net general", "general photos, sharp edges (default)", 179, 1024, "Apache-2.0", "isnet"),
    ModelSpec("u2net", "U²-Net", "general photos, rembg's classic default", 176, 320, "Apache-2.0", "u2net"),
    ModelSpec("u2netp", "U²-Net small", "fast previews, small download", 5, 320, "Apache-2.0", "u2net"),
    ModelSpec("u2net_human_seg", "U²-Net human", "people, portraits", 176, 320, "Apache-2.0", "u2net"),
    ModelSpec("u2net_cloth_seg", "U²-Net cloth", "clothes (upper, lower, full body parts)", 176, 768, "MIT", "cloth"),
    ModelSpec("silueta", "Silueta", "same as u2net at a quarter of the size", 43, 320, "Apache-2.0", "u2net"),
    ModelSpec("isnet-anime", "IS-Net anime", "anime and illustrated characters", 176, 1024, "Apache-2.0", "isnet"),
    ModelSpec("birefnet-general", "BiRefNet general", "best general quality, slow", 973, 1024, "MIT", "birefnet"),
    ModelSpec("birefnet-general-lite", "BiRefNet lite", "good quality, faster than birefnet-general", 224, 1024, "MIT", "birefnet"),
    ModelSpec("birefnet-general-fp16", "BiRefNet general fp16", "birefnet-general at half the download (GPU)", 490, 1024, "MIT", "birefnet"),
    ModelSpec("birefnet-portrait", "BiRefNet portrait", "people, hair detail", 973, 1024, "MIT", "birefnet"),
    ModelSpec("birefnet-dis", "BiRefNet DIS", "objects with fine structure", 973, 1024, "MIT", "birefnet"),
    ModelSpec("birefnet-hrsod", "BiRefNet HRSOD", "high-resolution salient objects", 973, 1024, "MIT", "birefnet"),
    ModelSpec("birefnet-cod", "BiRefNet COD", "camouflaged objects", 973, 1024, "MIT", "birefnet"),
    ModelSpec("birefnet-massive", "BiRefNet massive", "trained on the most data; general", 973, 1024, "MIT", "birefnet"),
    ModelSpec("bria-rmbg", "BRIA RMBG 2.0", "high quality; non-commercial licence", 977, 1024, "CC-BY-NC-4.0", "bria"),
    ModelSpec("sam", "Segment Anything (ViT-B)", "prompted segmentation; without a prompt keeps the object at the centre", 375, 1024, "Apache-2.0", "sam"),
]

CATALOG: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
DEFAULT_MODEL = "isnet-general-use"


def is_custom_model(name: str) -> bool:
    """A custom model is named by the path of its .onnx file."""
    return name.lower().endswith(".onnx")
