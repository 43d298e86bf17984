"""Settings: defaults, validation that names the variable, and .env loading."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bgremove.core.errors import ConfigError
from bgremove.core.settings import ENV_NAMES, Settings, load_settings


def test_defaults_match_the_documented_ones():
    settings = load_settings({})
    assert settings == Settings()
    assert settings.model_name == "isnet-general-use"
    assert settings.max_image_size_mb == 25 and settings.batch_concurrency == 2
    assert settings.allowed_extensions == ("png", "jpg", "jpeg", "webp")
    assert (settings.server_name, settings.server_port) == ("127.0.0.1", 7860)  # loopback unless told (Gradio's rule)
    assert not settings.listens_beyond_loopback
    assert load_settings({"GRADIO_SERVER_NAME": "0.0.0.0"}).listens_beyond_loopback


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("BATCH_CONCURRENCY", "abc"),
        ("BATCH_CONCURRENCY", "0"),
        ("REMBG_MODEL_NAME", "not-a-model"),
        ("REMBG_MODEL_NAME", "/no/such/model.onnx"),
        ("MAX_IMAGE_SIZE_MB", "-1"),
        ("MAX_IMAGE_PIXELS", "lots"),
        ("ALLOWED_EXTENSIONS", "png,gif"),
        ("LOG_LEVEL", "loud"),
        ("GRADIO_SERVER_PORT", "70000"),
        ("MAX_LOADED_MODELS", "0"),
    ],
)
def test_bad_values_name_the_variable(var, value):
    with pytest.raises(ConfigError) as caught:
        load_settings({var: value})
    assert str(caught.value).startswith(f"{var}={value!r} is invalid: expected ")


def test_values_are_parsed():
    settings = load_settings(
        {"ALLOWED_EXTENSIONS": " PNG, .jpg ", "MAX_IMAGE_SIZE_MB": "2.5", "LOG_LEVEL": "DEBUG", "REMBG_MODEL_NAME": "u2net"}
    )
    assert settings.allowed_extensions == ("png", "jpg")
    assert settings.max_image_bytes == int(2.5 * 1024 * 1024)
    assert settings.log_level == "debug" and settings.model_name == "u2net"


def test_dotenv_is_read_and_the_environment_wins(tmp_path):
    (tmp_path / ".env").write_text("BATCH_CONCURRENCY=5\nMAX_BATCH_FILES=7\n")
    code = "from bgremove.core.settings import get_settings as g; s = g(); print(s.batch_concurrency, s.max_batch_files)"
    env = {"PATH": "/usr/bin:/bin", "MAX_BATCH_FILES": "9", "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[2])}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["5", "9"]


def test_mcp_with_api_keys_is_refused():
    with pytest.raises(ConfigError, match="MCP_SERVER=1 cannot be combined with API_KEYS"):
        load_settings({"MCP_SERVER": "1", "API_KEYS": "0123456789abcdef0123"})


def test_env_example_lists_every_variable():
    """Every setting is documented in .env.example with its default, and nothing else is."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    listed = dict(re.findall(r"^([A-Z_]+)=(.*)$", (root / ".env.example").read_text(), re.MULTILINE))
    assert set(listed) == set(ENV_NAMES.values())
    from_example = load_settings(listed)  # the documented values are the defaults
    assert from_example == load_settings({})


def test_the_shell_environment_does_not_leak_into_explicit_settings(monkeypatch):
    monkeypatch.setenv("BATCH_CONCURRENCY", "7")
    assert load_settings({}).batch_concurrency == 2
    assert load_settings().batch_concurrency == 7


def test_api_keys_are_never_echoed():
    with pytest.raises(ConfigError) as caught:
        load_settings({"API_KEYS": "short-secret"})
    assert "short-secret" not in str(caught.value) and "<hidden>" in str(caught.value)
