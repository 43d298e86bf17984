"""The bgremove server: `python app.py` serves on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (127.0.0.1:7860 by
default; Docker and Spaces set 0.0.0.0), and `uvicorn app:app` works too. The app is built by
`bgremove.web.app.create_app`.
"""

from __future__ import annotations

import sys

from bgremove.core.errors import ConfigError
from bgremove.web.app import create_app

try:
    app = create_app()
except ConfigError as exc:
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None


if __name__ == "__main__":
    import uvicorn

    settings = app.state.settings
    uvicorn.run(
        app, host=settings.server_name, port=settings.server_port, log_level=settings.log_level, log_config=None
    )  # keep our handlers: request ids, LOG_FORMAT=json
