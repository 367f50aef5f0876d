"""Typed output adapters for TorchScript models (scripted, since they cannot be traced in a wrapper).

No `from __future__ import annotations` here: TorchScript must see real annotations.
"""

from typing import Dict, Final

import torch
import torch.nn.functional as F
from torch import nn


class ScriptedTensor(nn.Module):
    upsample: Final[bool]

    def __init__(self, inner: nn.Module, upsample: bool):
        super().__init__()
        self.inner, self.upsample = inner, upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _resize_to(self.inner(x), x, self.upsample)


class ScriptedDict(ScriptedTensor):
    key: Final[str]

    def __init__(self, inner: nn.Module, upsample: bool, key: str):
        super().__init__(inner, upsample)
        self.key = key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: Dict[str, torch.Tensor] = self.inner(x)
        return _resize_to(out[self.key], x, self.upsample)


class ScriptedFirst(ScriptedTensor):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _resize_to(self.inner(x)[0], x, self.upsample)


def _resize_to(logits: torch.Tensor, x: torch.Tensor, upsample: bool) -> torch.Tensor:
    if upsample:
        return F.interpolate(logits, size=[x.shape[2], x.shape[3]], mode="bilinear", align_corners=False)
    return logits
