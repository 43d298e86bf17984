"""Reading an input under the byte limit, with one wording for "too large" at every door.

The web intake (`bgremove.web.intake`), the Gradio handlers and the CLI all read files through `read_limited`,
so a background image that is too big is refused in the same words whether it came as a form field, a
gradio_client argument or `--bg-image`. Plain Python only: the CLI uses it without loading a web framework.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from bgremove.core.errors import ImageTooLarge

SIZE_HINT = "Send a smaller file or raise MAX_IMAGE_SIZE_MB."


def too_large(name: str, limit: int) -> ImageTooLarge:
    """The one refusal of an input over `limit` bytes; `name` is what the person sent (a field or a file name)."""
    return ImageTooLarge(f"{name} is larger than the limit of {limit / 1048576:.3g} MB.", hint=SIZE_HINT)


def read_limited(source: IO[bytes] | str | Path, limit: int, name: str) -> bytes:
    """At most `limit` bytes of an open file or a path; one byte more is refused with `too_large`."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as handle:
            data = handle.read(limit + 1)
    else:
        data = source.read(limit + 1)
    if len(data) > limit:
        raise too_large(name, limit)
    return data
