"""Small builders for ONNX nodes inside the legacy exporter's symbolic functions.

The operator-level rewrites (`symbolic_pool`, `symbolic_attention`) emit ONNX directly
while the exporter converts each traced ATen operator. Sizes are read from the graph at
run time (Shape → Gather), so one graph serves static and dynamic height/width; onnxsim
folds them to constants in a static export. Only operators that exist unchanged from
opset 11 on and that TensorRT's parser takes are used here (no Unsqueeze/Squeeze/Reduce*,
whose axes moved from attributes to inputs in later opsets).
"""

from __future__ import annotations

import torch
from onnx import TensorProto

from segdeploy.errors import ExportError

INT64 = TensorProto.INT64
FLOAT = TensorProto.FLOAT
BOOL = TensorProto.BOOL

_DTYPES = {"Float": torch.float32, "Half": torch.float16, "Double": torch.float64, "BFloat16": torch.bfloat16}


def const(g, value, dtype: torch.dtype = torch.int64):
    """A Constant node holding `value` (a scalar becomes a 0-d tensor)."""
    return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))


def rank(value) -> int | None:
    """The rank the exporter knows for a traced value (None when unknown)."""
    value_type = value.type()
    return value_type.dim() if hasattr(value_type, "dim") else None


def float_dtype(value) -> torch.dtype:
    """The floating dtype of a traced value (float32 when the exporter does not know it)."""
    value_type = value.type()
    name = value_type.scalarType() if hasattr(value_type, "scalarType") else None
    return _DTYPES.get(name, torch.float32)


def dim(g, value, axis: int):
    """Size of `value` along `axis` (≥ 0), as a 0-d int64 computed at run time."""
    return g.op("Gather", g.op("Shape", value), const(g, axis), axis_i=0)


def as_int64_scalar(g, value):
    """A 0-d int64 from a constant int or a traced integer value of any shape with one element."""
    if isinstance(value, int):
        return const(g, value)
    return g.op("Reshape", g.op("Cast", value, to_i=INT64), const(g, []))


def as_vector(g, value):
    """A 1-element int64 vector (for Concat-ing shapes) from an int or a 0-d value."""
    return g.op("Reshape", as_int64_scalar(g, value), const(g, [1]))


def arange(g, limit):
    """0, 1, …, limit-1 as int64 (`limit` a 0-d int64 value)."""
    return g.op("Range", const(g, 0), limit, const(g, 1))


def column(g, value):
    return g.op("Reshape", value, const(g, [-1, 1]))


def row(g, value):
    return g.op("Reshape", value, const(g, [1, -1]))


def cast_like(g, value, dtype: torch.dtype):
    """`value` (float32) cast to `dtype` when the traced tensors are not float32."""
    if dtype == torch.float32:
        return value
    onnx_type = {torch.float16: TensorProto.FLOAT16, torch.float64: TensorProto.DOUBLE,
                 torch.bfloat16: TensorProto.BFLOAT16}[dtype]
    return g.op("Cast", value, to_i=onnx_type)


def scope_of(g) -> str:
    """The exporter's scope name of the operator being converted: one `pkg.Class::name`
    segment per module call (see `segdeploy.export.diagnose.module_at_scope`)."""
    node = getattr(g, "original_node", None)
    return node.scopeName() if node is not None else ""


class RewriteRefused(ExportError):
    """A rewrite cannot convert this call; `message` names the module as ``{module}``,
    filled in by the exporter wrapper, which knows the model."""

    def __init__(self, scope: str, message: str, hint: str):
        super().__init__(message, hint)
        self.scope = scope
