"""Exact rewrites of export blockers, for any model (the user's own included).

Three operators stop a segmentation model on its way to ONNX opset 11 and TensorRT:

* ``adaptive_avg_pool2d`` whose output size does not divide the input size, or with a
  dynamic height/width (PSPNet's pyramid bins 3 and 6): the legacy exporter refuses both.
* ``max_unpool2d`` (SegNet's decoder): the exporter fails on it, and TensorRT has no
  unpooling layer.
* ``max_pool2d`` with ``return_indices=True`` (SegNet's encoder): it exports, but as an
  ONNX MaxPool with an ``Indices`` output, which TensorRT's parser does not take.

The rewrites are applied *while tracing only*: `export_rewrites()` is a TorchFunctionMode
active around ``torch.onnx.export``; it intercepts the three functions (whether called
through ``nn.AdaptiveAvgPool2d``/``nn.MaxUnpool2d``/``nn.MaxPool2d`` modules or straight
from a user's ``forward``) and emits exact equivalents made of MatMul, Reshape/Expand,
Equal/Where, Gather and MaxPool. The model itself is never changed, so the parity proof that
ends every export compares the graph with PyTorch's *own* operators.

`rewrite_export_blockers(model, dynamic_hw=...)` lists, for the manifest and the user,
the modules that will be rewritten; `REWRITES` holds one such scanner per rewrite.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from segdeploy.export.rewrite_ops import (
    adaptive_avg_pool2d_exact,
    max_pool2d_indices_exact,
    max_unpool2d_exact,
    unpool_is_window_aligned,
)

Rewrite = Callable[..., list]


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _adaptive_needs_rewrite(output_size) -> bool:
    # A global (1×1) pool exports as GlobalAveragePool at any size: nothing to rewrite.
    return any(o is not None and o != 1 for o in _pair(output_size))


def _pool_indices_rewritable(kernel_size, stride, padding, dilation) -> bool:
    kernel = _pair(kernel_size)
    stride = _pair(stride if stride not in (None, ()) else kernel_size)
    return kernel == stride and _pair(padding) == (0, 0) and _pair(dilation) == (1, 1)


def scan_adaptive_avg_pool(model: nn.Module, *, dynamic_hw: bool) -> list[str]:
    return [
        f"{name} (AdaptiveAvgPool2d, output {module.output_size}) → exact averaging-matrix MatMul"
        for name, module in model.named_modules()
        if isinstance(module, nn.AdaptiveAvgPool2d) and _adaptive_needs_rewrite(module.output_size)
    ]


def scan_max_unpool(model: nn.Module, *, dynamic_hw: bool) -> list[str]:
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.MaxUnpool2d):
            aligned = unpool_is_window_aligned(module.kernel_size, module.stride, module.padding)
            how = "index-grid Equal/Where" if aligned else "ScatterElements"
            found.append(f"{name} (MaxUnpool2d) → {how}")
        elif isinstance(module, nn.MaxPool2d) and module.return_indices:
            if _pool_indices_rewritable(module.kernel_size, module.stride, module.padding, module.dilation):
                found.append(f"{name} (MaxPool2d with indices) → MaxPool + first-max min-pool indices")
    return found


REWRITES: list[Rewrite] = [scan_adaptive_avg_pool, scan_max_unpool]


def rewrite_export_blockers(model: nn.Module, *, dynamic_hw: bool) -> list[str]:
    """What `export_rewrites()` will replace in `model` (for the manifest and the user).

    Functional calls in a user's ``forward`` are rewritten too but cannot be listed
    without running the model; the model is not modified.
    """
    applied: list[str] = []
    for rewrite in REWRITES:
        applied.extend(rewrite(model, dynamic_hw=dynamic_hw))
    return applied


class _ExportRewriteMode(TorchFunctionMode):
    """Swaps the blockers for their exact equivalents while the exporter traces."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        if handler is not None:
            result = handler(*args, **kwargs)
            if result is not NotImplemented:
                return result
        return func(*args, **kwargs)


def _adaptive_avg(input, output_size):
    if not _adaptive_needs_rewrite(output_size) or input.dim() not in (3, 4):
        return NotImplemented
    if input.dim() == 3:
        return adaptive_avg_pool2d_exact(input.unsqueeze(0), _pair(output_size)).squeeze(0)
    return adaptive_avg_pool2d_exact(input, _pair(output_size))


def _max_pool_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=True):
    if input.dim() != 4 or not _pool_indices_rewritable(kernel_size, stride, padding, dilation):
        return NotImplemented
    return max_pool2d_indices_exact(input, _pair(kernel_size), bool(ceil_mode))


def _max_unpool(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    if input.dim() != 4:
        return NotImplemented
    kernel = _pair(kernel_size)
    stride = _pair(stride if stride not in (None, ()) else kernel_size)
    return max_unpool2d_exact(input, indices, kernel, stride, _pair(padding), output_size)


_HANDLERS = {
    F.adaptive_avg_pool2d: _adaptive_avg,
    torch._C._nn.adaptive_avg_pool2d: _adaptive_avg,
    F.max_pool2d_with_indices: _max_pool_with_indices,
    F.max_unpool2d: _max_unpool,
}


@contextlib.contextmanager
def export_rewrites() -> Iterator[None]:
    """Context manager: inside it, the three blockers trace as their exact rewrites."""
    with _ExportRewriteMode():
        yield
