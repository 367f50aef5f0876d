"""Exact rewrites of export blockers, for any model (the user's own included).

Four operators stop a segmentation model on its way to ONNX opset 11 and TensorRT:

* ``adaptive_avg_pool2d`` whose output size does not divide the input size, or with a
  dynamic height/width (PSPNet's pyramid bins 3 and 6; segmentation_models_pytorch's PSPNet
  reaches it through ``F.interpolate(mode="area")``): the legacy exporter refuses both.
* ``max_unpool2d`` (SegNet's decoder): the exporter fails on it, and TensorRT has no
  unpooling layer.
* ``max_pool2d`` with ``return_indices=True`` (SegNet's encoder): it exports, but as an
  ONNX MaxPool with an ``Indices`` output, which TensorRT's parser does not take.
* ``scaled_dot_product_attention`` (transformer heads): the exporter converts it from
  opset 14 on only.

`export_rewrites(opset)` is active around ``torch.onnx.export`` and works at two levels:

* **Operator level** (`symbolic_pool`, `symbolic_attention`): symbolic functions registered
  for the ATen operators replace the exporter's own conversion, so every call is seen
  however it is reached — module, functional, ``torch._C._nn`` alias, ``torch.ops.aten``,
  scripted code, or a call made inside another torch function, which a TorchFunctionMode
  does not see (a mode is not re-entered for the calls a torch function makes).
* **Function level** (this module): a TorchFunctionMode swaps max pooling with indices and
  window-aligned unpooling, whose ATen operators no longer carry what the exact rewrite
  needs (the unpooling kernel), for exact equivalents made of MaxPool, Gather, Equal and
  Where. No torch function calls these two internally, so every Python path reaches the mode.

The model itself is never changed, so the parity proof that ends every export compares the
graph with PyTorch's *own* operators.

`rewrite_export_blockers(model)` lists the modules the function-level rewrites will replace;
the operator-level ones are listed as the exporter meets them (the list `export_rewrites`
yields), with the module each call was made in.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from segdeploy.export.rewrite_ops import max_pool2d_indices_exact, max_unpool2d_exact, unpool_is_window_aligned
from segdeploy.export.symbolic_attention import make_scaled_dot_product_attention
from segdeploy.export.symbolic_pool import make_adaptive_avg_pool1d, make_adaptive_avg_pool2d, make_max_unpool2d
from segdeploy.export.symbolic_resize import make_bicubic_aa, make_bilinear_aa
from segdeploy.export.symbolic_shape import make_unflatten


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _pool_indices_rewritable(kernel_size, stride, padding, dilation) -> bool:
    kernel = _pair(kernel_size)
    stride = _pair(stride if stride else kernel_size)  # None or [] (torch._C._nn's default): the kernel
    return kernel == stride and _pair(padding) == (0, 0) and _pair(dilation) == (1, 1)


def rewrite_export_blockers(model: nn.Module) -> list[str]:
    """The modules whose max pooling with indices / unpooling `export_rewrites()` replaces
    at the function level (for the manifest and the user); the model is not modified."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.MaxUnpool2d):
            if unpool_is_window_aligned(module.kernel_size, module.stride, module.padding):
                found.append(f"{name} (MaxUnpool2d) → index-grid Equal/Where")
        elif isinstance(module, nn.MaxPool2d) and module.return_indices:
            if _pool_indices_rewritable(module.kernel_size, module.stride, module.padding, module.dilation):
                found.append(f"{name} (MaxPool2d with indices) → MaxPool + first-max min-pool indices")
    return found


class _ExportRewriteMode(TorchFunctionMode):
    """Swaps max pooling with indices and window-aligned unpooling for their exact
    equivalents while the exporter traces.

    Being active, it also keeps ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``
    off their fused inference fast paths (native operators no exporter converts): PyTorch
    takes those only when no torch-function override is active.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        if handler is not None:
            result = handler(*args, **kwargs)
            if result is not NotImplemented:
                return result
        return func(*args, **kwargs)


def _max_pool_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=True):
    if input.dim() != 4 or not _pool_indices_rewritable(kernel_size, stride, padding, dilation):
        return NotImplemented
    return max_pool2d_indices_exact(input, _pair(kernel_size), bool(ceil_mode))


def _max_unpool(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    kernel = _pair(kernel_size)
    stride = _pair(stride if stride else kernel_size)
    if input.dim() == 4 and unpool_is_window_aligned(kernel, stride, _pair(padding)):
        return max_unpool2d_exact(input, indices, kernel, output_size)
    # Overlapping or padded windows: the ATen operator, which the operator-level rewrite
    # scatters. (F.max_unpool2d's own size checks cannot run on traced sizes.)
    if output_size is None:
        output_size = [(input.shape[d] - 1) * stride[i] - 2 * _pair(padding)[i] + kernel[i] for i, d in ((0, -2), (1, -1))]
    return torch._C._nn.max_unpool2d(input, indices, list(output_size)[-2:])


def _max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """As PyTorch computes it (2-D unpooling of a W=1 plane), without its size checks, which
    cannot run on traced sizes; the operator-level rewrite scatters it."""
    kernel, pad = _pair(kernel_size)[0], _pair(padding)[0]
    step = _pair(stride)[0] if stride else kernel
    length = output_size[-1] if output_size is not None else (input.shape[-1] - 1) * step - 2 * pad + kernel
    return torch._C._nn.max_unpool2d(input.unsqueeze(-1), indices.unsqueeze(-1), [length, 1]).squeeze(-1)


# Every Python-level way to reach these two with the kernel size still known. Calls that only
# reach the ATen operator (scripted code, torch.ops.aten) keep the exporter's conversion:
# MaxPool with an Indices output (onnxruntime runs it; TensorRT's parser refuses it), and
# for unpooling the operator-level scatter.
_HANDLERS = {
    F.max_pool2d_with_indices: _max_pool_with_indices,
    torch._C._nn.max_pool2d_with_indices: _max_pool_with_indices,
    F.max_unpool2d: _max_unpool,
    F.max_unpool1d: _max_unpool1d,
}

# Operator-level rewrites: (ATen operator, factory of its symbolic function, opsets it applies to).
_SYMBOLICS = (
    ("aten::adaptive_avg_pool2d", make_adaptive_avg_pool2d, range(7, 100)),
    ("aten::adaptive_avg_pool1d", make_adaptive_avg_pool1d, range(7, 100)),
    ("aten::max_unpool2d", make_max_unpool2d, range(7, 100)),
    ("aten::scaled_dot_product_attention", make_scaled_dot_product_attention, range(7, 14)),
    ("aten::unflatten", make_unflatten, range(10, 13)),  # nn.MultiheadAttention's split of q/k/v
    ("aten::_upsample_bicubic2d_aa", make_bicubic_aa, range(7, 100)),  # timm's position-embedding resize
    ("aten::_upsample_bilinear2d_aa", make_bilinear_aa, range(7, 100)),
)
_FIXED_SIZE_ONLY = {"aten::_upsample_bicubic2d_aa", "aten::_upsample_bilinear2d_aa"}  # weights fixed by the sizes


@contextlib.contextmanager
def export_rewrites(opset: int = 11, *, dynamic_hw: bool = False) -> Iterator[list[tuple[str, str]]]:
    """Context manager: inside it, export blockers trace and convert as their exact rewrites
    (`dynamic_hw`: the export has dynamic height/width, so traced sizes are not fixed).

    Yields the list to which the operator-level rewrites append, while the exporter
    converts the traced graph, one (exporter scope name, what was rewritten into what) per
    rewritten call; `segdeploy.export.diagnose.module_at_scope` names the module.
    """
    applied: list[tuple[str, str]] = []
    registered = []
    try:
        for name, make, opsets in _SYMBOLICS:
            if opset in opsets:
                fixed = (applied, not dynamic_hw) if name in _FIXED_SIZE_ONLY else (applied,)
                torch.onnx.register_custom_op_symbolic(name, make(*fixed), opset)
                registered.append(name)
        with _ExportRewriteMode():
            yield applied
    finally:
        for name in registered:
            torch.onnx.unregister_custom_op_symbolic(name, opset)
