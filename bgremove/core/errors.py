"""Typed errors of the core. Each edge (REST, Gradio, CLI) maps them in one place.

Every error carries a message saying what is wrong and a hint saying what to do,
so a person can act on it and a batch manifest can show both.
"""

from __future__ import annotations


class BgRemoveError(Exception):
    """Base of every error the core raises on purpose."""

    default_hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip() if self.hint else self.message


class ConfigError(BgRemoveError):
    """A setting has a value the app cannot start with."""


class UnsupportedFormat(BgRemoveError):
    """The bytes are not an image of an accepted format."""

    default_hint = "Send a PNG, JPEG or WebP photo."


class ImageTooLarge(BgRemoveError):
    """The file or its decoded pixel count is above the configured limit."""

    default_hint = "Resize the image or raise MAX_IMAGE_SIZE_MB / MAX_IMAGE_PIXELS."


class CorruptImage(BgRemoveError):
    """The file claims a supported format but cannot be decoded."""

    default_hint = "Re-export or re-download the file; it looks damaged or incomplete."


class InvalidOption(BgRemoveError):
    """A removal option (threshold, colour, model name) is out of range."""


class InvalidHint(InvalidOption):
    """A keep / remove hint image that cannot be used: not an image, or not drawn over this photo (aspect ratio)."""

    default_hint = (
        "Send the strokes as an image of the photo's shape (any size): white strokes on black, "
        "or strokes on a transparent layer, as PNG, JPEG or WebP."
    )


class ModelUnavailable(BgRemoveError):
    """The model is unknown, not on disk and cannot be pulled, or fails to load."""


class ModelUnreachable(ModelUnavailable):
    """A catalog model is not on disk and could not be downloaded (no network, DNS, a proxy): retrying in a few
    seconds will not fix it, the operator has to fetch it.

    `hint` tells the operator where the file goes on the server (the CLI and the server log show it);
    `public_hint` is what a remote client is told instead, since it cannot act on the server's paths.
    """

    def __init__(self, message: str, hint: str | None = None, *, public_hint: str = "") -> None:
        super().__init__(message, hint)
        self.public_hint = public_hint or self.hint


class ModelCorrupt(ModelUnavailable):
    """The model file is on disk but is not a usable ONNX graph."""


class StorageFull(BgRemoveError):
    """The temporary directory is full or not writable: nothing partial is returned."""

    default_hint = "Free space in the temporary directory (TMPDIR) or point TMPDIR at a larger disk, then retry."


class ServerBusy(BgRemoveError):
    """Every in-flight slot is taken (MAX_CONCURRENT_INFERENCES + MAX_QUEUE_SIZE across every door): refused at
    once rather than queued without bound; worth retrying in a few seconds."""

    default_hint = "Retry after a few seconds."


URL_HINT = "Send an http:// or https:// URL of the image, or upload the file instead."


class UrlRefused(InvalidOption):
    """The URL may not be fetched (scheme, credentials, or an address on a private network): nothing was sent."""

    default_hint = URL_HINT


class UrlFetchFailed(BgRemoveError):
    """The URL was allowed but fetching it failed: unresolvable, unreachable, timed out, or a non-2xx answer."""

    default_hint = "Check that the URL opens from the server's network, or upload the file instead."


class NoForeground(BgRemoveError):
    """The model found no clear subject (remove.bg's `unknown_foreground`); native doors report it as metadata."""

    default_hint = "Send a photo with a clear subject in front of a background."
