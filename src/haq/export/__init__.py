"""Export quantized models: QONNX, ONNX QDQ, and a PyTorch checkpoint with integer weights.

See :func:`haq.export.api.export_model`; the formats are documented in docs/export.md.
"""

from haq.export.api import FORMATS, export_model, load_for_export
from haq.export.torch_format import load_torch_export

__all__ = ["FORMATS", "export_model", "load_for_export", "load_torch_export"]
