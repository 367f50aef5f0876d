"""Shape inference and onnxsim, each a step that either succeeds or says why not."""

from __future__ import annotations

import onnx

from segdeploy.errors import ExportError


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:  # onnx raises InferenceError and others
        raise ExportError(f"ONNX shape inference failed: {exc}") from None


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxsim's constant folding and graph clean-up; keeps the opset as exported."""
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(model, check_n=0)
    except Exception as exc:  # onnxsim surfaces onnxruntime/onnx errors of many types
        raise ExportError(f"onnxsim failed: {' '.join(str(exc).split())[:300]}", "re-run with --no-simplify") from None
    if not ok:
        raise ExportError("onnxsim could not validate the simplified graph", "re-run with --no-simplify")
    return simplified
