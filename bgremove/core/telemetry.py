"""No usage data leaves the process: third-party telemetry is turned off before those libraries load.

`import openvino` sends a Google Analytics event unless the user opted out with Intel's `opt_in_out` tool: it
counts the import in ~/intel and forks a child process to post the event, which also costs about 0.1 s at import
and 0.1 s at exit (the interpreter waits for that child). NNCF, which builds the int8 models, does the same. Both
fall back to a no-op stub when the `openvino_telemetry` package cannot be imported, which a `None` entry in
`sys.modules` makes so. Gradio's analytics and huggingface_hub's telemetry have their own switches, read when those
libraries are imported: they default to off here, and an explicit value in the environment still wins.
"""

from __future__ import annotations

import os
import sys

OFF_BY_DEFAULT = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}


def turn_off_telemetry() -> None:
    """Idempotent; must run before openvino, nncf, gradio or huggingface_hub are imported (bgremove's own import does)."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]  # None: the import fails, stubs run
    for name, value in OFF_BY_DEFAULT.items():
        os.environ.setdefault(name, value)
