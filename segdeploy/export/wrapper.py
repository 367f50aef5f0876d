"""The export wrapper: the model with one output, logits at input size (see `models.outputs`),
checked on a sample and made traceable (TorchScript models get a scripted adapter)."""

from __future__ import annotations

import torch
from torch import nn

from segdeploy.errors import ExportError
from segdeploy.export.scripted import ScriptedDict, ScriptedFirst, ScriptedTensor
from segdeploy.models.outputs import LogitsModel, logits_key, pick_logits


def _script_adapter(model: torch.jit.ScriptModule, output, upsample: bool) -> nn.Module:
    """TorchScript models cannot be traced inside a Python wrapper: script a typed adapter instead."""
    if torch.is_tensor(output):
        adapter = ScriptedTensor(model, upsample)
    elif isinstance(output, dict):
        adapter = ScriptedDict(model, upsample, logits_key(output))
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
    except Exception as exc:  # whatever the model raises at this input (channels, size) is about the input
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ExportError(
            f"the model cannot run at input {'x'.join(map(str, sample.shape))} in PyTorch: {type(exc).__name__}: {first}",
            "check --input-shape (its channels and size) and --model-kwargs: they must be what the model takes",
        ) from None
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
