"""Hostile-input fuzzing through every door: REST, gradio_client and the CLI.

    python scripts/fuzz.py                      # starts its own server on the default model, ~330 cases
    python scripts/fuzz.py --url http://127.0.0.1:7860 --skip-cli

Each case is a file (or a zip, or a malformed form) with what a correct server must answer: "ok" (200 and
a valid PNG of the input's upright size), "4xx" (a client error whose JSON says what is wrong) or "either"
(bit flips: a decoder may still read the file). Never a 5xx, never a dropped connection; /api/health
answers after every case, and no temporary file is left behind.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
Expect = Literal["ok", "4xx", "either"]


@dataclass
class Case:
    name: str
    data: bytes
    expect: Expect
    size: tuple[int, int] | None = None  # expected output size for "ok"
    endpoint: Literal["single", "batch", "form"] = "single"
    form: list[tuple[str, tuple[str, bytes] | str]] = field(default_factory=list)  # raw multipart parts for "form"


@dataclass
class Outcome:
    case: Case
    channel: str
    status: int | str
    ok: bool
    message: str = ""


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _photo(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    rng = np.random.RandomState(seed)
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[size[1] // 4 : 3 * size[1] // 4, size[0] // 4 : 3 * size[0] // 4] = 220
    pixels += rng.randint(0, 30, pixels.shape, dtype=np.uint8)
    return Image.fromarray(pixels)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_bomb(side: int, real_pixels: bool) -> bytes:
    """A 1-bit PNG of side x side: header only, or every row really compressed (~side^2/8/1000 bytes)."""
    header = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
    if not real_pixels:
        return header + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b"")
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return header + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def jpeg_with_size(width: int, height: int) -> bytes:
    """A small JPEG whose SOF header claims another size."""
    data = bytearray(_encode(_photo((16, 16)), "JPEG"))
    index = data.find(b"\xff\xc0")
    data[index + 5 : index + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _zip_raw_name(name: bytes, data: bytes) -> bytes:
    """A zip entry whose name is bytes that are not UTF-8 (and no UTF-8 flag): cp437 on reading."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("placeholder.png")
        archive.writestr(info, data)
    assert len(name) == len(b"placeholder.png")
    return buffer.getvalue().replace(b"placeholder.png", name)


def zero_zip(entries: int, megabytes: int) -> bytes:
    """Entries of zeros: about 1000:1 compression, written in chunks so the generator stays small in memory."""
    buffer = io.BytesIO()
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for index in range(entries):
            with archive.open(f"zeros-{index}.png", "w", force_zip64=True) as handle:
                for _ in range(megabytes):
                    handle.write(chunk)
    return buffer.getvalue()


def generate_cases(seed: int = 7, *, quick: bool = False) -> list[Case]:
    """Every case (about 330); `quick` leaves out the three that take seconds to build (a 30000x30000 PNG with
    real pixels, zips of 100 MB and 1.2 GB of zeros), for a fast sample."""
    rng = random.Random(seed)
    cases: list[Case] = []
    base = _photo((64, 48))
    valid = {"PNG": _encode(base, "PNG"), "JPEG": _encode(base, "JPEG", quality=90), "WEBP": _encode(base, "WEBP")}
    ext = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}

    for i in range(70):
        cases.append(Case(f"random-{i}.png", rng.randbytes(rng.choice([1, 7, 64, 500, 4096, 20000])), "4xx"))
    for fmt, data in valid.items():
        for cut in (1, 4, 8, 16, 33, len(data) // 4, len(data) // 2):
            cases.append(Case(f"truncated-{cut}.{ext[fmt]}", data[:cut], "4xx"))
        # Only the end marker missing: every pixel is there, so a decoder may accept it.
        cases.append(Case(f"truncated-end.{ext[fmt]}", data[:-10], "either"))
        for flip in range(25):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                position = rng.randrange(8, len(mutated))
                mutated[position] ^= 1 << rng.randrange(8)
            cases.append(Case(f"bitflip-{flip}.{ext[fmt]}", bytes(mutated), "either"))  # a flip may change the size
    for fmt, data in valid.items():  # trailing junk after a complete image is ignored by decoders
        for junk in (b"\x00" * 10, rng.randbytes(1000), b"PK\x03\x04" + rng.randbytes(100)):
            cases.append(Case(f"trailing-junk-{len(junk)}.{ext[fmt]}", data + junk, "ok", (64, 48)))
    cases += [
        Case("jpeg-soi-eoi.jpg", b"\xff\xd8\xff\xd9", "4xx"),
        Case("riff-only.webp", b"RIFF\x00\x00\x00\x00WEBP", "4xx"),
        Case("png-signature-only.png", b"\x89PNG\r\n\x1a\n", "4xx"),
        Case("png-no-idat.png", png_bomb(64, False)[:33] + b"\x00\x00\x00\x00IEND\xaeB`\x82", "4xx"),
    ]
    for fmt, data in valid.items():  # valid content under the wrong name: content wins
        for wrong in ("png", "jpg", "jpeg", "webp", "gif", "txt", ""):
            if wrong != ext[fmt]:
                cases.append(Case(f"wrong-name.{wrong}" if wrong else "no-extension", data, "ok", (64, 48)))
    others = {
        "GIF": _encode(base, "GIF"),
        "BMP": _encode(base, "BMP"),
        "TIFF": _encode(base, "TIFF"),
        "ICO": _encode(base, "ICO"),
        "PPM": _encode(base, "PPM"),
        "PDF": _encode(base, "PDF"),
        "TGA": _encode(base, "TGA"),
    }
    for fmt, data in others.items():
        for name in (f"image.{fmt.lower()}", "disguised.png", "disguised.jpg"):
            cases.append(Case(f"{fmt}-{name}", data, "4xx"))
    svg = b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'><rect/></svg>"
    cases += [
        Case("drawing.svg", svg, "4xx"),
        Case("drawing.png", svg, "4xx"),
        Case("photo.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + rng.randbytes(200), "4xx"),
        Case("photo.HEIC", rng.randbytes(300), "4xx"),
        Case("empty.png", b"", "4xx"),
        Case("empty.jpg", b"", "4xx"),
    ]
    cases += [
        Case("bomb-header-30000.png", png_bomb(30000, False), "4xx"),
        *([] if quick else [Case("bomb-30000.png", png_bomb(30000, True), "4xx")]),
        Case("bomb-65000.jpg", jpeg_with_size(65000, 65000), "4xx"),
        Case("bomb-20000x5000.jpg", jpeg_with_size(20000, 5000), "4xx"),
    ]
    for size in ((1, 1), (1, 10000), (10000, 1), (2, 3), (3000, 2), (1, 2)):
        for fmt in ("PNG", "JPEG", "WEBP"):
            if fmt == "WEBP" and max(size) > 16383:
                continue
            cases.append(Case(f"aspect-{size[0]}x{size[1]}.{ext[fmt]}", _encode(_photo(size), fmt), "ok", size))
    modes: dict[str, bytes] = {
        "grey16.png": _encode(Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257), "PNG"),
        "rgb48.png": _png_rgb48(base),
        "cmyk.jpg": _encode(base.convert("CMYK"), "JPEG"),
        "palette-transparent.png": _encode(base.convert("P"), "PNG", transparency=0),
        "palette.png": _encode(base.convert("P"), "PNG"),
        "la.png": _encode(base.convert("LA"), "PNG"),
        "l.jpg": _encode(base.convert("L"), "JPEG"),
        "one-bit.png": _encode(base.convert("1"), "PNG"),
        "rgba.webp": _encode(base.convert("RGBA"), "WEBP"),
        "animated.webp": _encode(base, "WEBP", save_all=True, append_images=[base.rotate(180)], duration=50),
        "animated.png": _encode(base, "PNG", save_all=True, append_images=[base.rotate(180)], duration=50),
        "progressive.jpg": _encode(base, "JPEG", progressive=True),
        "lossless.webp": _encode(base, "WEBP", lossless=True),
    }
    for name, data in modes.items():
        cases.append(Case(f"mode-{name}", data, "ok", (64, 48)))
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        upright = (48, 64) if orientation >= 5 else (64, 48)
        for fmt in ("JPEG", "PNG", "WEBP"):
            cases.append(Case(f"exif-{orientation}.{ext[fmt]}", _encode(base, fmt, exif=exif.tobytes()), "ok", upright))
    big_exif = Image.Exif()
    big_exif[0x010E] = "x" * 60000  # ImageDescription: a 60 KB EXIF block
    cases.append(Case("huge-exif.jpg", _encode(base, "JPEG", exif=big_exif.tobytes()), "ok", (64, 48)))
    cases.append(Case("huge-icc.png", _encode(base, "PNG", icc_profile=rng.randbytes(3_000_000)), "either", (64, 48)))
    cases.append(Case("huge-icc.jpg", _encode(base, "JPEG", icc_profile=rng.randbytes(500_000)), "ok", (64, 48)))

    png = valid["PNG"]
    batch_cases = [
        Case("batch-ok.zip", _zip({"a.png": png, "dir/b.jpg": valid["JPEG"]}), "ok"),
        Case("batch-slip.zip", _zip({"../../evil.png": png, "/abs/evil.png": png, "C:\\win\\evil.png": png}), "ok"),
        Case("batch-nested.zip", _zip({"inner.zip": _zip({"a.png": png}), "a.png": png}), "ok"),
        Case("batch-nonimages.zip", _zip({"notes.txt": b"hello", "a.png": png, "x.gif": others["GIF"]}), "ok"),
        Case("batch-non-utf8.zip", _zip_raw_name(b"caf\xe9-\xff\xfe-img.png", png), "ok"),
        Case("batch-empty.zip", _zip({}), "4xx"),
        *(
            []
            if quick
            else [
                Case(
                    "batch-ratio-bomb-entry.zip", zero_zip(1, 100), "ok"
                ),  # one 100 MB entry: a failed entry, not a failed batch
                Case("batch-ratio-bomb-total.zip", zero_zip(12, 100), "4xx"),  # 1.2 GB declared: over MAX_BATCH_UNCOMPRESSED_MB
            ]
        ),
        Case("batch-count-bomb.zip", _zip({f"{i}.png": b"x" for i in range(5000)}, zipfile.ZIP_STORED), "4xx"),
        Case("batch-truncated.zip", _zip({"a.png": png})[:40], "4xx"),
        Case("batch-not-a-zip.zip", rng.randbytes(1000), "ok"),  # one non-image part: a failed entry
    ]
    for case in batch_cases:
        case.endpoint = "batch"
    cases += batch_cases
    forms = [
        Case("form-no-file", b"", "4xx", endpoint="form", form=[("model", "isnet-general-use")]),
        Case("form-file-as-text", b"", "4xx", endpoint="form", form=[("file", "not a file")]),
        Case("form-two-files", b"", "ok", (64, 48), endpoint="form", form=[("file", ("a.png", png)), ("file", ("b.png", png))]),
        Case(
            "form-two-models", b"", "4xx", endpoint="form", form=[("file", ("a.png", png)), ("model", "nope"), ("model", "nope2")]
        ),
        Case("form-wrong-field", b"", "4xx", endpoint="form", form=[("image", ("a.png", png))]),
        Case(
            "form-bad-threshold",
            b"",
            "4xx",
            endpoint="form",
            form=[("file", ("a.png", png)), ("alpha_matting_foreground_threshold", "-5")],
        ),
        Case("form-bad-color", b"", "4xx", endpoint="form", form=[("file", ("a.png", png)), ("bg_color", "#12")]),
        Case("form-empty-filename", b"", "either", (64, 48), endpoint="form", form=[("file", ("", png))]),
        Case("form-huge-filename", b"", "either", (64, 48), endpoint="form", form=[("file", ("x" * 5000 + ".png", png))]),
        Case("form-traversal-filename", b"", "ok", (64, 48), endpoint="form", form=[("file", ("../../../etc/passwd.png", png))]),
        Case("form-bad-size", b"", "4xx", endpoint="form", form=[("file", ("a.png", png)), ("size", "huge")]),
        Case(
            "form-bad-margin",
            b"",
            "4xx",
            endpoint="form",
            form=[("file", ("a.png", png)), ("crop", "true"), ("crop_margin", "80%")],
        ),
        Case("form-bad-scale", b"", "4xx", endpoint="form", form=[("file", ("a.png", png)), ("scale", "0%")]),
        Case("form-unknown-option", b"", "4xx", endpoint="form", form=[("file", ("a.png", png)), ("bg_colour", "white")]),
        Case(
            "form-file-and-url",
            b"",
            "4xx",
            endpoint="form",
            form=[("file", ("a.png", png)), ("image_url", "https://example.com/a.png")],
        ),
        Case("form-file-url", b"", "4xx", endpoint="form", form=[("image_url", "file:///etc/passwd")]),
        Case("form-loopback-url", b"", "4xx", endpoint="form", form=[("image_url", "http://127.0.0.1:9/a.png")]),
        Case(
            "form-bg-image-not-an-image",
            b"",
            "4xx",
            endpoint="form",
            form=[("file", ("a.png", png)), ("bg_image", ("b.png", b"junk"))],
        ),
    ]
    return cases + forms


def _png_rgb48(image: Image.Image) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow writes none itself)."""
    pixels = np.asarray(image, dtype=">u2") * 257
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", image.width, image.height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b"")


def check_png(data: bytes, size: tuple[int, int] | None) -> str:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # any decode failure means a broken success
        return f"200 but not a PNG ({exc})"
    if image.format != "PNG" or image.mode not in ("RGBA", "L"):
        return f"200 but {image.format} {image.mode}"
    if size is not None and image.size != size:
        return f"200 but size {image.size} != {size}"
    return ""


def judge(case: Case, status: int, body: bytes, channel: str) -> Outcome:
    if status >= 500:
        return Outcome(case, channel, status, False, body[:200].decode(errors="replace"))
    if status == 200:
        if case.expect == "4xx":
            return Outcome(case, channel, status, False, "accepted a file it should refuse")
        if case.endpoint == "batch":
            return Outcome(case, channel, status, zipfile.is_zipfile(io.BytesIO(body)), "")
        problem = check_png(body, case.size)
        return Outcome(case, channel, status, not problem, problem)
    if case.expect == "ok":
        return Outcome(case, channel, status, False, f"refused a valid input: {body[:200]!r}")
    try:
        answer = json.loads(body)
        detail, hint = answer["detail"], answer["hint"]
    except (ValueError, KeyError, TypeError):
        return Outcome(case, channel, status, False, f"4xx without a JSON detail and hint: {body[:200]!r}")
    ok = isinstance(detail, str) and bool(detail) and isinstance(hint, str)
    return Outcome(case, channel, status, ok, "" if ok else f"4xx with detail {detail!r}, hint {hint!r}")


HttpClient = Any  # an httpx.Client on a server's URL, or Starlette's TestClient (built on httpx2) on the app


def run_rest(client: HttpClient, cases: list[Case]) -> list[Outcome]:
    """Every case through /api/remove or /api/remove/batch, then /api/health. `client` is an httpx.Client on a
    server's URL, or a FastAPI TestClient on the app in-process (the same calls)."""
    outcomes = []
    for case in cases:
        try:
            if case.endpoint == "single":
                response = client.post("/api/remove", files={"file": (case.name, case.data)})
            elif case.endpoint == "batch":
                response = client.post("/api/remove/batch", files={"files": (case.name, case.data)})
            else:
                files = [(k, v) for k, v in case.form if isinstance(v, tuple)]
                fields: dict[str, list[str]] = {}
                for key, value in case.form:
                    if isinstance(value, str):
                        fields.setdefault(key, []).append(value)
                response = client.post("/api/remove", files=files or None, data=fields or None)
            outcome = judge(case, response.status_code, response.content, "rest")
        except httpx.HTTPError as exc:
            outcome = Outcome(case, "rest", "crash", False, f"{type(exc).__name__}: {exc}")
        if not _health(client):
            outcome = Outcome(case, "rest", "crash", False, "health stopped answering")
        outcomes.append(outcome)
    return outcomes


def _health(client: HttpClient) -> bool:
    try:
        return bool(client.get("/api/health").status_code == 200)
    except httpx.HTTPError:
        return False


def run_gradio(url: str, cases: list[Case], workdir: Path, auth: tuple[str, str] | None = None) -> list[Outcome]:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, auth=auth)
    outcomes = []
    for index, case in enumerate(c for c in cases if c.endpoint == "single"):
        path = workdir / f"{index}-{Path(case.name).name or 'file'}"
        path.write_bytes(case.data)
        try:
            result = client.predict(handle_file(str(path)), api_name="/remove")
            outcome = judge(case, 200, Path(result).read_bytes(), "gradio_client")
        except Exception as exc:  # gradio_client raises AppError for a gr.Error; anything else is a crash
            message = str(exc)
            if type(exc).__name__ == "AppError" and message and "Traceback" not in message:
                ok = case.expect in ("4xx", "either")
                outcome = Outcome(case, "gradio_client", "error", ok, "" if ok else f"refused a valid input: {message}")
            else:
                outcome = Outcome(case, "gradio_client", "crash", False, f"{type(exc).__name__}: {message[:200]}")
        outcomes.append(outcome)
    return outcomes


def run_cli(cases: list[Case], workdir: Path, env: dict[str, str]) -> list[Outcome]:
    """All single-file cases in one folder, one CLI run: every file gets a manifest entry, the process survives."""
    folder, out = workdir / "in", workdir / "out"
    folder.mkdir(parents=True, exist_ok=True)
    singles = [c for c in cases if c.endpoint == "single"]
    names = {}
    for index, case in enumerate(singles):
        name = f"{index:04d}-{Path(case.name).name or 'file'}"
        (folder / name).write_bytes(case.data)
        names[name] = case
    done = subprocess.run(
        [sys.executable, "-m", "bgremove", "remove", *[str(folder / n) for n in names], "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=1800,
    )
    if done.returncode not in (0, 1) or "Traceback" in done.stderr:
        return [Outcome(c, "cli", f"exit {done.returncode}", False, done.stderr[-500:]) for c in singles]
    manifest = {item["filename"]: item for item in json.loads((out / "manifest.json").read_text())["items"]}
    outcomes = []
    for name, case in names.items():
        item = manifest.get(name)
        if item is None:
            outcomes.append(Outcome(case, "cli", "missing", False, "no manifest entry"))
        elif item["status"] == "completed":
            problem = "" if case.expect != "4xx" else "accepted a file it should refuse"
            problem = problem or check_png((out / item["output"]).read_bytes(), case.size)
            outcomes.append(Outcome(case, "cli", "completed", not problem, problem))
        else:
            ok = case.expect in ("4xx", "either") and bool(item["error"]) and bool(item["hint"])
            outcomes.append(Outcome(case, "cli", "failed", ok, "" if ok else f"refused a valid input: {item['error']}"))
    return outcomes


def summarise(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    table: dict[str, Counter[str]] = {}
    for outcome in outcomes:
        counter = table.setdefault(outcome.channel, Counter())
        counter["cases"] += 1
        status = outcome.status
        kind = (
            "2xx"
            if status == 200
            else "4xx"
            if isinstance(status, int) and 400 <= status < 500
            else "5xx"
            if isinstance(status, int)
            else "crash"
            if status in ("crash", "missing") or str(status).startswith("exit")
            else "4xx"
            if status in ("error", "failed")
            else "2xx"
        )
        counter[kind] += 1
        counter["wrong"] += not outcome.ok
    return {
        channel: {k: counter.get(k, 0) for k in ("cases", "2xx", "4xx", "5xx", "crash", "wrong")}
        for channel, counter in table.items()
    }


def temp_files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".log")} if folder.exists() else set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (default: start one on 127.0.0.1)")
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--skip-gradio", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    cases = generate_cases(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="bgremove-fuzz-"))
    server = None
    url = args.url
    if url is None:
        sys.path.insert(0, str(ROOT))
        from scripts.server import start_server

        server = start_server(workdir / "server", RESULT_TTL_SECONDS="5")  # UI/gradio files expire fast
        url = server.url
    before = temp_files(workdir / "server")
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=120) as client:
        outcomes = run_rest(client, cases)
    if not args.skip_gradio:
        outcomes += run_gradio(url, cases, workdir)
    if not args.skip_cli:
        outcomes += run_cli(cases, workdir / "cli", {})
    if server is not None:
        from scripts.server import stop_server

        deadline = time.monotonic() + 30  # REST keeps nothing; UI and gradio_client files live RESULT_TTL_SECONDS
        while (leftovers := temp_files(workdir / "server") - before) and time.monotonic() < deadline:
            time.sleep(1)
        stop_server(server)
    else:
        leftovers = set()
    print(f"\nfuzz: {len(cases)} generated cases, {time.perf_counter() - started:.0f} s\n")
    print(f"| {'channel':14} | cases | 2xx | 4xx | 5xx | crash | wrong |")
    print("|" + "-" * 16 + "|-------|-----|-----|-----|-------|-------|")
    for channel, row in summarise(outcomes).items():
        print(
            f"| {channel:14} | {row['cases']:5} | {row['2xx']:3} | {row['4xx']:3} | {row['5xx']:3} | {row['crash']:5} | {row['wrong']:5} |"
        )
    print(f"\ntemporary files left by the server 30 s after the run (RESULT_TTL_SECONDS=5): {len(leftovers)}")
    for path in sorted(leftovers)[:10]:
        print(f"  {path}")
    for outcome in [o for o in outcomes if not o.ok][:30]:
        print(f"WRONG {outcome.channel} {outcome.case.name}: {outcome.status} {outcome.message}")
    return 0 if all(o.ok for o in outcomes) and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
