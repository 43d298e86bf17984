"""`python -m bgremove`: list and pull models, remove backgrounds from files, folders and zips.

Heavy imports (onnxruntime, rembg, Pillow) happen inside the commands, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import BinaryIO

from bgremove import __version__

STDIO = Path("-")  # as INPUT: stdin; as OUTDIR: stdout
REMOVE_EXAMPLES = """examples:
  bgremove remove photo.jpg -o out/              out/photo.png and out/manifest.json
  bgremove remove photos/ shots.zip -o out/ --json
  cat photo.jpg | bgremove remove - > photo.png  stdin to stdout; logs and errors stay on stderr
  bgremove remove photo.jpg -o - > photo.png     one file to stdout
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bgremove", description="Remove image backgrounds with rembg's ONNX models.",
                                     epilog="Settings come from the environment or ./.env (see .env.example), e.g. "
                                            "REMBG_MODEL_NAME, REMBG_SESSION_PATH, BATCH_CONCURRENCY. "
                                            "Examples: bgremove remove -h")
    parser.add_argument("--version", action="version", version=f"bgremove {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="list or pull models")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    listing = model_commands.add_parser("list", help="the catalog, with what is on disk")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pull = model_commands.add_parser("pull", help="download models (default: REMBG_MODEL_NAME)")
    pull.add_argument("names", nargs="*", metavar="NAME", help="catalog model names, e.g. isnet-general-use u2net (see models list)")
    pull.add_argument("--force", action="store_true", help="download again even if present (fixes a corrupt file)")

    remove = commands.add_parser("remove", help="remove backgrounds from images, folders (recursive) and zips",
                                 epilog=REMOVE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    remove.add_argument("inputs", nargs="+", type=_path_or_uri, metavar="INPUT",
                        help="image (png, jpg, webp), folder or zip; - reads one image from stdin")
    remove.add_argument("-o", "--output", type=_path_or_uri, metavar="OUTDIR",
                        help="folder for PNGs and manifest.json; - writes the one PNG to stdout "
                             "(the default, and only then optional, when the only INPUT is -)")
    remove.add_argument("-m", "--model", help="model name or path to a .onnx file (default: REMBG_MODEL_NAME)")
    remove.add_argument("-a", "--alpha-matting", action="store_true", help="refine edges with alpha matting (slow)")
    remove.add_argument("-af", "--alpha-matting-foreground-threshold", type=int, default=240, metavar="0-255",
                        help="alpha matting: pixels above this are foreground (default: 240)")
    remove.add_argument("-ab", "--alpha-matting-background-threshold", type=int, default=10, metavar="0-255",
                        help="alpha matting: pixels below this are background (default: 10)")
    remove.add_argument("-ae", "--alpha-matting-erode-size", type=int, default=10, metavar="PX",
                        help="alpha matting: erode the uncertain edge by this many pixels (default: 10)")
    remove.add_argument("-ppm", "--post-process-mask", action="store_true", help="smooth the mask's boundary")
    remove.add_argument("-om", "--only-mask", action="store_true", help="write the mask instead of the cutout")
    remove.add_argument("-bg", "--bg-color", help="fill the background: #rrggbb[aa] or r,g,b[,a]")
    remove.add_argument("--json", action="store_true", help="print the manifest as JSON on stdout")
    scale = remove.add_argument_group("scale out (pip install -r requirements-ray.txt)")
    scale.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: threads in this process (default); ray: an actor pool on Ray (INPUT/OUTDIR may be s3://... URIs)")
    scale.add_argument("--address", metavar="ADDR", help="join this Ray cluster (host:6379, auto, ray://host:10001); default: start a local one")
    scale.add_argument("--workers", type=int, metavar="N", help="Ray actors, one model each (default: one per CPU of the cluster)")
    scale.add_argument("--gpus-per-worker", type=float, metavar="G", help="GPUs per Ray actor, e.g. 1 or 0.5 (needs onnxruntime-gpu)")
    return parser


def _path_or_uri(text: str) -> Path | str:
    """A local path, or a URI such as s3://bucket/photos kept as text (Path would fold its `//`)."""
    return text if "://" in text else Path(text)


def _check_stdio(args: argparse.Namespace) -> str | None:
    """Why this use of `-` cannot work, or None. Sets OUTDIR to `-` (stdout) when the only INPUT is `-`."""
    if args.inputs.count(STDIO) > 1:
        return "- (stdin) can be given once"
    if args.output is None:
        if args.inputs != [STDIO]:
            return "-o OUTDIR is required (it may be left out only when the one INPUT is -, stdin)"
        args.output = STDIO
    if STDIO in [*args.inputs, args.output] and getattr(args, "engine", "local") != "local":
        return "- (stdin/stdout) works with --engine local only"
    if args.output == STDIO and args.json:
        return "--json prints the manifest on stdout, which -o - uses for the PNG: use -o OUTDIR with --json"
    if args.output == STDIO and sys.stdout.isatty():
        return "not writing PNG bytes to a terminal: redirect stdout (> out.png) or use -o OUTDIR"
    return None


def _claim_stdout() -> BinaryIO:
    """A private handle on stdout for the PNG; fd 1 then points at stderr, so nothing else (a library's
    print, onnxruntime's C++ log) can end up inside the image."""
    sys.stdout.flush()
    sink = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return sink


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "model", None) and args.model.lower().endswith(".onnx"):
        os.environ["REMBG_MODEL_NAME"] = args.model  # a custom model is the run's configured model
        args.model = None
    from bgremove.errors import BgRemoveError
    from bgremove.observability import configure_logging

    try:
        from bgremove.config import get_settings

        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format)
        if args.command == "models":
            return _models_list(args, settings) if args.models_command == "list" else _models_pull(args, settings)
        return _remove(args, settings)
    except BgRemoveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _models_list(args: argparse.Namespace, settings) -> int:  # type: ignore[no-untyped-def]
    from bgremove.models import list_models

    entries = list_models(settings)
    if args.json:
        print(json.dumps([entry.to_dict() for entry in entries], indent=2))
        return 0
    print(f"{'model':24} {'on disk':8} {'size':>7} {'input':>6}  {'license':13} good for")
    for e in entries:
        star = "*" if e.is_default else " "
        print(f"{e.name + star:24} {'yes' if e.on_disk else 'no':8} {e.size_mb:>4} MB {e.input_size:>6}  {e.license:13} {e.good_for}")
    print(f"\n* default (REMBG_MODEL_NAME). Models live in {settings.session_path}/models")
    return 0


def _models_pull(args: argparse.Namespace, settings) -> int:  # type: ignore[no-untyped-def]
    from bgremove.models import pull

    for name in args.names or [settings.model_name]:
        path = pull(name, settings, force=args.force)
        print(f"{name}: {path}")
    return 0


def _remove(args: argparse.Namespace, settings) -> int:  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    from bgremove.batch import BatchInput, build_manifest, inputs_from_paths, run_batch
    from bgremove.pipeline import RemovalOptions, parse_color
    from bgremove.sessions import get_cache

    problem = _check_stdio(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    missing = [str(p) for p in args.inputs if isinstance(p, Path) and p != STDIO and not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    options = RemovalOptions(
        model=args.model,
        alpha_matting=args.alpha_matting,
        alpha_matting_foreground_threshold=args.alpha_matting_foreground_threshold,
        alpha_matting_background_threshold=args.alpha_matting_background_threshold,
        alpha_matting_erode_size=args.alpha_matting_erode_size,
        post_process_mask=args.post_process_mask,
        only_mask=args.only_mask,
        bg_color=parse_color(args.bg_color) if args.bg_color else None,
    ).validate()
    if args.engine == "ray":
        from bgremove.ray_engine import remove_with_ray

        return remove_with_ray(args, options, settings)
    uris = [str(p) for p in [*args.inputs, args.output] if not isinstance(p, Path)]
    if uris:
        print(f"error: URIs need --engine ray: {', '.join(uris)}", file=sys.stderr)
        return 2
    inputs, skipped = inputs_from_paths([p for p in args.inputs if p != STDIO], settings)
    if STDIO in args.inputs:  # the size limit + 1 byte, so the pipeline reports "too large" without reading it all
        inputs.insert(0, BatchInput("stdin", data=sys.stdin.buffer.read(settings.max_image_bytes + 1)))
    if not inputs:
        print("error: no images found (accepted: " + ", ".join(settings.allowed_extensions) + ")", file=sys.stderr)
        return 2
    if args.output == STDIO and len(inputs) != 1:
        print(f"error: -o - writes one PNG to stdout, but there are {len(inputs)} images: use -o OUTDIR", file=sys.stderr)
        return 2
    sink = _claim_stdout() if args.output == STDIO else None
    cache = get_cache()
    model = cache.get(options.model).name  # load once, before the workers start; fails fast if unavailable
    if sink is None:
        args.output.mkdir(parents=True, exist_ok=True)
    results = []
    with tqdm(total=len(inputs), unit="img", desc="removing", file=sys.stderr, disable=None) as bar:
        for result in run_batch(inputs, options, settings=settings, cache=cache):
            if result.png is not None and sink is not None:
                sink.write(result.png)
                result.png = None
            if result.png is not None and result.output:
                target = args.output / result.output
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(result.png)
                result.png = None
            results.append(result)
            bar.update(1)
    manifest = build_manifest(results, model)
    if sink is not None:
        sink.close()
    else:
        (args.output / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if args.json:
        print(json.dumps(manifest, indent=2))
    failed = [r for r in sorted(results, key=lambda r: r.index) if r.status == "failed"]
    print(f"{manifest['completed']} of {len(results)} images written to {'stdout' if sink else args.output}"
          + (f"; skipped {len(skipped)} non-image files" if skipped else ""), file=sys.stderr)
    for item in failed:
        print(f"FAILED {item.filename}: {item.error} {item.hint or ''}".rstrip(), file=sys.stderr)
    return 1 if failed else 0
