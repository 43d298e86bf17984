"""The one reading of an API key, for the /api guard, the remove.bg guard, the jobs' owner and the UI's login.

A key arrives as `X-API-Key: KEY` (any casing of the header name; remove.bg clients send `X-Api-Key`) or
`Authorization: Bearer KEY`, or as the UI login's password. It is compared with API_KEYS in constant time, and
whoever holds it owns the jobs submitted with it (`owner_of`: a keyed hash, never the key itself).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from bgremove.core.errors import BgRemoveError

KEY_HINT = "Send it as `X-API-Key: KEY` or `Authorization: Bearer KEY`."


class KeyRequired(BgRemoveError):
    """API_KEYS is set and the request carries none of them (401 natively, remove.bg's 403 `auth_failed`)."""

    default_hint = KEY_HINT


def offered_key(headers: Mapping[bytes, bytes] | Mapping[str, str]) -> str:
    """The key a request offers: `X-API-Key`, else a Bearer token; "" when there is none.

    Takes raw ASGI headers (lower-cased bytes names) or a case-insensitive mapping such as Starlette's `Headers`.
    """
    raw = {(k.decode("latin-1") if isinstance(k, bytes) else k).lower(): v for k, v in headers.items()}
    text = {name: value.decode("latin-1") if isinstance(value, bytes) else value for name, value in raw.items()}
    key = text.get("x-api-key", "").strip()
    authorization = text.get("authorization", "")
    if not key and authorization[:7].lower() == "bearer ":
        key = authorization[7:].strip()
    return key


def matching_key(offered: str, keys: Iterable[str]) -> str | None:
    """The configured key `offered` is, compared in constant time; None when it is none of them (or empty)."""
    if not offered:
        return None
    found = None
    for key in keys:
        if hmac.compare_digest(offered.encode(), key.encode()):
            found = key
    return found


def request_key(headers: Mapping[bytes, bytes] | Mapping[str, str], keys: Iterable[str]) -> str | None:
    """The valid key a request carries, or None (missing or wrong)."""
    return matching_key(offered_key(headers), keys)
