"""Exact rewrites of export blockers, applied to any model before export.

Each rewrite replaces a layer that the ONNX exporter (or TensorRT) cannot take with an
equivalent made of supported operators. The parity proof that ends every export is
what shows the rewrite exact. `REWRITES` lists them; each is a function
``(model, *, dynamic_hw) -> list[str]`` that edits the model in place and returns a
description of what it replaced.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

Rewrite = Callable[..., list]
REWRITES: list[Rewrite] = []


def rewrite_export_blockers(model: nn.Module, *, dynamic_hw: bool) -> list[str]:
    """Apply every registered rewrite; returns what was replaced (for the manifest and the user)."""
    applied: list[str] = []
    for rewrite in REWRITES:
        applied.extend(rewrite(model, dynamic_hw=dynamic_hw))
    return applied
