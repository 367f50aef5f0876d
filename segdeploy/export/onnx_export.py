"""torch → ONNX with the legacy TorchScript exporter (opset 11 by default)."""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from torch import nn

from segdeploy.errors import ExportError
from segdeploy.export.diagnose import modules_calling, operator_from_error
from segdeploy.export.rewrites import export_rewrites

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DYNAMIC_AXES = {"batch": 0, "height": 2, "width": 3}


def dynamic_axes_for(dynamic: set[str]) -> dict[str, dict[int, str]]:
    axes = {DYNAMIC_AXES[name]: name for name in sorted(dynamic, key=DYNAMIC_AXES.get)}
    return {INPUT_NAME: axes, OUTPUT_NAME: dict(axes)} if axes else {}


def torch_to_onnx(model: nn.Module, sample: torch.Tensor, *, opset: int, dynamic: set[str]) -> onnx.ModelProto:
    """Export `model` (already wrapped to one `logits` output) and return the ONNX model."""
    buffer = io.BytesIO()
    try:
        # export_rewrites(): exact replacements of export blockers, active while tracing only.
        with warnings.catch_warnings(), torch.no_grad(), export_rewrites():
            warnings.simplefilter("ignore")  # tracer warnings are noise for users; parity is the proof
            torch.onnx.export(
                model,
                (sample,),
                buffer,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic_axes_for(dynamic) or None,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many types; all mean "this model did not export"
        raise _explain(exc, model, sample, opset) from None
    return onnx.load_from_string(buffer.getvalue())


def _explain(exc: Exception, model: nn.Module, sample: torch.Tensor, opset: int) -> ExportError:
    text = " ".join(str(exc).split())
    operator = operator_from_error(text)
    where = ""
    if operator:
        modules = modules_calling(model, sample, operator)
        if modules:
            where = f" in module {', '.join(modules[:3])}"
        message = f"cannot export operator {operator}{where} at opset {opset}: {text[:300]}"
    else:
        message = f"ONNX export failed: {type(exc).__name__}: {text[:400]}"
    return ExportError(message, "try another --opset, a static --input-shape, or rewrite that layer")
