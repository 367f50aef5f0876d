"""``unflatten`` for opsets below 13, at the operator level.

``nn.MultiheadAttention`` (and so ``nn.TransformerEncoderLayer``) splits its packed
query/key/value projection with ``Tensor.unflatten``, which the legacy exporter converts
from opset 13 on only. It is a Reshape to ``shape[:dim] + sizes + shape[dim+1:]``, with the
sizes read at run time.
"""

from __future__ import annotations

import torch.onnx.symbolic_helper as sym_help

from segdeploy.export.onnx_ops import RewriteRefused, as_vector, const, rank, scope_of


def make_unflatten(log: list):
    def unflatten(g, x, dim, sizes):
        r, axis = rank(x), sym_help._maybe_get_const(dim, "i")
        if r is None or not isinstance(axis, int):
            raise RewriteRefused(scope_of(g), "cannot rewrite unflatten in {module}: the exporter does not know the rank "
                                 "or the axis", "export with a static --input-shape, or --opset 13")
        axis %= r
        parsed = sym_help._maybe_get_const(sizes, "is")
        parts = parsed if isinstance(parsed, (list, tuple)) else sym_help._unpack_list(sizes)
        shape = g.op("Shape", x)
        head = g.op("Slice", shape, const(g, [0]), const(g, [axis]))
        tail = g.op("Slice", shape, const(g, [axis + 1]), const(g, [r]))
        log.append((scope_of(g), "unflatten → Reshape (opset < 13)"))
        return g.op("Reshape", x, g.op("Concat", head, *[as_vector(g, p) for p in parts], tail, axis_i=0))

    return unflatten
