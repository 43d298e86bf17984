"""`python -m bgremove` (and the `bgremove` command): list and pull models, remove backgrounds from files,
folders and zips.

The removal flags (`bgremove.cli_flags`, shared with `jobs submit`) are generated from THE options schema
(`bgremove.core.options.RemovalOptions`): one flag per field, its help text the field's description, its
choices and bounds the field's, and the values a user typed validated by `parse_options`, so a refusal reads
exactly as it does at every other door.
Heavy imports (onnxruntime, the pipeline, Ray) happen inside the commands, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bgremove import __version__
from bgremove.cli_flags import add_option_flags, options_from_args
from bgremove.jobs_client import add_jobs_commands, run_jobs_command

if TYPE_CHECKING:
    from bgremove.batch.engine import ItemResult
    from bgremove.core.options import RemovalOptions
    from bgremove.core.settings import Settings

STDIO = Path("-")  # as INPUT: stdin; as OUTDIR: stdout
VERBOSE_HELP = "show log lines (-v: info, -vv: debug); LOG_LEVEL does the same. Without either, only warnings and errors"
REMOVE_EPILOG = """output folder: every input's images keep their paths relative to that input (a folder's files their
paths inside the folder, a zip's entries their paths inside the zip, a single file its name), all at the
root of OUTDIR; a name given twice gets -2, -3. Outputs take the --format's extension (photo.webp), and
OUTDIR/manifest.json lists every input with its status, output name, size and subject box.

examples:
  bgremove remove photo.jpg -o out/              out/photo.png and out/manifest.json
  bgremove remove photos/ shots.zip -o out/ --json
  bgremove remove photo.jpg -o out/ --size hd --crop --crop-margin 20px --format webp --bg-color ffffff
  cat photo.jpg | bgremove remove - > photo.png  stdin to stdout; logs and errors stay on stderr
  bgremove remove photo.jpg -o - > photo.png     one file to stdout
"""


# --- the parser ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bgremove",
        description="Remove image backgrounds with rembg's ONNX models.",
        epilog="Settings come from the environment or ./.env (see .env.example), e.g. "
        "REMBG_MODEL_NAME, REMBG_SESSION_PATH, BATCH_CONCURRENCY. "
        "Examples: bgremove remove -h",
    )
    parser.add_argument("--version", action="version", version=f"bgremove {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="list or pull models")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    listing = model_commands.add_parser("list", help="the catalog, with what is on disk and where it came from")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_verbose(listing)
    pull = model_commands.add_parser("pull", help="download models (default: REMBG_MODEL_NAME); tries every name")
    pull.add_argument(
        "names", nargs="*", metavar="NAME", help="catalog model names, e.g. isnet-general-use u2net (see models list)"
    )
    pull.add_argument("--force", action="store_true", help="download again even if present (fixes a corrupt file)")
    _add_verbose(pull)

    remove = commands.add_parser(
        "remove",
        help="remove backgrounds from images, folders (recursive) and zips",
        epilog=REMOVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    remove.add_argument(
        "inputs",
        nargs="+",
        type=_path_or_uri,
        metavar="INPUT",
        help="image (png, jpg, webp), folder or zip; - reads one image from stdin",
    )
    remove.add_argument(
        "-o",
        "--output",
        type=_path_or_uri,
        metavar="OUTDIR",
        help="folder for the outputs and manifest.json; - writes the one output to stdout "
        "(the default, and only then optional, when the only INPUT is -)",
    )
    add_image_input_flags(remove)
    remove.add_argument("--json", action="store_true", help="print the manifest as JSON on stdout")
    _add_verbose(remove)
    add_option_flags(remove)
    scale = remove.add_argument_group("scale out (pip install -r requirements-ray.txt)")
    scale.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: threads in this process (default); ray: an actor pool on Ray (INPUT/OUTDIR may be s3://... URIs)",
    )
    scale.add_argument(
        "--address", metavar="ADDR", help="join this Ray cluster (host:6379, auto, ray://host:10001); default: start a local one"
    )
    scale.add_argument(
        "--workers", type=int, metavar="N", help="Ray actors, one model each (default: one per CPU of the cluster)"
    )
    scale.add_argument(
        "--gpus-per-worker", type=float, metavar="G", help="GPUs per Ray actor, e.g. 1 or 0.5 (needs onnxruntime-gpu)"
    )

    add_jobs_commands(commands)  # jobs submit|status|fetch|cancel|list: a server's /api/jobs
    return parser


def add_image_input_flags(parser: argparse.ArgumentParser) -> None:
    """One `--bg-image PATH`-style flag per image input (IMAGE_INPUTS); a photo's own ones take one INPUT only."""
    from bgremove.core.options import IMAGE_INPUTS

    for spec in IMAGE_INPUTS.values():
        flag = "--" + spec.name.replace("_", "-")
        note = " One INPUT only." if spec.per_photo else ""
        parser.add_argument(flag, type=Path, metavar="PATH", dest=spec.name, help=f"{spec.description}{note}")


def _read_image_inputs(args: argparse.Namespace, settings: Settings) -> dict[str, bytes]:
    """The image inputs given (--bg-image, --keep-mask, ...), each under the size limit in every door's words."""
    from bgremove.core.errors import InvalidOption
    from bgremove.core.intake import read_limited
    from bgremove.core.options import IMAGE_INPUTS

    images = {}
    for spec in IMAGE_INPUTS.values():
        path = getattr(args, spec.name, None)
        if path is None:
            continue
        try:
            images[spec.name] = read_limited(path, settings.max_image_bytes, spec.name)
        except OSError as exc:
            flag = "--" + spec.name.replace("_", "-")
            raise InvalidOption(f"{flag} {path} cannot be read ({exc.strerror or exc}).", hint=spec.hint) from None
    return images


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """-v after the command too (`bgremove remove x.jpg -o out -v`); SUPPRESS keeps the main parser's count."""
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=VERBOSE_HELP)


def _path_or_uri(text: str) -> Path | str:
    """A local path, or a URI such as s3://bucket/photos kept as text (Path would fold its `//`)."""
    return text if "://" in text else Path(text)


# --- the commands --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one command; a reader that closes the pipe early (`bgremove models list | head -3`) ends it quietly."""
    try:
        code = _run(argv)
        sys.stdout.flush()  # here, not at exit, so a closed pipe is caught below
    except BrokenPipeError:
        # Python's documented recipe: point stdout at /dev/null so the flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "jobs":  # an HTTP client of a server: no settings, no model
        return run_jobs_command(args)
    from bgremove.core.errors import BgRemoveError

    try:
        if args.command == "models":
            settings = _settings(verbose=args.verbose)
            return _models_list(args, settings) if args.models_command == "list" else _models_pull(args, settings)
        options = options_from_args(args)
        custom = options.model if options.model and options.model.lower().endswith(".onnx") else None
        if custom:  # a custom model is this run's configured model (requests elsewhere may name catalog models only)
            options = options.model_copy(update={"model": None})
        return _remove(args, options, _settings(custom, verbose=args.verbose))
    except BgRemoveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _settings(custom_model: str | None = None, *, verbose: int = 0) -> Settings:
    """The process settings (environment over ./.env), with `--model path.onnx` as the configured model."""
    from bgremove.core.errors import ModelUnavailable
    from bgremove.core.settings import get_settings

    settings = get_settings()
    _configure_logging(settings, verbose)
    if custom_model is None:
        return settings
    path = Path(custom_model).expanduser()
    if not path.is_file():
        raise ModelUnavailable(f"Custom model {path} does not exist.", hint="Check the path given to --model.")
    return settings.model_copy(update={"model_name": str(path.resolve())})


class _PlainFormatter(logging.Formatter):
    """`warning: message`, as the CLI's own errors read: no timestamp, no logger name."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _configure_logging(settings: Settings, verbose: int) -> None:
    """The CLI prints results, not log lines: those appear with -v/-vv or an explicit LOG_LEVEL (environment or
    .env). Otherwise warnings and errors still show, as plain `warning: ...` lines."""
    from bgremove.core.observability import configure_logging

    if verbose or "log_level" in settings.model_fields_set:
        configure_logging("debug" if verbose > 1 else "info" if verbose else settings.log_level, settings.log_format)
        return
    configure_logging("warning", settings.log_format)
    if settings.log_format == "text":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_PlainFormatter())


def _models_list(args: argparse.Namespace, settings: Settings) -> int:
    from bgremove.core.int8 import describe
    from bgremove.core.store import list_models

    entries = list_models(settings)
    runs = {e.name: describe(e.name, settings) for e in entries}  # engine, precision, int8 status
    if args.json:
        print(json.dumps([{**entry.to_dict(), **runs[entry.name]} for entry in entries], indent=2))
        return 0
    print(f"{'model':24} {'on disk':8} {'size':>7} {'input':>6}  {'runs on':15} {'licence':13} {'source':44} good for")
    for e in entries:
        star = "*" if e.is_default else " "
        disk = "yes" if e.on_disk else ("failed" if e.download_failed else "no")
        source = e.source if len(e.source) <= 44 else e.source[:41] + "..."
        engine = f"{runs[e.name]['engine']} {runs[e.name]['precision']}"
        print(
            f"{e.name + star:24} {disk:8} {e.size_mb:>4} MB {e.input_size:>6}  {engine:15} {e.license:13} {source:44} {e.good_for}"
        )
    for e in entries:
        if e.on_disk:
            print(f"{e.name}: int8 {runs[e.name]['int8']}")
    print(
        f"\n* default (REMBG_MODEL_NAME). Models live in {settings.session_path}/models; licence and source are "
        "those of the file on disk (sha256 in --json), else of the default download."
    )
    return 0


def _models_pull(args: argparse.Namespace, settings: Settings) -> int:
    from bgremove.core.int8 import build_for_pull
    from bgremove.core.store import pull_many

    failed = 0
    for name, outcome in pull_many(args.names or [settings.model_name], settings, force=args.force):
        if isinstance(outcome, Path):
            print(f"{name}: {outcome}")
            _progress(f"{name}: " + build_for_pull(name, outcome, settings, force=args.force, progress=_progress))
        else:
            failed += 1
            print(f"error: {name}: {outcome}", file=sys.stderr)
    return 1 if failed else 0


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _check_stdio(args: argparse.Namespace) -> str | None:
    """Why this use of `-` cannot work, or None. Sets OUTDIR to `-` (stdout) when the only INPUT is `-`."""
    if args.inputs.count(STDIO) > 1:
        return "- (stdin) can be given once"
    if args.output is None:
        if args.inputs != [STDIO]:
            return "-o OUTDIR is required (it may be left out only when the one INPUT is -, stdin)"
        args.output = STDIO
    if STDIO in [*args.inputs, args.output] and args.engine != "local":
        return "- (stdin/stdout) works with --engine local only"
    if args.output == STDIO and args.json:
        return "--json prints the manifest on stdout, which -o - uses for the image: use -o OUTDIR with --json"
    if args.output == STDIO and sys.stdout.isatty():
        return "not writing image bytes to a terminal: redirect stdout (> out.png) or use -o OUTDIR"
    return None


def _claim_stdout() -> IO[bytes]:
    """A private handle on stdout for the image; fd 1 then points at stderr, so nothing else (a library's
    print, onnxruntime's C++ log) can end up inside the image."""
    sys.stdout.flush()
    sink = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return sink


def _usage_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _remove(args: argparse.Namespace, options: RemovalOptions, settings: Settings) -> int:
    problem = _check_stdio(args)
    if problem:
        return _usage_error(problem)
    missing = [str(p) for p in args.inputs if isinstance(p, Path) and p != STDIO and not p.exists()]
    if missing:
        return _usage_error(f"no such file or folder: {', '.join(missing)}")
    images = _read_image_inputs(args, settings)
    bg_image = images.pop("bg_image", None)
    photo_images = images  # the rest belong to one photo (touch-up strokes)
    if photo_images and args.engine == "ray":
        return _usage_error(f"{_flags(photo_images)} work with --engine local only")
    if args.engine == "ray":
        return _remove_with_ray(args, options, settings, bg_image)
    uris = [str(p) for p in [*args.inputs, args.output] if not isinstance(p, Path)]
    if uris:
        return _usage_error(f"URIs need --engine ray: {', '.join(uris)}")
    return _remove_locally(args, options, settings, bg_image, photo_images)


def _flags(images: dict[str, bytes]) -> str:
    return " and ".join("--" + name.replace("_", "-") for name in images)


def _remove_locally(
    args: argparse.Namespace,
    options: RemovalOptions,
    settings: Settings,
    bg_image: bytes | None,
    photo_images: dict[str, bytes] | None = None,
) -> int:
    from bgremove.core.sessions import SessionCache

    cache = SessionCache(settings)
    cache.start_loading(options.model)  # compiles while the batch machinery imports and the inputs are listed

    from tqdm import tqdm

    from bgremove.batch.engine import BatchInput, inputs_from_paths, run_batch
    from bgremove.batch.sinks import FolderSink

    inputs, skipped = inputs_from_paths([p for p in args.inputs if p != STDIO], settings)
    if STDIO in args.inputs:  # the size limit + 1 byte, so the pipeline reports "too large" without reading it all
        inputs.insert(0, BatchInput("stdin", data=sys.stdin.buffer.read(settings.max_image_bytes + 1)))
    if not inputs:
        return _usage_error("no images found (accepted: " + ", ".join(settings.allowed_extensions) + ")")
    if args.output == STDIO and len(inputs) != 1:
        return _usage_error(f"-o - writes one image to stdout, but there are {len(inputs)} images: use -o OUTDIR")
    if photo_images and len(inputs) != 1:  # strokes are drawn over one photo
        return _usage_error(
            f"{_flags(photo_images)} {'is' if len(photo_images) == 1 else 'are'} drawn over one photo, "
            f"but there are {len(inputs)} images: give one INPUT image"
        )
    loaded = cache.get(options.model)  # loaded once, before the workers start; fails fast if unavailable
    model = loaded.name
    stdout = _claim_stdout() if args.output == STDIO else None
    sink = None if stdout else FolderSink(args.output)
    results: list[ItemResult] = []
    with tqdm(total=len(inputs), unit="img", desc="removing", file=sys.stderr, disable=None) as bar:
        for result in run_batch(inputs, options, settings=settings, cache=cache, bg_image=bg_image, photo_images=photo_images):
            if stdout is not None:
                if result.data is not None:
                    stdout.write(result.data)
                result.release()
                results.append(result)
            else:
                assert sink is not None
                sink.add(result)
            bar.update(1)
    engine, precision = cache.active_engine() or (loaded.engine, loaded.precision)
    ran = {"engine": engine, "precision": precision}  # what really ran, in --json and manifest.json
    if stdout is not None:
        stdout.close()
        from bgremove.batch.engine import build_manifest

        manifest = build_manifest(results, model, **ran)
    else:
        assert sink is not None
        manifest = sink.close(model, **ran)
    return report(manifest, args.json, "stdout" if stdout else str(args.output), skipped=[str(p) for p in skipped])


def _remove_with_ray(args: argparse.Namespace, options: RemovalOptions, settings: Settings, bg_image: bytes | None) -> int:
    """--engine ray: the same outputs, manifest and exit codes as the local engine (see bgremove.batch.ray)."""
    from tqdm import tqdm

    from bgremove.batch.ray import connect, import_ray, plan_batch, run_ray_batch

    ray = import_ray()  # before listing or loading anything: a one-line error if Ray is missing
    connect(args.address, workers=args.workers)  # and one if the cluster is not there, before a long listing
    try:
        plan = plan_batch(args.inputs, args.output, options, settings=settings, bg_image=bg_image)
        with tqdm(total=plan.count, unit="img", desc="removing", file=sys.stderr, disable=None) as bar:
            outcome = run_ray_batch(
                plan, workers=args.workers, gpus_per_worker=args.gpus_per_worker or 0.0, on_result=lambda _: bar.update(1)
            )
    finally:
        ray.shutdown()  # a local instance stops; a cluster only loses this job
    return report(outcome.manifest, args.json, plan.output_label, skipped=plan.skipped_files, resumed=outcome.resumed)


def report(manifest: dict[str, Any], as_json: bool, where: str, *, skipped: Iterable[str] = (), resumed: int = 0) -> int:
    """What both engines print at the end: the manifest (--json) on stdout, a summary and each failure on stderr."""
    if as_json:
        print(json.dumps(manifest, indent=2))
    skipped = list(skipped)
    print(
        f"{manifest['completed']} of {manifest['count']} images written to {where}"
        + (f" ({resumed} already there, kept)" if resumed else "")
        + (f"; skipped {len(skipped)} non-image files" if skipped else ""),
        file=sys.stderr,
    )
    failed = [item for item in manifest["items"] if item["status"] == "failed"]
    for item in failed:
        print(f"FAILED {item['filename']}: {item['error']} {item.get('hint') or ''}".rstrip(), file=sys.stderr)
    return 1 if failed else 0
