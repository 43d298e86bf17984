"""The model registry: one class per model family, one table of catalog models.

A family knows how its models read an image (input side, mean, std: rembg's `normalize` arguments) and what
their first output means (how it becomes masks). The table says, per catalog model, its family, what it is
good for, its size and where its weights come from. The maths is rembg 2.0.86's (rembg/sessions/*.py).

settings.py validates REMBG_MODEL_NAME against CATALOG, so importing this module must stay cheap: the
families import numpy inside their methods, never at module level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float32]

Triple = tuple[float, float, float]
IMAGENET_MEAN: Triple = (0.485, 0.456, 0.406)
IMAGENET_STD: Triple = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Prediction:
    """What one forward pass says about an image, at the model's resolution (the pipeline upsamples).

    masks: float32 HxW in [0, 1], min-max normalised as rembg does ((pred - min) / (max - min));
    raw: the first mask's model output before that normalisation (after sigmoid for BiRefNet), so a
    nearly empty image can be told from one whose subject fills the frame.
    """

    masks: list[FloatArray]
    raw: FloatArray


def min_max(pred: FloatArray) -> FloatArray:
    """rembg's (pred - min) / (max - min); a constant output (rembg: NaN, then 0 as uint8) is all background."""
    import numpy as np

    high, low = pred.max(), pred.min()
    if not high > low:
        return np.zeros_like(pred, dtype=np.float32)
    result: FloatArray = ((pred - low) / (high - low)).astype(np.float32, copy=False)
    return result


class ModelFamily:
    """Models that share one input format and one meaning of their first output (the only output read)."""

    name: ClassVar[str]
    side: ClassVar[int]  # square input, pixels
    mean: ClassVar[Triple]
    std: ClassVar[Triple]
    mask_names: ClassVar[tuple[str, ...]] = ("foreground",)

    @classmethod
    def raw(cls, output: FloatArray) -> FloatArray:
        """The first mask before normalisation, from the model's first output [1, C, side, side]."""
        import numpy as np

        first: FloatArray = np.asarray(output[0, 0], dtype=np.float32)
        return first

    @classmethod
    def predict(cls, output: FloatArray) -> Prediction:
        raw = cls.raw(output)
        return Prediction(masks=[min_max(raw)], raw=raw)


class U2net(ModelFamily):
    """rembg's u2net.py, u2netp.py, u2net_human_seg.py, silueta.py, u2net_custom.py."""

    name = "u2net"
    side = 320
    mean = IMAGENET_MEAN
    std = IMAGENET_STD


class Isnet(ModelFamily):
    """rembg's dis_general_use.py and dis_custom.py."""

    name = "isnet"
    side = 1024
    mean = (0.5, 0.5, 0.5)
    std = (1.0, 1.0, 1.0)


class IsnetAnime(ModelFamily):
    """rembg's dis_anime.py: ImageNet mean, but no division by its std."""

    name = "isnet-anime"
    side = 1024
    mean = IMAGENET_MEAN
    std = (1.0, 1.0, 1.0)


class Birefnet(ModelFamily):
    """rembg's birefnet_*.py: the output is a logit, so sigmoid comes before min-max."""

    name = "birefnet"
    side = 1024
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    @classmethod
    def raw(cls, output: FloatArray) -> FloatArray:
        import numpy as np

        logits = np.asarray(output[0, 0], dtype=np.float32)
        sigmoid: FloatArray = (1 / (1 + np.exp(-logits))).astype(np.float32, copy=False)  # rembg's formula
        return sigmoid


class Bria(ModelFamily):
    """rembg's bria_rmbg.py: ImageNet mean/std at 1024, min-max of the first output, no sigmoid."""

    name = "bria"
    side = 1024
    mean = IMAGENET_MEAN
    std = IMAGENET_STD


class Cloth(ModelFamily):
    """rembg's u2net_cloth_seg.py: 4 classes (background, upper, lower, full body); argmax, one mask per class.

    rembg resizes the class-index image with LANCZOS before picking classes, which invents class values at
    the borders between two classes; here the masks stay binary at 768x768 and the pipeline upsamples them.
    raw is the softmax probability of the first mask's class (upper body), a confidence rembg does not give.
    """

    name = "cloth"
    side = 768
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    mask_names = ("upper body", "lower body", "full body")

    @classmethod
    def raw(cls, output: FloatArray) -> FloatArray:
        import numpy as np

        logits = np.asarray(output[0], dtype=np.float32)
        exp = np.exp(logits - logits.max(axis=0, keepdims=True))
        upper: FloatArray = (exp[1] / exp.sum(axis=0)).astype(np.float32, copy=False)
        return upper

    @classmethod
    def predict(cls, output: FloatArray) -> Prediction:
        import numpy as np

        classes = np.argmax(output[0], axis=0)  # rembg: np.argmax(ort_outs[0], axis=1)
        masks = [(classes == index).astype(np.float32) for index in (1, 2, 3)]  # rembg's palette1..3
        return Prediction(masks=masks, raw=cls.raw(output))


FAMILIES: dict[str, type[ModelFamily]] = {f.name: f for f in (U2net, Isnet, IsnetAnime, Birefnet, Bria, Cloth)}


@dataclass(frozen=True)
class Download:
    """Where the default copy of a model's weights comes from, and under which licence."""

    url: str  # empty for a model converted from another one
    checksum: str  # rembg's pooch check: "md5:<hex>" or "sha256:<hex>"; empty when converted
    license: str
    converted_from: str | None = None  # birefnet-general-fp16: made from birefnet-general on first pull

    @property
    def source(self) -> str:
        return self.url or f"converted from {self.converted_from}"


RELEASE = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/"


def _release(file: str, checksum: str, license: str = "Apache-2.0") -> Download:
    return Download(RELEASE + file, checksum, license)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: type[ModelFamily]
    label: str
    good_for: str
    size_mb: int  # the default download, decimal MB
    download: Download

    @property
    def license(self) -> str:
        return self.download.license

    @property
    def input_size(self) -> int:
        return self.family.side


# fmt: off
_SPECS = [
    ModelSpec("isnet-general-use", Isnet, "IS-Net general", "general photos, sharp edges (default)", 179,
              _release("isnet-general-use.onnx", "md5:fc16ebd8b0c10d971d3513d564d01e29")),
    ModelSpec("u2net", U2net, "U²-Net", "general photos, rembg's classic default", 176,
              _release("u2net.onnx", "md5:60024c5c889badc19c04ad937298a77b")),
    ModelSpec("u2netp", U2net, "U²-Net small", "fast previews, small download", 5,
              _release("u2netp.onnx", "md5:8e83ca70e441ab06c318d82300c84806")),
    ModelSpec("u2net_human_seg", U2net, "U²-Net human", "people, portraits", 176,
              _release("u2net_human_seg.onnx", "md5:c09ddc2e0104f800e3e1bb4652583d1f")),
    ModelSpec("u2net_cloth_seg", Cloth, "U²-Net cloth", "clothes: upper body, lower body, full body", 176,
              _release("u2net_cloth_seg.onnx", "md5:2434d1f3cb744e0e49386c906e5a08bb", "MIT")),
    ModelSpec("silueta", U2net, "Silueta", "same as u2net at a quarter of the size", 43,
              _release("silueta.onnx", "md5:55e59e0d8062d2f5d013f4725ee84782")),
    ModelSpec("isnet-anime", IsnetAnime, "IS-Net anime", "anime and illustrated characters", 176,
              _release("isnet-anime.onnx", "md5:6f184e756bb3bd901c8849220a83e38e")),
    ModelSpec("birefnet-general", Birefnet, "BiRefNet general", "best general quality, slow", 973,
              _release("BiRefNet-general-epoch_244.onnx", "md5:7a35a0141cbbc80de11d9c9a28f52697", "MIT")),
    ModelSpec("birefnet-general-lite", Birefnet, "BiRefNet lite", "good quality, faster than birefnet-general", 224,
              _release("BiRefNet-general-bb_swin_v1_tiny-epoch_232.onnx", "md5:4fab47adc4ff364be1713e97b7e66334", "MIT")),
    ModelSpec("birefnet-general-fp16", Birefnet, "BiRefNet general fp16", "birefnet-general at half the size (GPU)", 490,
              Download("", "", "MIT", converted_from="birefnet-general")),
    ModelSpec("birefnet-portrait", Birefnet, "BiRefNet portrait", "people, hair detail", 973,
              _release("BiRefNet-portrait-epoch_150.onnx", "md5:c3a64a6abf20250d090cd055f12a3b67", "MIT")),
    ModelSpec("birefnet-dis", Birefnet, "BiRefNet DIS", "objects with fine structure", 973,
              _release("BiRefNet-DIS-epoch_590.onnx", "md5:2d4d44102b446f33a4ebb2e56c051f2b", "MIT")),
    ModelSpec("birefnet-hrsod", Birefnet, "BiRefNet HRSOD", "high-resolution salient objects", 973,
              _release("BiRefNet-HRSOD_DHU-epoch_115.onnx", "md5:c017ade5de8a50ff0fd74d790d268dda", "MIT")),
    ModelSpec("birefnet-cod", Birefnet, "BiRefNet COD", "camouflaged objects", 973,
              _release("BiRefNet-COD-epoch_125.onnx", "md5:f6d0d21ca89d287f17e7afe9f5fd3b45", "MIT")),
    ModelSpec("birefnet-massive", Birefnet, "BiRefNet massive", "trained on the most data; general", 973,
              _release("BiRefNet-massive-TR_DIS5K_TR_TEs-epoch_420.onnx", "md5:33e726a2136a3d59eb0fdf613e31e3e9", "MIT")),
    ModelSpec("bria-rmbg", Bria, "BRIA RMBG 2.0", "high quality; non-commercial licence", 977,
              _release("bria-rmbg-2.0.onnx", "sha256:5b486f08200f513f460da46dd701db5fbb47d79b4be4b708a19444bcd4e79958",
                       "CC-BY-NC-4.0")),
]
# fmt: on

CATALOG: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
DEFAULT_MODEL = "isnet-general-use"
CUSTOM_FAMILIES: dict[int, type[ModelFamily]] = {U2net.side: U2net, Isnet.side: Isnet}  # custom .onnx: by input side


def is_custom_model(name: str) -> bool:
    """A custom model is named by the path of its .onnx file."""
    return name.lower().endswith(".onnx")
