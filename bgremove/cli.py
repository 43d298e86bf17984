"""`python -m bgremove` (and the `bgremove` command): list and pull models, remove backgrounds from files,
folders and zips.

The removal flags are generated from THE options schema (`bgremove.core.options.RemovalOptions`): one flag
per field, its help text the field's description, its choices and bounds the field's, and the values a user
typed validated by `parse_options`, so a refusal reads exactly as it does at every other door.
Heavy imports (onnxruntime, the pipeline, Ray) happen inside the commands, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from bgremove import __version__

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from bgremove.batch.engine import ItemResult
    from bgremove.core.options import RemovalOptions
    from bgremove.core.settings import Settings

STDIO = Path("-")  # as INPUT: stdin; as OUTDIR: stdout
# Short flags from before the schema (rembg's CLI spelling), kept as aliases of the generated long flags.
SHORT_FLAGS: dict[str, str] = {
    "model": "-m",
    "alpha_matting": "-a",
    "alpha_matting_foreground_threshold": "-af",
    "alpha_matting_background_threshold": "-ab",
    "alpha_matting_erode_size": "-ae",
    "post_process_mask": "-ppm",
    "only_mask": "-om",
    "bg_color": "-bg",
}
GROUP_TITLES = {
    "basic": "removal options",
    "advanced": "advanced removal options",
    "api": "aliases kept for rembg-style scripts",
}
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
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="list or pull models")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    listing = model_commands.add_parser("list", help="the catalog, with what is on disk and where it came from")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pull = model_commands.add_parser("pull", help="download models (default: REMBG_MODEL_NAME); tries every name")
    pull.add_argument(
        "names", nargs="*", metavar="NAME", help="catalog model names, e.g. isnet-general-use u2net (see models list)"
    )
    pull.add_argument("--force", action="store_true", help="download again even if present (fixes a corrupt file)")

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
    remove.add_argument(
        "--bg-image", type=Path, metavar="PATH", help="an image laid behind the subject, scaled to cover and centred"
    )
    remove.add_argument("--json", action="store_true", help="print the manifest as JSON on stdout")
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

    from bgremove.jobs_client import add_jobs_commands  # jobs submit|status|fetch|cancel|list: a server's /api/jobs

    add_jobs_commands(commands)
    return parser


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RemovalOptions field, in the schema's order, grouped as the UI groups them.

    Values are collected as typed (strings; booleans as flags) under the field's name and only given flags
    are collected (default SUPPRESS), so the schema alone supplies defaults and validates (`options_from_args`).
    Choices and bounds are shown, not enforced here: argparse would refuse them in its own words.
    """
    from bgremove.core.options import RemovalOptions, field_extra

    groups: dict[str, Any] = {}
    for name, field in RemovalOptions.model_fields.items():
        group_name = str(field_extra(name).get("group", "advanced"))
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(GROUP_TITLES.get(group_name, f"{group_name} options"))
        flags = [SHORT_FLAGS[name]] if name in SHORT_FLAGS else []
        flags.append("--" + name.replace("_", "-"))
        groups[group_name].add_argument(
            *flags, dest=name, default=argparse.SUPPRESS, **_flag_spec(name, field, field_extra(name))
        )


def _flag_spec(name: str, field: FieldInfo, extra: dict[str, Any]) -> dict[str, Any]:
    """argparse keyword arguments for one schema field: action or metavar, and help text with default and bounds."""
    kind = _plain_type(field.annotation)
    help_text = (field.description or "").rstrip(".") + "."
    example = extra.get("example")
    if example is not None:
        help_text += f" E.g. {example}."
    if kind is bool:
        if field.default:  # default on: the useful flag turns it off (--no-decontaminate), --decontaminate stays valid
            return {"action": argparse.BooleanOptionalAction, "help": _escape(help_text + " On by default.")}
        return {"action": "store_const", "const": True, "help": _escape(help_text)}
    if field.default is not None:
        help_text += f" Default: {field.default}."
    choices = get_args(kind) if get_origin(kind) is Literal else ()
    if choices:
        metavar = "{" + ",".join(map(str, choices)) + "}"
    elif kind in (int, float):
        low, high = _bounds(field)
        metavar = f"{low}-{high}" if low is not None and high is not None else ("N" if kind is int else "X")
    else:
        metavar = name.split("_")[-1].upper()
    return {"metavar": metavar, "help": _escape(help_text)}


def _plain_type(annotation: Any) -> Any:
    """`str | None` -> str; anything else as it is."""
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = [arg for arg in get_args(annotation) if arg is not type(None)]
        return kinds[0] if len(kinds) == 1 else str
    return annotation


def _bounds(field: FieldInfo) -> tuple[Any, Any]:
    low = high = None
    for item in field.metadata:
        low = getattr(item, "ge", getattr(item, "gt", low))
        high = getattr(item, "le", getattr(item, "lt", high))
    return low, high


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # argparse formats help with %


def _path_or_uri(text: str) -> Path | str:
    """A local path, or a URI such as s3://bucket/photos kept as text (Path would fold its `//`)."""
    return text if "://" in text else Path(text)


def options_from_args(args: argparse.Namespace) -> RemovalOptions:
    """The flags a user gave, validated by the schema (InvalidOption carries the message and hint every door shows)."""
    from bgremove.core.options import OPTION_NAMES, parse_options

    given = {name: getattr(args, name) for name in OPTION_NAMES if hasattr(args, name)}
    return parse_options(given)


# --- the commands --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "jobs":  # an HTTP client of a server: no settings, no model
        from bgremove.jobs_client import run_jobs_command

        return run_jobs_command(args)
    from bgremove.core.errors import BgRemoveError

    try:
        if args.command == "models":
            settings = _settings()
            return _models_list(args, settings) if args.models_command == "list" else _models_pull(args, settings)
        options = options_from_args(args)
        custom = options.model if options.model and options.model.lower().endswith(".onnx") else None
        if custom:  # a custom model is this run's configured model (requests elsewhere may name catalog models only)
            options = options.model_copy(update={"model": None})
        return _remove(args, options, _settings(custom))
    except BgRemoveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _settings(custom_model: str | None = None) -> Settings:
    """The process settings (environment over ./.env), with `--model path.onnx` as the configured model."""
    from bgremove.core.errors import ModelUnavailable
    from bgremove.core.observability import configure_logging
    from bgremove.core.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    if custom_model is None:
        return settings
    path = Path(custom_model).expanduser()
    if not path.is_file():
        raise ModelUnavailable(f"Custom model {path} does not exist.", hint="Check the path given to --model.")
    return settings.model_copy(update={"model_name": str(path.resolve())})


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


def _read_bg_image(path: Path | None, settings: Settings) -> bytes | None:
    """--bg-image's bytes, read up to the size limit + 1 (the pipeline then says "too large" in its words)."""
    if path is None:
        return None
    from bgremove.core.errors import InvalidOption

    try:
        with path.open("rb") as handle:
            return handle.read(settings.max_image_bytes + 1)
    except OSError as exc:
        raise InvalidOption(
            f"--bg-image {path} cannot be read ({exc.strerror or exc}).", hint="Give the path of a PNG, JPEG or WebP image."
        ) from None


def _remove(args: argparse.Namespace, options: RemovalOptions, settings: Settings) -> int:
    problem = _check_stdio(args)
    if problem:
        return _usage_error(problem)
    missing = [str(p) for p in args.inputs if isinstance(p, Path) and p != STDIO and not p.exists()]
    if missing:
        return _usage_error(f"no such file or folder: {', '.join(missing)}")
    bg_image = _read_bg_image(args.bg_image, settings)
    if args.engine == "ray":
        return _remove_with_ray(args, options, settings, bg_image)
    uris = [str(p) for p in [*args.inputs, args.output] if not isinstance(p, Path)]
    if uris:
        return _usage_error(f"URIs need --engine ray: {', '.join(uris)}")
    return _remove_locally(args, options, settings, bg_image)


def _remove_locally(args: argparse.Namespace, options: RemovalOptions, settings: Settings, bg_image: bytes | None) -> int:
    from tqdm import tqdm

    from bgremove.batch.engine import BatchInput, inputs_from_paths, run_batch
    from bgremove.batch.sinks import FolderSink
    from bgremove.core.sessions import SessionCache

    inputs, skipped = inputs_from_paths([p for p in args.inputs if p != STDIO], settings)
    if STDIO in args.inputs:  # the size limit + 1 byte, so the pipeline reports "too large" without reading it all
        inputs.insert(0, BatchInput("stdin", data=sys.stdin.buffer.read(settings.max_image_bytes + 1)))
    if not inputs:
        return _usage_error("no images found (accepted: " + ", ".join(settings.allowed_extensions) + ")")
    if args.output == STDIO and len(inputs) != 1:
        return _usage_error(f"-o - writes one image to stdout, but there are {len(inputs)} images: use -o OUTDIR")
    cache = SessionCache(settings)
    loaded = cache.get(options.model)  # load once, before the workers start; fails fast if unavailable
    model = loaded.name
    stdout = _claim_stdout() if args.output == STDIO else None
    sink = None if stdout else FolderSink(args.output)
    results: list[ItemResult] = []
    with tqdm(total=len(inputs), unit="img", desc="removing", file=sys.stderr, disable=None) as bar:
        for result in run_batch(inputs, options, settings=settings, cache=cache, bg_image=bg_image):
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
