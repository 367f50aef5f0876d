"""``scaled_dot_product_attention`` for opsets below 14, at the operator level.

The legacy exporter converts ``aten::scaled_dot_product_attention`` only from opset 14 on,
so transformer heads (SegFormer, DPT, BEiT, timm ViT blocks, ``nn.MultiheadAttention`` and
``nn.TransformerEncoderLayer``, which call it inside ``F.multi_head_attention_forward``)
fail at segdeploy's default opset 11. Attention is exactly

    softmax(Q·Kᵀ·scale + bias)·V

with bias 0 where attended and −inf where masked (a boolean mask: False → −inf; a float
mask is added as is; ``is_causal``: key j > query i → −inf). This emits that with MatMul,
Mul, Add, Where and Softmax on the last axis (opset 11's Softmax flattens the axes from
``axis`` on, which for the last axis is the per-row softmax). What PyTorch 2.14 does at the
edges is kept: ``scale`` defaults to 1/√E; a row whose keys are all masked gives zeros, not
NaN; ``enable_gqa`` repeats each key/value head for its group of query heads
(``repeat_interleave`` on the head axis).

Dropout: SDPA applies ``dropout_p`` whether or not the model is in eval mode (it does not
know the mode); models pass ``dropout_p=0`` outside training. A traced ``dropout_p > 0``
means the model is random in eval mode, so no graph could be proven against it: the export
is refused with the module's name, rather than the dropout silently dropped.
"""

from __future__ import annotations

import math

import torch
import torch.onnx.symbolic_helper as sym_help

from segdeploy.export.onnx_ops import FLOAT, RewriteRefused, arange, column, const, dim, float_dtype, rank, row, scope_of


def make_scaled_dot_product_attention(log: list):
    def scaled_dot_product_attention(g, query, key, value, attn_mask=None, dropout_p=None, is_causal=None,
                                     scale=None, enable_gqa=None):
        where = scope_of(g)
        _refuse_dropout(dropout_p, where)
        r = rank(query)
        if r is None or r < 2 or rank(key) != r:
            raise RewriteRefused(where, "cannot rewrite scaled_dot_product_attention in {module}: the exporter does not "
                                 "know the rank of its query/key", "export with a static --input-shape")
        if _flag(enable_gqa):
            key, value = _repeat_heads(g, query, key, r), _repeat_heads(g, query, value, r)
        dtype = float_dtype(query)
        scores = g.op("MatMul", g.op("Mul", query, _scale(g, query, scale, dtype)), _transpose_last(g, key, r))
        bias, masked = _bias(g, query, key, attn_mask, _flag(is_causal), r, dtype)
        if bias is not None:
            scores = g.op("Add", scores, bias)
        weights = g.op("Softmax", scores, axis_i=r - 1)
        if masked is not None:  # a row with every key masked: PyTorch gives zeros, softmax NaN
            weights = g.op("Where", masked, const(g, 0.0, dtype), weights)
        log.append((where, "scaled_dot_product_attention → MatMul/Softmax (opset < 14)"))
        return g.op("MatMul", weights, value)

    return scaled_dot_product_attention


def _flag(value) -> bool:
    if value is None or sym_help._is_none(value):
        return False
    return bool(sym_help._maybe_get_const(value, "b"))


def _refuse_dropout(dropout_p, where: str) -> None:
    if dropout_p is None or sym_help._is_none(dropout_p):
        return
    p = sym_help._maybe_get_const(dropout_p, "f")
    if not isinstance(p, float) or p > 0:
        shown = f"{p:g}" if isinstance(p, float) else "a value computed at run time"
        raise RewriteRefused(
            where,
            f"scaled_dot_product_attention in {{module}} is called with dropout_p={shown}: PyTorch applies that "
            "dropout even in eval mode, so the model's output is random and no graph can be proven against it",
            "pass dropout_p=0.0 outside training, e.g. `self.dropout if self.training else 0.0`",
        )


def _scale(g, query, scale, dtype: torch.dtype):
    if scale is not None and not sym_help._is_none(scale):
        given = sym_help._maybe_get_const(scale, "f")
        return const(g, given, dtype) if isinstance(given, float) else g.op("Cast", scale, to_i=FLOAT)
    sizes = sym_help._get_tensor_sizes(query)
    embed = sizes[-1] if sizes else None
    if isinstance(embed, int):
        return const(g, 1.0 / math.sqrt(embed), dtype)  # PyTorch: 1/sqrt(E), E = query.size(-1)
    size = g.op("Cast", dim(g, query, rank(query) - 1), to_i=FLOAT)
    return g.op("Reciprocal", g.op("Sqrt", size))


def _transpose_last(g, x, r: int):
    return g.op("Transpose", x, perm_i=list(range(r - 2)) + [r - 1, r - 2])


def _bias(g, query, key, attn_mask, causal: bool, r: int, dtype: torch.dtype):
    """(additive bias or None, 'row fully masked' condition or None)."""
    if causal:  # PyTorch refuses is_causal together with attn_mask
        rows, cols = column(g, arange(g, dim(g, query, r - 2))), row(g, arange(g, dim(g, key, r - 2)))
        return g.op("Where", g.op("Greater", cols, rows), const(g, -math.inf, dtype), const(g, 0.0, dtype)), None
    if attn_mask is None or sym_help._is_none(attn_mask):
        return None, None
    if attn_mask.type().scalarType() == "Bool":
        bias = g.op("Where", attn_mask, const(g, 0.0, dtype), const(g, -math.inf, dtype))
        attended = attn_mask
    else:
        bias = attn_mask
        attended = g.op("Not", g.op("Equal", attn_mask, const(g, -math.inf, dtype)))
    any_attended = g.op("ReduceMax", g.op("Cast", attended, to_i=FLOAT), axes_i=[-1], keepdims_i=1)
    return bias, g.op("Not", g.op("Greater", any_attended, const(g, 0.0)))


def _repeat_heads(g, query, kv, r: int):
    """``kv.repeat_interleave(Hq // Hkv, dim=-3)`` with the sizes read at run time."""
    shape = g.op("Shape", kv)
    lead = g.op("Slice", shape, const(g, [0]), const(g, [r - 2]))  # ..., Hkv
    tail = g.op("Slice", shape, const(g, [r - 2]), const(g, [r]))  # S, E
    group = g.op("Reshape", g.op("Div", dim(g, query, r - 3), dim(g, kv, r - 3)), const(g, [1]))
    expanded = g.op("Expand", g.op("Reshape", kv, g.op("Concat", lead, const(g, [1]), tail, axis_i=0)),
                    g.op("Concat", lead, group, tail, axis_i=0))
    heads = g.op("Slice", shape, const(g, [0]), const(g, [r - 3]))
    merged = g.op("Concat", heads, const(g, [-1]), tail, axis_i=0)
    return g.op("Reshape", expanded, merged)
