"""Exact, export-friendly equivalents of max pooling with indices and window-aligned unpooling.

Every function here computes what the PyTorch operator computes, from sizes read off
the input at run time (while tracing, ``x.shape[i]`` is a traced value), so the same
code exports with static or dynamic height/width. Only operators that onnxruntime and
TensorRT's ONNX parser both take are emitted: Range, Equal, Where, Gather, Cast, MaxPool
(single output). Adaptive average pooling and unaligned unpooling are rewritten at the
operator level instead (`segdeploy.export.symbolic_pool`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def max_pool2d_indices_exact(x: torch.Tensor, kernel: tuple[int, int], ceil_mode: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``F.max_pool2d(x, kernel, kernel, ceil_mode=..., return_indices=True)`` without
    MaxPool's Indices output (TensorRT's parser refuses it).

    Windows do not overlap (stride == kernel, no padding): each pixel's window max is
    spread back over the window (Gather), pixels equal to it get their rank inside the
    window, and a min-pool of the ranks gives the *first* maximum in row-major order,
    as PyTorch's kernels pick it (ties are common after a ReLU, where whole windows are 0).
    """
    kh, kw = kernel
    pooled = F.max_pool2d(x, kernel, kernel, ceil_mode=ceil_mode)
    height, width = x.shape[-2], x.shape[-1]
    rows = _owner(height, kh, pooled.shape[-2], x.device)
    cols = _owner(width, kw, pooled.shape[-1], x.device)
    spread = pooled.index_select(2, rows).index_select(3, cols)
    r = torch.arange(height, device=x.device).to(torch.float32).reshape(-1, 1)
    q = torch.arange(width, device=x.device).to(torch.float32).reshape(1, -1)
    rank = (r - torch.floor(r / kh) * kh) * kw + (q - torch.floor(q / kw) * kw)
    never = torch.full_like(rank, float(kh * kw))
    ranks = torch.where(x == spread, rank, never)
    first = -F.max_pool2d(-ranks, kernel, kernel, ceil_mode=ceil_mode)  # min-pool: first max's rank
    dh = torch.floor(first / kw)
    dw = first - dh * kw
    top = torch.arange(pooled.shape[-2], device=x.device).to(torch.float32).reshape(-1, 1) * kh
    left = torch.arange(pooled.shape[-1], device=x.device).to(torch.float32).reshape(1, -1) * kw
    return pooled, ((top + dh) * width + left + dw).to(torch.int64)


def unpool_is_window_aligned(kernel_size, stride, padding) -> bool:
    kernel = tuple(kernel_size) if isinstance(kernel_size, (tuple, list)) else (kernel_size,) * 2
    stride = tuple(stride) if isinstance(stride, (tuple, list)) else (stride,) * 2
    padding = tuple(padding) if isinstance(padding, (tuple, list)) else (padding,) * 2
    return kernel == stride and padding == (0, 0)


def _unpool_size(x: torch.Tensor, kernel, output_size):
    if output_size is not None:
        return output_size[-2], output_size[-1]
    return tuple(x.shape[d + 2] * kernel[d] for d in (0, 1))


def max_unpool2d_exact(x, indices, kernel, output_size=None) -> torch.Tensor:
    """``F.max_unpool2d`` with non-overlapping, unpadded windows (stride == kernel):
    each value goes to its flat index in the output plane, zeros elsewhere."""
    out_h, out_w = _unpool_size(x, kernel, output_size)
    return _unpool_by_comparison(x, indices, kernel, out_h, out_w)


def _owner(size_out, kernel: int, size_in, device) -> torch.Tensor:
    """For each output row (column), the pooling window it lies in (clamped to the last)."""
    owner = torch.floor(torch.arange(size_out, device=device).to(torch.float32) / kernel)
    return torch.clamp(owner, max=size_in - 1).to(torch.int64)


def _unpool_by_comparison(x, indices, kernel, out_h, out_w) -> torch.Tensor:
    """Non-overlapping windows: every output pixel belongs to one window; it takes the
    window's value where the window's max index equals the pixel's flat index."""
    rows = _owner(out_h, kernel[0], x.shape[2], x.device)
    cols = _owner(out_w, kernel[1], x.shape[3], x.device)
    spread = x.index_select(2, rows).index_select(3, cols)
    spread_idx = indices.index_select(2, rows).index_select(3, cols).to(torch.int32)
    r = torch.arange(out_h, device=x.device).reshape(-1, 1)
    q = torch.arange(out_w, device=x.device).reshape(1, -1)
    grid = (r * out_w + q).to(torch.int32)
    return torch.where(spread_idx == grid, spread, torch.zeros_like(spread))
