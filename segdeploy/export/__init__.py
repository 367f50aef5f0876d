"""torch → verified ONNX: load, rewrite blockers, export, infer shapes, simplify, prove parity.

`export_model(request)` (in `exporter`) is the one entry point; see docs/design.md,
"Following `segdeploy export`".
"""

from segdeploy.export.exporter import ExportRequest, ExportResult, export_model, parse_dynamic, parse_input_shape

__all__ = ["ExportRequest", "ExportResult", "export_model", "parse_dynamic", "parse_input_shape"]
