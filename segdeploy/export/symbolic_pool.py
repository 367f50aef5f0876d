"""Operator-level rewrites of adaptive average pooling and max unpooling.

They replace the exporter's conversion of the ATen operators themselves, so they see every
call however it is reached: ``nn.AdaptiveAvgPool2d``, ``F.adaptive_avg_pool2d``,
``torch._C._nn.adaptive_avg_pool2d``, ``torch.ops.aten``, scripted code, and calls made
*inside* other torch functions — ``F.interpolate(x, size=(b, b), mode="area")`` is adaptive
average pooling computed inside ``interpolate`` (segmentation_models_pytorch's PSPNet), and
``F.max_unpool1d`` unpools through ``max_unpool2d``.

* ``adaptive_avg_pool2d`` / ``adaptive_avg_pool1d``: PyTorch's bin i of an axis of size n
  with b bins spans ``[floor(i·n/b), ceil((i+1)·n/b))``. Each axis becomes a MatMul with a
  b×n averaging matrix built from n at run time, in integer arithmetic (exact for any size;
  the legacy exporter refuses sizes that b does not divide, and dynamic sizes). A 1×1
  output stays a GlobalAveragePool.
* ``max_unpool2d``: each value goes to its flat index in the output plane, zeros elsewhere
  (ScatterElements; TensorRT has no unpooling layer). Window-aligned unpooling through
  ``F.max_unpool2d`` is rewritten earlier, at the function level (`segdeploy.export.rewrites`),
  into a scatter-free comparison; this catches every other path.
"""

from __future__ import annotations

import torch
import torch.onnx.symbolic_helper as sym_help

from segdeploy.export.onnx_ops import (
    FLOAT,
    RewriteRefused,
    arange,
    as_int64_scalar,
    as_vector,
    cast_like,
    column,
    const,
    dim,
    float_dtype,
    rank,
    row,
    scope_of,
)


def output_sizes(value, count: int) -> list:
    """The operator's output-size list: ints where constant, traced values where computed
    from the input at run time (``None`` in ``F.adaptive_avg_pool2d``, or ``x.shape[-1] // 2``)."""
    parsed = sym_help._maybe_get_const(value, "is")
    if isinstance(parsed, int):
        return [parsed] * count
    if isinstance(parsed, (list, tuple)):
        return [int(v) for v in parsed]
    return [sym_help._maybe_get_const(v, "i") for v in sym_help._unpack_list(value)]


def _bin_matrix(g, size, bins):
    """bins×size float32 matrix whose row i averages PyTorch's adaptive-pool bin i.

    Bounds in int64: start = i·n // b, end = ((i+1)·n + b − 1) // b = ceil((i+1)·n / b).
    """
    bins = as_int64_scalar(g, bins)
    i = arange(g, bins)
    start = g.op("Div", g.op("Mul", i, size), bins)
    next_start = g.op("Mul", g.op("Add", i, const(g, 1)), size)
    end = g.op("Div", g.op("Add", next_start, g.op("Sub", bins, const(g, 1))), bins)
    start, end, j = column(g, start), column(g, end), row(g, arange(g, size))
    inside = g.op("And", g.op("Not", g.op("Less", j, start)), g.op("Less", j, end))
    count = g.op("Cast", g.op("Sub", end, start), to_i=FLOAT)
    return g.op("Div", g.op("Cast", inside, to_i=FLOAT), count)


def _pool_axis(g, x, axis: int, bins, last: bool):
    """Average `x` into `bins` bins along `axis` (the last axis when `last`, else the one before)."""
    matrix = cast_like(g, _bin_matrix(g, dim(g, x, axis), bins), float_dtype(x))
    if last:
        return g.op("MatMul", x, g.op("Transpose", matrix, perm_i=[1, 0]))
    return g.op("MatMul", matrix, x)


def _known_rank(g, x, operator: str, ranks: tuple[int, ...]) -> int:
    known = rank(x)
    if known not in ranks:
        raise RewriteRefused(
            scope_of(g), f"cannot rewrite {operator} in {{module}}: its input rank ({known}) is not known or not supported",
            "export with a static --input-shape, or call it on an N×C×H×W tensor",
        )
    return known


def make_adaptive_avg_pool2d(log: list):
    def adaptive_avg_pool2d(g, x, output_size):
        r = _known_rank(g, x, "adaptive_avg_pool2d", (3, 4))
        bins = output_sizes(output_size, 2)
        if r == 4 and bins == [1, 1]:
            return g.op("GlobalAveragePool", x)  # what the exporter itself emits, valid at any size
        log.append((scope_of(g), f"adaptive_avg_pool2d {_fmt(bins)} → averaging-matrix MatMuls"))
        return _pool_axis(g, _pool_axis(g, x, r - 2, bins[0], last=False), r - 1, bins[1], last=True)

    return adaptive_avg_pool2d


def make_adaptive_avg_pool1d(log: list):
    def adaptive_avg_pool1d(g, x, output_size):
        r = _known_rank(g, x, "adaptive_avg_pool1d", (2, 3))
        bins = output_sizes(output_size, 1)
        log.append((scope_of(g), f"adaptive_avg_pool1d {_fmt(bins)} → averaging-matrix MatMul"))
        return _pool_axis(g, x, r - 1, bins[0], last=True)

    return adaptive_avg_pool1d


def make_max_unpool2d(log: list):
    def max_unpool2d(g, x, indices, output_size):
        r = _known_rank(g, x, "max_unpool2d", (3, 4))
        height, width = output_sizes(output_size, 2)
        log.append((scope_of(g), "max_unpool2d → ScatterElements"))
        lead = [as_vector(g, dim(g, x, axis)) for axis in range(r - 2)]
        flat = g.op("Concat", *lead, const(g, [-1]), axis_i=0)
        plane = g.op("Mul", as_vector(g, height), as_vector(g, width))
        zeros = g.op("ConstantOfShape", g.op("Concat", *lead, plane, axis_i=0),
                     value_t=torch.zeros(1, dtype=float_dtype(x)))
        scattered = g.op("ScatterElements", zeros, g.op("Reshape", indices, flat), g.op("Reshape", x, flat), axis_i=r - 2)
        shape = g.op("Concat", *lead, as_vector(g, height), as_vector(g, width), axis_i=0)
        return g.op("Reshape", scattered, shape)

    return max_unpool2d


def _fmt(bins: list) -> str:
    return "×".join(str(b) if isinstance(b, int) else "dynamic" for b in bins)
