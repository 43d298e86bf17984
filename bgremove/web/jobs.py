"""/api/jobs: batch jobs that outlive a request (submit, poll, fetch, cancel), over `bgremove.batch.jobs`.

POST /api/jobs takes what /api/remove/batch takes (files and zips, every option as a form field, bg_image) plus
an optional callback_url, stores the job durably and answers 202 at once; the app's JobRunner does the work.
With API_KEYS set, each key sees only its own jobs (the owner is a keyed hash of the key, never the key) and
another key's job answers 404, like an unknown id. Errors are `{"detail", "hint"}`: 404 unknown job, 409 result
asked too early, 429 too many jobs queued (MAX_QUEUE_SIZE), 507 over JOB_DISK_QUOTA_MB or a nearly full disk.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from typing import IO, Annotated, Any

from fastapi import Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRouter

from bgremove.batch.engine import inputs_from_files
from bgremove.batch.jobs import Job, JobNotFound, JobRunner, check_callback_url, check_model, storage_error
from bgremove.core.errors import InvalidHint
from bgremove.core.options import IMAGE_INPUTS, RemovalOptions
from bgremove.core.settings import Settings
from bgremove.web.deps import REQUEST_FIELDS, options_dependency
from bgremove.web.errors import ApiRoute
from bgremove.web.intake import ImageBytes, image_inputs_dependency
from bgremove.web.keys import KeyRequired, request_key

JOB_FIELDS = REQUEST_FIELDS | {"callback_url"}  # form fields of POST /api/jobs that are not options
JOB_ID = re.compile(r"[0-9a-f]{32}")


router = APIRouter(prefix="/api/jobs", tags=["batch jobs"], route_class=ApiRoute)  # errors: web.errors.TABLE


# --- dependencies -----------------------------------------------------------------------------------------------


async def get_runner(request: Request) -> JobRunner:
    runner: JobRunner = request.app.state.jobs
    return runner


Runner = Annotated[JobRunner, Depends(get_runner)]


async def get_owner(request: Request, runner: Runner) -> str:
    """Who is asking: the keyed hash of a valid API key, or "" when API_KEYS is not set.

    The guard in front of /api already refused a missing or wrong key; checked here again so the router is safe
    on its own.
    """
    settings = runner.settings
    if not settings.api_keys:
        return ""
    key = request_key(request.headers, settings.api_keys)
    if key is None:
        raise KeyRequired("A valid API key is required.")
    return runner.store.owner_of(key)


Owner = Annotated[str, Depends(get_owner)]


job_options = options_dependency(JOB_FIELDS)  # the schema's form fields, as /api/remove/batch reads them
JobOptions = Annotated[RemovalOptions, Depends(job_options)]
JobFiles = Annotated[
    list[UploadFile],
    File(description="One zip of images (folders inside are kept), or several image files: the same inputs as /api/remove/batch"),
]
# Every image input: the shared ones (bg_image) serve all the job's photos; a photo's own (touch-up strokes) need a
# job of one photo.
JobImages = Annotated[ImageBytes, Depends(image_inputs_dependency())]
CallbackUrl = Annotated[
    str | None,
    Form(
        description="Posted once with {id, status, total, done, failed} when the job "
        "ends; the same SSRF rules as image URLs apply"
    ),
]


def job_id_path(job_id: str) -> str:
    """Ids are 32 hex digits; anything else is simply unknown (no SQL or path ever sees it)."""
    if not JOB_ID.fullmatch(job_id):
        raise JobNotFound(f"There is no job {job_id[:64]!r}.")
    return job_id


JobId = Annotated[str, Depends(job_id_path)]


# --- answers --------------------------------------------------------------------------------------------------


def links(request: Request, job_id: str) -> dict[str, str]:
    return {
        "status_url": str(request.url_for("job_status", job_id=job_id)),
        "result_url": str(request.url_for("job_result", job_id=job_id)),
    }


def describe(request: Request, job: Job, *, items: bool) -> dict[str, Any]:
    return {**(job.to_dict() if items else job.summary()), **links(request, job.id)}


# --- routes -----------------------------------------------------------------------------------------------------


@router.post(
    "",
    status_code=202,
    responses={
        202: {"description": "Accepted: {id, status: queued, total, status_url, result_url}"},
        400: {"description": "Not a readable zip, or callback_url refused"},
        413: {"description": "Over a size limit"},
        422: {"description": "An option is not valid"},
        429: {"description": "Too many jobs queued (MAX_QUEUE_SIZE)"},
        507: {"description": "Over JOB_DISK_QUOTA_MB, or the disk is nearly full"},
    },
)
def submit_job(
    request: Request,
    files: JobFiles,
    options: JobOptions,
    runner: Runner,
    owner: Owner,
    images: JobImages,
    callback_url: CallbackUrl = None,
) -> JSONResponse:
    """Queue a batch job and answer at once; poll status_url, then fetch result_url (a zip like /api/remove/batch's)."""
    settings: Settings = runner.settings
    check_model(options, settings)
    url = check_callback_url(callback_url, settings) if callback_url and callback_url.strip() else None
    inputs = inputs_from_files([(upload.filename or "", upload.file) for upload in files], settings)
    photo_images = {name: data for name, data in images.items() if IMAGE_INPUTS[name].per_photo}
    if photo_images and len(inputs) != 1:  # touch-up strokes are drawn over one photo
        raise InvalidHint(
            f"{' and '.join(photo_images)} {'is' if len(photo_images) == 1 else 'are'} drawn over one photo, but the "
            f"job has {len(inputs)} images.",
            hint="Send one image with its strokes per job (or per POST /api/remove).",
        )
    shared = {name: data for name, data in images.items() if name not in photo_images}
    job = runner.store.submit(inputs, options, owner=owner, callback_url=url, photo_images=photo_images, **shared)
    runner.wake()
    body: dict[str, Any] = {"id": job.id, "status": job.status, "total": job.total, **links(request, job.id)}
    return JSONResponse(body, status_code=202, headers={"Location": body["status_url"]})


@router.get("")
def list_jobs(
    request: Request,
    runner: Runner,
    owner: Owner,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first")] = 100,
) -> dict[str, Any]:
    """The caller's jobs, newest first (with API_KEYS: the jobs submitted with this key)."""
    return {"jobs": [describe(request, job, items=False) for job in runner.store.jobs_of(owner, limit)]}


@router.get("/{job_id}", name="job_status")
def job_status(request: Request, job_id: JobId, runner: Runner, owner: Owner) -> dict[str, Any]:
    """{id, status: queued|running|done|failed|cancelled, total, done, failed, items: [...], created, updated}."""
    return describe(request, runner.store.get(job_id, owner), items=True)


@router.get(
    "/{job_id}/result",
    name="job_result",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/zip": {}}, "description": "Outputs plus manifest.json"},
        409: {"description": "The job is still queued or running"},
    },
)
def job_result(job_id: JobId, runner: Runner, owner: Owner) -> StreamingResponse:
    """The zip: one output per completed file plus manifest.json (unprocessed files of a cancelled job are listed)."""
    try:
        spool: IO[bytes] = tempfile.TemporaryFile(dir=runner.store.root, prefix=".result-")  # noqa: SIM115
        try:
            manifest = runner.store.write_result(job_id, owner, spool)
            size = spool.tell()
            spool.seek(0)
        except BaseException:
            with contextlib.suppress(OSError):  # closing flushes, which fails the same way on a full disk
                spool.close()
            raise
    except OSError as exc:
        full = storage_error(exc, runner.store.root)
        if full is None:
            raise
        raise full from exc
    return StreamingResponse(
        _stream_and_close(spool),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="bgremove-job-{job_id}.zip"',
            "Content-Length": str(size),
            "X-Batch-Count": str(manifest["count"]),
            "X-Batch-Completed": str(manifest["completed"]),
            "X-Batch-Failed": str(manifest["failed"]),
        },
    )


@router.delete("/{job_id}")
def delete_job(request: Request, job_id: JobId, runner: Runner, owner: Owner) -> dict[str, Any]:
    """Cancel a queued or running job (files done stay available); DELETE again (or on a finished job) deletes it."""
    outcome = runner.store.cancel_or_delete(job_id, owner)
    if outcome == "deleted":
        return {"id": job_id, "status": "deleted"}
    runner.notify()
    return describe(request, runner.store.get(job_id, owner), items=False)


def _stream_and_close(spool: IO[bytes], chunk: int = 1 << 20) -> Iterator[bytes]:
    try:
        while block := spool.read(chunk):
            yield block
    finally:
        spool.close()
