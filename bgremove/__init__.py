"""bgremove: background removal with rembg's ONNX models, as a library, CLI, REST API and Gradio app."""

from bgremove.core.telemetry import turn_off_telemetry

__version__ = "0.1.0"

turn_off_telemetry()  # before any door imports openvino or gradio: nothing is reported to third parties
