"""Job callbacks: one POST when a job ends, under the same SSRF rules as image URLs (`bgremove.core.fetch`).

A callback URL is vetted at submit by the guard that will later post to it, so a refused address is refused in
the submit's answer, not silently at the end. URL_ALLOW_PRIVATE_NETWORKS and URL_FETCH_TIMEOUT_SECONDS apply as
they do to image URLs; a callback follows no redirect and reads no body.
"""

from __future__ import annotations

from bgremove.batch.jobs.models import Job
from bgremove.core.fetch import FetchPolicy, check_url, post_json
from bgremove.core.settings import Settings


def callback_policy(settings: Settings) -> FetchPolicy:
    """The image-URL rules of `settings`, with no body to read and no redirect to follow."""
    return FetchPolicy.from_settings(settings, max_bytes=0, max_redirects=0)


def check_callback_url(url: str, settings: Settings) -> str:
    """Vet a callback URL at submit with the same guard that will post to it (UrlRefused / UrlFetchFailed)."""
    url = url.strip()
    check_url(url, callback_policy(settings))
    return url


def post_callback(job: Job, settings: Settings) -> int:
    """POST the job's summary to its callback URL once; the answer's status (BgRemoveError when it cannot be sent)."""
    assert job.callback_url is not None
    return post_json(job.callback_url, job.callback_payload(), callback_policy(settings))
