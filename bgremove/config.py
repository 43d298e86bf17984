"""Settings, read once from the environment and an optional `.env`, validated at start.

A bad value stops start-up with one line naming the variable and what it accepts
(`ConfigError`), instead of failing later inside a request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from bgremove.catalog import CATALOG, DEFAULT_MODEL, is_custom_model
from bgremove.errors import ConfigError

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
KNOWN_EXTENSIONS = ("png", "jpg", "jpeg", "webp")
ENGINES = ("auto", "onnxruntime", "openvino")
PRECISIONS = ("auto", "bf16", "f32")
FLAG_ACCEPTS = "1, true, yes, on, 0, false, no or off"
LOG_FORMATS = ("text", "json")
SECRET_VARIABLES = frozenset({"API_KEYS"})


@dataclass(frozen=True)
class Settings:
    """Every tunable of the app. Each field is one environment variable (see `.env.example`)."""

    model_name: str = DEFAULT_MODEL
    session_path: Path = Path("~/.rembg").expanduser()
    max_image_size_mb: float = 25.0
    allowed_extensions: tuple[str, ...] = KNOWN_EXTENSIONS
    batch_concurrency: int = 2
    log_level: str = "info"
    max_image_pixels: int = 64_000_000
    max_batch_files: int = 100
    max_batch_uncompressed_mb: float = 1024.0
    max_loaded_models: int = 2
    max_concurrent_inferences: int = 2
    inference_engine: str = "auto"
    png_compress_level: int = 1
    openvino_precision: str = "auto"
    max_queue_size: int = 32
    result_ttl_seconds: int = 600
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    log_format: str = "text"
    mcp_server: bool = False
    server_name: str = "0.0.0.0"
    server_port: int = 7860

    @property
    def max_image_bytes(self) -> int:
        return int(self.max_image_size_mb * 1024 * 1024)

    @property
    def max_batch_uncompressed_bytes(self) -> int:
        return int(self.max_batch_uncompressed_mb * 1024 * 1024)


def _parse(env: Mapping[str, str], var: str, default: T, convert: Callable[[str], T], accepts: str) -> T:
    raw = env.get(var)
    if raw is None or raw.strip() == "":
        return default
    try:
        return convert(raw.strip())
    except (ValueError, TypeError):
        shown = "<hidden>" if var in SECRET_VARIABLES else repr(raw)
        raise ConfigError(f"{var}={shown} is invalid: expected {accepts}.", hint="") from None


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError(raw)
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError(raw)
    return value


def _level(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 9:
        raise ValueError(raw)
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError(raw)
    return value


def _flag(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _extensions(raw: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(part.strip().lower().lstrip(".") for part in raw.split(",") if part.strip()))
    if not items or any(item not in KNOWN_EXTENSIONS for item in items):
        raise ValueError(raw)
    return items


def _api_keys(raw: str) -> tuple[str, ...]:
    keys = tuple(key.strip() for key in raw.split(",") if key.strip())
    if any(len(key) < 16 or not key.isprintable() or " " in key for key in keys):
        raise ValueError("short key")  # the message must never echo a key
    return keys


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())
    if any(origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin) for origin in origins):
        raise ValueError(raw)
    return origins


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in options:
            raise ValueError(raw)
        return raw.lower()

    return parse


def _log_level(raw: str) -> str:
    if raw.lower() not in LOG_LEVELS:
        raise ValueError(raw)
    return raw.lower()


def _model_name(raw: str) -> str:
    if raw in CATALOG:
        return raw
    if is_custom_model(raw):
        path = Path(raw).expanduser()
        if not path.is_file():
            raise ValueError(raw)
        return str(path.resolve())
    raise ValueError(raw)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from `env` (default: `.env` merged under the process environment)."""
    if env is None:
        env = _environment_with_dotenv()
    defaults = Settings()
    model_accepts = "one of " + ", ".join(CATALOG) + ", or the path of an existing .onnx file"
    settings = Settings(
        model_name=_parse(env, "REMBG_MODEL_NAME", defaults.model_name, _model_name, model_accepts),
        session_path=_parse(env, "REMBG_SESSION_PATH", defaults.session_path, lambda r: Path(r).expanduser().resolve(), "a directory path"),
        max_image_size_mb=_parse(env, "MAX_IMAGE_SIZE_MB", defaults.max_image_size_mb, _positive_float, "a positive number of megabytes"),
        allowed_extensions=_parse(env, "ALLOWED_EXTENSIONS", defaults.allowed_extensions, _extensions, "a comma-separated subset of " + ",".join(KNOWN_EXTENSIONS)),
        batch_concurrency=_parse(env, "BATCH_CONCURRENCY", defaults.batch_concurrency, _positive_int, "a whole number >= 1"),
        log_level=_parse(env, "LOG_LEVEL", defaults.log_level, _log_level, "one of " + ", ".join(LOG_LEVELS)),
        max_image_pixels=_parse(env, "MAX_IMAGE_PIXELS", defaults.max_image_pixels, _positive_int, "a whole number of pixels >= 1"),
        max_batch_files=_parse(env, "MAX_BATCH_FILES", defaults.max_batch_files, _positive_int, "a whole number >= 1"),
        max_batch_uncompressed_mb=_parse(env, "MAX_BATCH_UNCOMPRESSED_MB", defaults.max_batch_uncompressed_mb, _positive_float, "a positive number of megabytes"),
        max_loaded_models=_parse(env, "MAX_LOADED_MODELS", defaults.max_loaded_models, _positive_int, "a whole number >= 1"),
        max_concurrent_inferences=_parse(env, "MAX_CONCURRENT_INFERENCES", defaults.max_concurrent_inferences, _positive_int, "a whole number >= 1"),
        inference_engine=_parse(env, "INFERENCE_ENGINE", defaults.inference_engine, _choice(ENGINES), "one of " + ", ".join(ENGINES)),
        openvino_precision=_parse(env, "OPENVINO_PRECISION", defaults.openvino_precision, _choice(PRECISIONS), "one of " + ", ".join(PRECISIONS)),
        png_compress_level=_parse(env, "PNG_COMPRESS_LEVEL", defaults.png_compress_level, _level, "a whole number 0-9"),
        max_queue_size=_parse(env, "MAX_QUEUE_SIZE", defaults.max_queue_size, _positive_int, "a whole number >= 1"),
        result_ttl_seconds=_parse(env, "RESULT_TTL_SECONDS", defaults.result_ttl_seconds, _positive_int, "a whole number of seconds >= 1"),
        api_keys=_parse(env, "API_KEYS", defaults.api_keys, _api_keys, "comma-separated keys of at least 16 characters"),
        cors_origins=_parse(env, "CORS_ORIGINS", defaults.cors_origins, _origins, "comma-separated origins like https://example.com, or *"),
        log_format=_parse(env, "LOG_FORMAT", defaults.log_format, _choice(LOG_FORMATS), "one of " + ", ".join(LOG_FORMATS)),
        mcp_server=_parse(env, "MCP_SERVER", _parse(env, "GRADIO_MCP_SERVER", defaults.mcp_server, _flag, FLAG_ACCEPTS), _flag, FLAG_ACCEPTS),
        server_name=_parse(env, "GRADIO_SERVER_NAME", defaults.server_name, str, "a host name or IP address"),
        server_port=_parse(env, "GRADIO_SERVER_PORT", defaults.server_port, _port, "a port number 0-65535"),
    )
    if settings.mcp_server and settings.api_keys:
        # Gradio 6.31's MCP tools call the app without credentials, so every call would fail with a login error.
        raise ConfigError("MCP_SERVER=1 cannot be combined with API_KEYS: Gradio's MCP tools cannot send a key.",
                          hint="Unset one of them, or put the MCP server behind your own authenticating proxy.")
    return settings


def _environment_with_dotenv() -> dict[str, str]:
    """The process environment over the values of `./.env` (the environment wins, as in Docker and Spaces)."""
    from dotenv import dotenv_values

    merged = {key: value for key, value in dotenv_values(".env").items() if value is not None}
    merged.update(os.environ)
    return merged


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built on first use."""
    return load_settings()
