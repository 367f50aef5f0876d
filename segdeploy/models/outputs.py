"""Any segmentation model's output as one tensor: logits, N×C×H×W at the input's size.

The one place that knows what a model's output may look like (torchvision's
``{"out", "aux"}`` dict, transformers' output objects with ``.logits``, a tuple, a tensor):
the export wrapper, the PyTorch reference that bench rebuilds and the PyTorch runner all use it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segdeploy.errors import ExportError


def logits_key(output: dict):
    """The key of the logits in a model's dict output: "out" (torchvision, whose "aux" is an
    auxiliary head), "logits" (transformers' output objects, dicts whose other entries are
    losses and hidden states), else the first key."""
    if not output:
        raise ExportError("the model returned an empty dict; segdeploy needs N×C×H×W logits")
    return next((key for key in ("out", "logits") if key in output), next(iter(output)))


def pick_logits(output):
    """torchvision's {"out", "aux"} dict → "out"; transformers' outputs (dict-like) → "logits";
    another dict → its first value; a tuple/list → its first item; a tensor or array → itself."""
    if isinstance(output, dict):
        return output[logits_key(output)]
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
