"""`python -m bgremove jobs submit|status|fetch|cancel|list`: the command-line client of a server's /api/jobs.

A batch of hundreds of photos outlives a proxy's request timeout; a job does not. `jobs submit` uploads files,
folders (zipped on the fly, paths inside kept) and zips with the removal options (the same generated flags as
`remove`), prints the job id and, with --wait, follows the job with a progress bar and fetches the result.
Nothing here loads a model: it speaks HTTP (httpx) and shows progress (tqdm).

Exit codes: 0 done with every file completed; 1 the job failed, was cancelled, or some files failed;
2 the request was refused or the server could not be reached (the server's `detail` and `hint` are printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, TextIO

from bgremove.cli_flags import add_option_flags, options_from_args
from bgremove.core.files import atomic_file

if TYPE_CHECKING:  # imported where it is used: `bgremove remove` builds this parser too and needs no HTTP client
    import httpx

DEFAULT_SERVER = "http://127.0.0.1:7860"
SERVER_ENV = "BGREMOVE_SERVER"
API_KEY_ENV = "BGREMOVE_API_KEY"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
FINAL = frozenset({"done", "failed", "cancelled"})
TIMEOUT_S = {"timeout": 30.0, "read": 600.0, "write": 600.0}  # httpx.Timeout: a big upload or result zip may take minutes
JOBS_EPILOG = """examples:
  bgremove jobs submit photos/ --server http://host:7860 --wait -o out/     upload, follow, unzip into out/
  bgremove jobs submit shots.zip --format webp --crop                       prints the job id
  bgremove jobs status ID                                                   progress and failed files
  bgremove jobs fetch ID -o results.zip                                     the zip (outputs + manifest.json)
  bgremove jobs cancel ID                                                   cancel; again to delete it
The server and key can also come from BGREMOVE_SERVER and BGREMOVE_API_KEY (a key on the command line is
visible to other users of this machine in the process list).
"""


class JobsCommandError(Exception):
    """A refusal from the server (its detail and hint) or a transport failure, for exit code 2."""

    def __init__(self, detail: str, hint: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.detail} {self.hint}".strip()


# --- the parser -------------------------------------------------------------------------------------------------


def add_jobs_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add `jobs submit|status|fetch|cancel|list` to the CLI's subparsers; run them with `run_jobs_command`."""
    jobs: argparse.ArgumentParser = subparsers.add_parser(
        "jobs",
        help="batch jobs on a server: submit, follow, fetch (survive timeouts)",
        epilog=JOBS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = jobs.add_subparsers(dest="jobs_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--server",
            default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
            metavar="URL",
            help=f"the bgremove server (default: ${SERVER_ENV} or {DEFAULT_SERVER})",
        )
        parser.add_argument(
            "--api-key",
            default=os.environ.get(API_KEY_ENV),
            metavar="KEY",
            help=f"one of the server's API_KEYS (default: ${API_KEY_ENV})",
        )
        parser.add_argument("--json", action="store_true", help="print the server's JSON instead of a summary")
        parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    submit = commands.add_parser("submit", help="upload images, folders or zips as one job")
    submit.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="FOLDER_OR_ZIP",
        help="folders (zipped on the fly, paths inside kept), zips, or images",
    )
    submit.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
    submit.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="OUT",
        help="with --wait: where the result goes (a .zip path, or a folder to unpack it into)",
    )
    submit.add_argument("--bg-image", type=Path, metavar="PATH", help="an image laid behind every subject")
    submit.add_argument("--callback-url", metavar="URL", help="the server POSTs {id, status, ...} here when the job ends")
    submit.add_argument("--poll", type=float, default=1.0, metavar="S", help="seconds between status checks (default 1)")
    common(submit)
    add_option_flags(submit)

    status = commands.add_parser("status", help="a job's progress and its failed files")
    status.add_argument("job_id", metavar="ID")
    common(status)

    fetch = commands.add_parser("fetch", help="download a finished job's result")
    fetch.add_argument("job_id", metavar="ID")
    fetch.add_argument(
        "-o", "--output", type=Path, metavar="OUT", required=True, help="a .zip path, or a folder to unpack the result into"
    )
    common(fetch)

    cancel = commands.add_parser("cancel", help="cancel a queued or running job (again: delete it)")
    cancel.add_argument("job_id", metavar="ID")
    common(cancel)

    listing = commands.add_parser("list", help="your jobs, newest first")
    common(listing)
    return jobs


# --- the commands -----------------------------------------------------------------------------------------------


def run_jobs_command(
    args: argparse.Namespace, *, client: httpx.Client | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run a parsed `jobs ...` command; `client` lets tests talk to an in-process app."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        with JobsClient(args.server, args.api_key, client=client) as api:
            command = args.jobs_command
            if command == "submit":
                return _submit(api, args, out, err)
            if command == "status":
                job = api.status(args.job_id)
                _print_job(job, args.json, out)
                return exit_code(job)
            if command == "fetch":
                where = api.fetch(args.job_id, args.output, progress=not args.quiet, stderr=err)
                print(f"saved to {where}", file=err)
                return 0
            if command == "cancel":
                answer = api.cancel(args.job_id)
                print(json.dumps(answer, indent=2) if args.json else f"{answer['id']}: {answer['status']}", file=out)
                return 0
            jobs = api.list()
            if args.json:
                print(json.dumps(jobs, indent=2), file=out)
            for job in [] if args.json else jobs["jobs"]:
                print(
                    f"{job['id']}  {job['status']:<9}  {job['done']}/{job['total']} done, {job['failed']} failed  "
                    f"{job['created']}",
                    file=out,
                )
            return 0
    except JobsCommandError as exc:
        print(f"error: {exc}", file=err)
        return 2
    except KeyboardInterrupt:
        print("interrupted (the job keeps running on the server: `bgremove jobs status ID`)", file=err)
        return 130


def _submit(api: JobsClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from bgremove.core.errors import BgRemoveError

    if args.output is not None and not args.wait:
        raise JobsCommandError("-o/--output needs --wait.", "Add --wait, or fetch later: bgremove jobs fetch ID -o OUT.")
    try:
        options_from_args(args)  # refused here in the same words as on the server, before a long upload
    except BgRemoveError as exc:
        raise JobsCommandError(exc.message, exc.hint) from exc
    fields = option_fields(args)
    if args.callback_url:
        fields["callback_url"] = args.callback_url
    job = api.submit(args.inputs, fields, bg_image=args.bg_image, progress=not args.quiet, stderr=err)
    if not args.wait:
        print(json.dumps(job, indent=2) if args.json else job["id"], file=out)
        return 0
    print(f"job {job['id']}: {job['total']} files queued", file=err)
    final = api.wait(job["id"], total=job["total"], poll=args.poll, progress=not args.quiet, stderr=err)
    if args.output is not None:
        where = api.fetch(job["id"], args.output, progress=not args.quiet, stderr=err)
        print(f"saved to {where}", file=err)
    _print_job(final, args.json, out)
    return exit_code(final)


def option_fields(args: argparse.Namespace) -> dict[str, str]:
    """The option flags the user gave, as form fields (the server's schema supplies the rest)."""
    from bgremove.core.options import OPTION_NAMES

    fields: dict[str, str] = {}
    for name in OPTION_NAMES:
        if hasattr(args, name):
            value = getattr(args, name)
            fields[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return fields


def exit_code(job: dict[str, Any]) -> int:
    return 0 if job.get("status") == "done" and not job.get("failed") else 1


def _print_job(job: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(job, indent=2), file=out)
        return
    print(f"{job['id']}: {job['status']}, {job['done']}/{job['total']} done, {job['failed']} failed", file=out)
    if job.get("error"):
        print(f"  {job['error']} {job.get('hint') or ''}".rstrip(), file=out)
    for item in job.get("items", []):
        if item["status"] in ("failed", "cancelled"):
            print(f"  {item['filename']}: {item['error']} {item.get('hint') or ''}".rstrip(), file=out)


# --- HTTP -------------------------------------------------------------------------------------------------------


class JobsClient:
    """/api/jobs over httpx: upload with a byte progress bar, poll with a file progress bar, download."""

    def __init__(self, server: str, api_key: str | None = None, *, client: httpx.Client | None = None) -> None:
        self.server = server.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self._own = client is None
        if client is None:
            import httpx

            client = httpx.Client(timeout=httpx.Timeout(**TIMEOUT_S))
        self.http = client
        self.headers = headers

    def __enter__(self) -> JobsClient:
        return self

    def __exit__(self, *_: object) -> None:
        if self._own:
            self.http.close()

    def url(self, path: str) -> str:
        return f"{self.server}/api/jobs{path}"

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        import httpx

        try:
            response = self.http.request(method, self.url(path), headers=self.headers, **kwargs)
        except httpx.HTTPError as exc:
            raise JobsCommandError(
                f"cannot reach {self.server} ({exc}).", "Check --server (or BGREMOVE_SERVER) and that the server is running."
            ) from exc
        _raise_for_error(response)
        return response

    def submit(
        self,
        inputs: list[Path],
        fields: dict[str, str],
        *,
        bg_image: Path | None = None,
        progress: bool = True,
        stderr: TextIO | None = None,
    ) -> dict[str, Any]:
        """POST /api/jobs with every input as a `files` part (folders as a zip built here)."""
        from tqdm import tqdm
        from tqdm.utils import CallbackIOWrapper

        with ExitStack() as stack:
            parts: list[tuple[str, IO[bytes], str]] = []
            for path in inputs:
                if path.is_dir():
                    parts.append((f"{path.name or 'folder'}.zip", stack.enter_context(zip_folder(path)), "application/zip"))
                elif path.is_file():
                    parts.append((path.name, stack.enter_context(open(path, "rb")), _content_type(path)))
                else:
                    raise JobsCommandError(f"{path} does not exist.", "Give image files, folders or zips.")
            total = sum(_size(handle) for _, handle, _ in parts)
            bar = stack.enter_context(
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc="upload",
                    disable=not progress or None,
                    file=stderr or sys.stderr,
                    leave=False,
                )
            )
            files: list[tuple[str, tuple[str, Any, str]]] = [
                ("files", (name, CallbackIOWrapper(bar.update, handle, "read"), kind)) for name, handle, kind in parts
            ]
            if bg_image is not None:
                files.append(("bg_image", (bg_image.name, stack.enter_context(open(bg_image, "rb")), _content_type(bg_image))))
            response = self._request("POST", "", data=fields, files=files)
        job: dict[str, Any] = response.json()
        return job

    def status(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("GET", f"/{job_id}").json()
        return job

    def list(self) -> dict[str, Any]:
        jobs: dict[str, Any] = self._request("GET", "").json()
        return jobs

    def cancel(self, job_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._request("DELETE", f"/{job_id}").json()
        return answer

    def wait(
        self, job_id: str, *, total: int, poll: float = 1.0, progress: bool = True, stderr: TextIO | None = None
    ) -> dict[str, Any]:
        """Poll until the job ends, with a files-done progress bar; returns the final status."""
        from tqdm import tqdm

        with tqdm(total=total, unit="file", desc=job_id[:8], disable=not progress or None, file=stderr or sys.stderr) as bar:
            while True:
                job = self.status(job_id)
                bar.update(job["done"] - bar.n)
                bar.set_postfix_str(f"{job['status']}, {job['failed']} failed", refresh=False)
                if job["status"] in FINAL:
                    return job
                time.sleep(poll)

    def fetch(self, job_id: str, target: Path, *, progress: bool = True, stderr: TextIO | None = None) -> Path:
        """GET the result zip with a byte progress bar; `target` ending in .zip is the zip, else a folder to fill."""
        import httpx
        from tqdm import tqdm

        as_zip = target.suffix.lower() == ".zip" and not target.is_dir()
        folder = target.parent if as_zip else target
        folder.mkdir(parents=True, exist_ok=True)
        download = target if as_zip else folder / f".bgremove-job-{job_id}.zip"  # unpacked into the folder, then removed
        try:
            with self.http.stream("GET", self.url(f"/{job_id}/result"), headers=self.headers) as response:
                if response.is_error:
                    response.read()
                    _raise_for_error(response)
                length = int(response.headers.get("content-length", 0)) or None
                with (
                    atomic_file(download) as handle,
                    tqdm(
                        total=length,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc="download",
                        disable=not progress or None,
                        file=stderr or sys.stderr,
                        leave=False,
                    ) as bar,
                ):
                    for chunk in response.iter_bytes(1 << 16):
                        handle.write(chunk)
                        bar.update(len(chunk))
            if not as_zip:
                unpack(download, target)
            return target
        except httpx.HTTPError as exc:
            raise JobsCommandError(
                f"downloading the result from {self.server} failed ({exc}).", "Run `bgremove jobs fetch ID -o OUT` again."
            ) from exc
        finally:
            if not as_zip:
                download.unlink(missing_ok=True)


def _raise_for_error(response: httpx.Response) -> None:
    if not response.is_error:
        return
    try:
        body = response.json()
        detail, hint = str(body.get("detail", response.reason_phrase)), str(body.get("hint") or "")
    except (ValueError, AttributeError):
        detail, hint = f"the server answered {response.status_code} {response.reason_phrase}.", ""
    raise JobsCommandError(detail, hint)


def _size(handle: IO[bytes]) -> int:
    position = handle.tell()
    size = handle.seek(0, os.SEEK_END)
    handle.seek(position)
    return size


def _content_type(path: Path) -> str:
    return {
        ".zip": "application/zip",
        ".png": "image/png",
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".webp": "image/webp",
    }.get(path.suffix.lower(), "application/octet-stream")


@contextmanager
def zip_folder(folder: Path) -> Iterator[IO[bytes]]:
    """The folder's images (recursive, hidden files skipped) in an anonymous temp zip, paths inside kept."""
    with tempfile.TemporaryFile(prefix="bgremove-upload-") as spool:
        with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED) as archive:  # images are compressed already
            for file in sorted(path for path in folder.rglob("*") if path.is_file()):
                relative = file.relative_to(folder)
                if file.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in relative.parts):
                    archive.write(file, relative.as_posix())
        spool.seek(0)
        yield spool


def unpack(zip_path: Path, folder: Path) -> None:
    """Extract the result into `folder`, refusing any entry that would land outside it."""
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            name = PurePosixPath(info.filename)
            if info.is_dir():
                continue
            if name.is_absolute() or ".." in name.parts:
                raise JobsCommandError(f"the result holds an unsafe name {info.filename!r}; nothing was written there.")
            with archive.open(info) as source, atomic_file(folder.joinpath(*name.parts)) as handle:
                shutil.copyfileobj(source, handle)
