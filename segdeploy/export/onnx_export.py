"""torch → ONNX with the legacy TorchScript exporter (opset 11 by default)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from typing import Iterator

import onnx
import torch
from torch import nn

from segdeploy.errors import ExportError
from segdeploy.export.diagnose import module_at_scope, modules_calling, operator_from_error
from segdeploy.export.onnx_ops import RewriteRefused
from segdeploy.export.rewrites import export_rewrites

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DYNAMIC_AXES = {"batch": 0, "height": 2, "width": 3}


def _axes(dynamic: set[str], layout: str) -> dict[int, str]:
    """{axis index: name} of the dynamic axes in a tensor of `layout` (e.g. NHWC: height is axis 1)."""
    letters = {"batch": "N", "height": "H", "width": "W"}
    return {layout.index(letters[name]): name for name in sorted(dynamic, key=DYNAMIC_AXES.get)}


def dynamic_axes_for(dynamic: set[str], *, input_layout: str = "NCHW", output_layout: str = "NCHW",
                     output_name: str = OUTPUT_NAME) -> dict[str, dict[int, str]]:
    if not dynamic:
        return {}
    return {INPUT_NAME: _axes(dynamic, input_layout), output_name: _axes(dynamic, output_layout)}


def torch_to_onnx(model: nn.Module, sample: torch.Tensor, *, opset: int, dynamic: set[str], input_layout: str = "NCHW",
                  output_layout: str = "NCHW", output_name: str = OUTPUT_NAME,
                  rewritten: list[str] | None = None) -> onnx.ModelProto:
    """Export `model` (already wrapped to one output: logits, or labels when argmax is fused).

    `rewritten`, when given, receives one line per operator-level rewrite the export made.
    """
    buffer = io.BytesIO()
    try:
        # export_rewrites(): exact replacements of export blockers, active while exporting only.
        with warnings.catch_warnings(), torch.no_grad(), _exporter_log_silenced(), \
                export_rewrites(opset, dynamic_hw=bool({"height", "width"} & set(dynamic))) as applied:
            warnings.simplefilter("ignore")  # tracer warnings are noise for users; parity is the proof
            torch.onnx.export(
                model,
                (sample,),
                buffer,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[output_name],
                dynamic_axes=dynamic_axes_for(dynamic, input_layout=input_layout, output_layout=output_layout,
                                              output_name=output_name) or None,
                do_constant_folding=True,
                dynamo=False,
            )
    except RewriteRefused as exc:  # a rewrite cannot convert a call: name its module and what to do
        raise ExportError(exc.message.format(module=module_at_scope(model, exc.scope)), exc.hint) from None
    except Exception as exc:  # the exporter raises many types; all mean "this model did not export"
        raise _explain(exc, model, sample, opset) from None
    if rewritten is not None:  # one line per module and operator, in graph order
        rewritten.extend(dict.fromkeys(f"{module_at_scope(model, scope)}: {what}" for scope, what in applied))
    return onnx.load_from_string(buffer.getvalue())


@contextlib.contextmanager
def _exporter_log_silenced() -> Iterator[None]:
    """Keep the legacy exporter's C++ log off stdout (results and --json go there).

    torch 2.14 switches its ONNX log on for every export (`setup_onnx_logging` tests the
    function object, not its result) and prints the whole TorchScript graph to stdout when
    a conversion fails. The failure itself is reported as one line by `_explain`.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1 (a detached process): nothing to keep clean
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


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
