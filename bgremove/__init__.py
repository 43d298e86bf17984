"""bgremove: background removal with rembg's ONNX models, as a library, CLI, REST API and Gradio app."""

__version__ = "0.1.0"
