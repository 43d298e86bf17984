"""Settings: every environment variable, declared once with pydantic-settings and validated at start.

The variable names are the ones `.env.example` documents (existing `.env` files keep working); the process
environment wins over `./.env`, as in Docker and Spaces. A bad value stops start-up with one line naming the
variable and what it accepts (`ConfigError`) instead of failing later inside a request. The web layer hands
settings to handlers through FastAPI dependencies; tests build their own with `load_settings({...})`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from bgremove.core.errors import ConfigError
from bgremove.core.registry import CATALOG, DEFAULT_MODEL, is_custom_model

KNOWN_EXTENSIONS = ("png", "jpg", "jpeg", "webp")
SECRET_VARIABLES = frozenset({"API_KEYS"})
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
_ONLY_GIVEN: ContextVar[bool] = ContextVar("bgremove_settings_only_given", default=False)


def setting(default: Any, env: str | tuple[str, ...], accepts: str, description: str | None = None, **bounds: Any) -> Any:
    """One environment variable: its name(s), default, bounds and the `accepts` text of its error message."""
    names = (env,) if isinstance(env, str) else env
    alias: str | AliasChoices = names[0] if len(names) == 1 else AliasChoices(*names)
    return Field(
        default,
        validation_alias=alias,
        description=description,
        json_schema_extra={"env": names[0], "accepts": accepts},
        **bounds,
    )


CommaList = Annotated[tuple[str, ...], NoDecode]


class Settings(BaseSettings):
    """Every tunable of the app; each field is one environment variable (see `.env.example`)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        protected_namespaces=(),
        use_attribute_docstrings=True,  # each field's docstring is its description (docs/configuration.md)
    )

    model_name: str = setting(
        DEFAULT_MODEL, "REMBG_MODEL_NAME", "one of " + ", ".join(CATALOG) + ", or the path of an existing .onnx file"
    )
    """The default model: a catalog name (see docs/models.md) or the path of a .onnx file."""
    session_path: Path = setting(Path("~/.rembg").expanduser(), "REMBG_SESSION_PATH", "a directory path")
    """The model store: `<path>/models/<name>/<name>.onnx`, rembg's layout."""
    max_image_size_mb: float = setting(25.0, "MAX_IMAGE_SIZE_MB", "a positive number of megabytes", gt=0, allow_inf_nan=False)
    """Largest upload per image (also `bg_image` and `image_url` downloads)."""
    allowed_extensions: CommaList = setting(
        KNOWN_EXTENSIONS, "ALLOWED_EXTENSIONS", "a comma-separated subset of " + ",".join(KNOWN_EXTENSIONS)
    )
    """Accepted formats, checked on the file's content, not its name."""
    batch_concurrency: int = setting(2, "BATCH_CONCURRENCY", "a whole number >= 1", ge=1)
    """Images processed at once in a batch (CLI, REST, UI, each job, each Ray worker): the model takes one pass at a
    time while the others decode and encode."""
    log_level: Literal["debug", "info", "warning", "error", "critical"] = setting(
        "info", "LOG_LEVEL", "one of debug, info, warning, error, critical"
    )
    """How much the server logs; the CLI prints log lines only when this is set (or with -v)."""
    max_image_pixels: int = setting(64_000_000, "MAX_IMAGE_PIXELS", "a whole number of pixels >= 1", ge=1)
    """Largest decoded image (width x height), checked from the header before decoding: the decompression-bomb guard."""
    max_batch_files: int = setting(100, "MAX_BATCH_FILES", "a whole number >= 1", ge=1)
    """Most files in one batch or job (zip entries included)."""
    max_batch_uncompressed_mb: float = setting(
        1024.0, "MAX_BATCH_UNCOMPRESSED_MB", "a positive number of megabytes", gt=0, allow_inf_nan=False
    )
    """Most bytes a batch may expand to (zip-bomb guard)."""
    max_loaded_models: int = setting(2, "MAX_LOADED_MODELS", "a whole number >= 1", ge=1)
    """Models kept in memory; the least recently used is unloaded."""
    prediction_cache_mb: float = setting(
        256.0, "PREDICTION_CACHE_MB", "a number of megabytes >= 0 (0 turns the cache off)", ge=0, allow_inf_nan=False
    )
    """Recent model predictions kept in memory (about 8 MB a photo for 1024x1024 models): the same photo asked again
    with other output options or touch-up strokes reuses the prediction."""
    max_concurrent_inferences: int = setting(2, "MAX_CONCURRENT_INFERENCES", "a whole number >= 1", ge=1)
    """Forward passes at once across every door and jobs (bounds memory)."""
    inference_engine: Literal["auto", "onnxruntime", "openvino"] = setting(
        "auto", "INFERENCE_ENGINE", "one of auto, onnxruntime, openvino"
    )
    """auto: CUDA if present; else OpenVINO when it runs int8 or bf16 on this CPU; else onnxruntime."""
    # OPENVINO_PRECISION, its older name, still works (it never took int8).
    inference_precision: Literal["auto", "int8", "bf16", "f32"] = setting(
        "auto", ("INFERENCE_PRECISION", "OPENVINO_PRECISION"), "one of auto, int8, bf16, f32"
    )
    """auto: the fastest of int8 (when the model's int8 build passed its accuracy gate), bf16 (CPUs with AVX-512 BF16
    or AMX) and f32; OPENVINO_PRECISION is its older name."""
    quantize_on_load: bool = setting(True, "QUANTIZE_ON_LOAD", "1, true, yes, on, 0, false, no or off")
    """Build a model's int8 version in the background on its first load when `models pull` has not (served at
    f32/bf16 until it is ready and has passed its accuracy gate)."""
    png_compress_level: int = setting(1, "PNG_COMPRESS_LEVEL", "a whole number 0-9", ge=0, le=9)
    """zlib level of output PNGs (all lossless; 1 is fastest)."""
    max_queue_size: int = setting(32, "MAX_QUEUE_SIZE", "a whole number >= 1", ge=1)
    """Removals waiting beyond those running, counted across every door together (REST, remove.bg API, UI,
    gradio_client/MCP; job workers wait for a slot): more get 503 (REST), 429 (remove.bg API) or "queue full" (UI).
    Also the most jobs queued or running (429)."""
    result_ttl_seconds: int = setting(600, "RESULT_TTL_SECONDS", "a whole number of seconds >= 1", ge=1)
    """UI and gradio_client uploads and results are deleted after this."""
    api_keys: CommaList = setting((), "API_KEYS", "comma-separated keys of at least 16 characters")
    """When set, the API, the remove.bg API and the UI need one of these keys (see docs/security.md)."""
    cors_origins: CommaList = setting((), "CORS_ORIGINS", "comma-separated origins like https://example.com, or *")
    """Origins allowed to call the API from a browser, or *; empty: none."""
    log_format: Literal["text", "json"] = setting("text", "LOG_FORMAT", "one of text, json")
    """text, or json (one object per line, with request_id)."""
    mcp_server: bool = setting(False, ("MCP_SERVER", "GRADIO_MCP_SERVER"), "1, true, yes, on, 0, false, no or off")
    """Serve the removal endpoints as MCP tools (needs requirements-mcp.txt); GRADIO_MCP_SERVER works too."""
    server_name: str = setting("127.0.0.1", "GRADIO_SERVER_NAME", "a host name or IP address", min_length=1)
    """Listen address: 127.0.0.1 is this machine only; 0.0.0.0 every interface (Docker and Spaces set it; a warning is logged without API_KEYS)."""
    server_port: int = setting(7860, "GRADIO_SERVER_PORT", "a port number 0-65535", ge=0, le=65535)
    """Listen port."""
    url_allow_private_networks: bool = setting(False, "URL_ALLOW_PRIVATE_NETWORKS", "1, true, yes, on, 0, false, no or off")
    """Let image_url, bg_image_url and callback_url reach loopback, private and link-local addresses (LAN deployments)."""
    url_fetch_timeout_seconds: float = setting(
        20.0, "URL_FETCH_TIMEOUT_SECONDS", "a positive number of seconds", gt=0, allow_inf_nan=False
    )
    """Total time for fetching one URL, redirects included."""
    data_dir: Path = setting(Path("~/.bgremove").expanduser(), "DATA_DIR", "a directory path")
    """Batch jobs' database (jobs.sqlite3) and files."""
    job_retention_hours: float = setting(24.0, "JOB_RETENTION_HOURS", "a positive number of hours", gt=0, allow_inf_nan=False)
    """Finished jobs and their files are deleted this long after they end."""
    job_disk_quota_mb: float = setting(2048.0, "JOB_DISK_QUOTA_MB", "a positive number of megabytes", gt=0, allow_inf_nan=False)
    """Most disk all jobs' files may use; new jobs beyond it get 507."""
    job_executor: Literal["local", "ray"] = setting("local", "JOB_EXECUTOR", "one of local, ray")
    """Where jobs run: local (in the server process) or ray."""
    ray_address: str | None = setting(None, "RAY_ADDRESS", "a Ray address such as auto or host:6379")
    """The Ray cluster for JOB_EXECUTOR=ray (auto, host:6379, ray://host:10001); empty starts a local Ray."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """`load_settings(env)` reads only `env` (tests stay isolated from the shell); otherwise env over .env."""
        if _ONLY_GIVEN.get():
            return (init_settings,)
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    @field_validator("log_level", "inference_engine", "inference_precision", "log_format", "job_executor", mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("model_name", mode="before")
    @classmethod
    def _model(cls, value: Any) -> Any:
        raw = str(value).strip()
        if raw in CATALOG:
            return raw
        if is_custom_model(raw):
            path = Path(raw).expanduser()
            if path.is_file():
                return str(path.resolve())
        raise ValueError(raw)

    @field_validator("session_path", "data_dir", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        return Path(str(value).strip()).expanduser().resolve() if str(value).strip() else value

    @field_validator("allowed_extensions", mode="before")
    @classmethod
    def _extensions(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        items = tuple(dict.fromkeys(part.strip().lower().lstrip(".") for part in value.split(",") if part.strip()))
        if not items or any(item not in KNOWN_EXTENSIONS for item in items):
            raise ValueError(value)
        return items

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        keys = tuple(key.strip() for key in value.split(",") if key.strip())
        if any(len(key) < 16 or not key.isprintable() or " " in key for key in keys):
            raise ValueError("short key")  # the message must never echo a key
        return keys

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        origins = tuple(origin.strip().rstrip("/") for origin in value.split(",") if origin.strip())
        if any(origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin) for origin in origins):
            raise ValueError(value)
        return origins

    @field_validator("ray_address", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _combinations(self) -> Settings:
        if self.mcp_server and self.api_keys:
            # Gradio 6.31's MCP tools call the app without credentials, so every call would fail with a login error.
            raise ConfigError(
                "MCP_SERVER=1 cannot be combined with API_KEYS: Gradio's MCP tools cannot send a key.",
                hint="Unset one of them, or put the MCP server behind your own authenticating proxy.",
            )
        return self

    @property
    def prediction_cache_bytes(self) -> int:
        return int(self.prediction_cache_mb * 1024 * 1024)

    @property
    def max_image_bytes(self) -> int:
        return int(self.max_image_size_mb * 1024 * 1024)

    @property
    def max_batch_uncompressed_bytes(self) -> int:
        return int(self.max_batch_uncompressed_mb * 1024 * 1024)

    @property
    def job_disk_quota_bytes(self) -> int:
        return int(self.job_disk_quota_mb * 1024 * 1024)

    @property
    def listens_beyond_loopback(self) -> bool:
        return self.server_name not in LOOPBACK_NAMES and not self.server_name.startswith("127.")


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    extra = Settings.model_fields[field].json_schema_extra
    return str(extra["env"]) if isinstance(extra, dict) else field.upper()


ENV_NAMES: dict[str, str] = {name: env_name(name) for name in Settings.model_fields}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` alone (tests), or from the process environment over `./.env` (the default)."""
    try:
        if env is None:
            return Settings()
        values: dict[str, Any] = {key: value for key, value in env.items() if value is not None and str(value).strip() != ""}
        token = _ONLY_GIVEN.set(True)
        try:
            return Settings(**values)
        finally:
            _ONLY_GIVEN.reset(token)
    except ValidationError as exc:
        raise _config_error(exc, env) from None


def _config_error(exc: ValidationError, env: Mapping[str, str] | None) -> ConfigError:
    """`VAR='value' is invalid: expected ...` for the first bad variable (keys never echoed)."""
    error = exc.errors(include_url=False)[0]
    context = error.get("ctx") or {}
    if isinstance(context.get("error"), ConfigError):
        cause: ConfigError = context["error"]
        return cause
    field = next((name for name in Settings.model_fields if name in [str(p) for p in error.get("loc", ())]), None)
    if field is None:  # validation_alias locations are the variable names themselves
        loc = [str(p) for p in error.get("loc", ())]
        field = next((name for name, var in ENV_NAMES.items() if var in loc), None)
    if field is None:
        return ConfigError(f"Invalid setting: {error.get('msg')}.", hint="")
    var = env_name(field)
    extra = Settings.model_fields[field].json_schema_extra
    accepts = str(extra["accepts"]) if isinstance(extra, dict) else "a valid value"
    raw = error.get("input")
    if isinstance(raw, dict):
        raw = raw.get(var)
    shown = "<hidden>" if var in SECRET_VARIABLES else repr(raw)
    return ConfigError(f"{var}={shown} is invalid: expected {accepts}.", hint="")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings for entry points (app.py, the CLI); handlers get theirs through dependencies."""
    return load_settings()
