"""Normalise any segmentation model's output to one tensor: logits, N×C×H×W at input size."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segdeploy.errors import ExportError
from segdeploy.export.scripted import ScriptedDict, ScriptedFirst, ScriptedTensor


def pick_logits(output):
    """torchvision's {"out", "aux"} dict → "out"; a tuple/list → its first item; a tensor or array → itself.

    The one place that knows what a segmentation model's output may look like (export,
    evaluation and the PyTorch runner all call it).
    """
    if isinstance(output, dict):
        if "out" in output:
            return output["out"]
        if not output:
            raise ExportError("the model returned an empty dict; segdeploy needs N×C×H×W logits")
        return next(iter(output.values()))
    if isinstance(output, (tuple, list)):
        if not output:
            raise ExportError("the model returned an empty sequence; segdeploy needs N×C×H×W logits")
        return pick_logits(output[0])
    if torch.is_tensor(output) or isinstance(output, np.ndarray):
        return output
    raise ExportError(f"the model returned {type(output).__name__}; segdeploy needs N×C×H×W logits")


class LogitsModel(nn.Module):
    """Wraps a model so that it has one output, `logits`, at the input's resolution.

    Auxiliary heads are dropped. A model whose logits are smaller than its input (an
    encoder at stride 8 with no final upsampling) gets a bilinear upsampling appended,
    which is recorded in the manifest (`upsampled_output`).
    """

    def __init__(self, model: nn.Module, upsample: bool = False):
        super().__init__()
        self.model = model
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = pick_logits(self.model(x))
        if self.upsample:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits


def _script_adapter(model: torch.jit.ScriptModule, output, upsample: bool) -> nn.Module:
    """TorchScript models cannot be traced inside a Python wrapper: script a typed adapter instead."""
    if torch.is_tensor(output):
        adapter = ScriptedTensor(model, upsample)
    elif isinstance(output, dict):
        adapter = ScriptedDict(model, upsample, "out" if "out" in output else next(iter(output)))
    else:
        adapter = ScriptedFirst(model, upsample)
    try:
        return torch.jit.script(adapter)
    except Exception as exc:  # TorchScript compilation errors have many types
        raise ExportError(f"cannot adapt the TorchScript model's output ({type(output).__name__}): {exc}") from None


def wrap_for_export(model: nn.Module, sample: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """Check the model's output on `sample`; return the one-output wrapper and its eager logits."""
    try:
        with torch.no_grad():
            output = model(sample)
    except RuntimeError as exc:  # wrong channel count or size for this model: the user's input, one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"the model fails on an input of shape {'x'.join(map(str, sample.shape))}: {first[:300]}",
                          "check --input-shape: its channels and size must be what the model takes") from None
    with torch.no_grad():
        logits = pick_logits(output)
    if logits.ndim != 4 or logits.shape[0] != sample.shape[0]:
        raise ExportError(
            f"the model's output has shape {list(logits.shape)}; segdeploy needs logits N×C×H×W "
            f"for input {list(sample.shape)}"
        )
    upsample = tuple(logits.shape[-2:]) != tuple(sample.shape[-2:])
    if isinstance(model, torch.jit.ScriptModule):
        wrapper = _script_adapter(model, output, upsample)
    else:
        wrapper = LogitsModel(model, upsample=upsample)
    if upsample:
        with torch.no_grad():
            logits = wrapper(sample)
    return wrapper.eval(), logits
