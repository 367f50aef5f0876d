"""Antialiased bilinear/bicubic resizing to a fixed size, at the operator level.

``F.interpolate(..., antialias=True)`` (timm's ``resample_abs_pos_embed``, which a ViT built
with ``dynamic_img_size=True`` — segmentation_models_pytorch's DPT encoders — calls to fit its
position embedding to the input) has no conversion in the legacy exporter at any opset.

It is a separable linear map: ``out = A · X · Bᵀ`` with A (H_out×H_in) and B (W_out×W_in)
fixed by the sizes. When those sizes are fixed (a static export), A and B are read off
PyTorch's own kernel applied to an identity basis (the other axis at scale 1 is left as is),
so the graph applies exactly PyTorch's weights, as two MatMuls (onnxsim folds them into
the position embedding itself). A size known only at run time is refused with the module's
name: export a static input shape.
"""

from __future__ import annotations

import torch
import torch.onnx.symbolic_helper as sym_help

from segdeploy.export.onnx_ops import RewriteRefused, cast_like, float_dtype, scope_of


def _axis_matrix(kernel, size_in: int, size_out: int | None, align_corners: bool, scale: float | None) -> torch.Tensor:
    """(size_out × size_in) weights of one axis: PyTorch's kernel on the identity basis.

    The other axis is 2 wide at scale 1 (the identity; PyTorch's antialiased kernels treat a
    1-wide axis differently), and float32, as the model's own call computes its weights.
    """
    basis = torch.eye(size_in).reshape(size_in, 1, size_in, 1).expand(-1, -1, -1, 2).contiguous()
    size = None if size_out is None else [size_out, 2]
    scales = None if scale is None else [scale, 1.0]
    resized = kernel(basis, size, align_corners, scales)[..., 0]  # (size_in, 1, size_out)
    return resized.reshape(size_in, -1).T.contiguous()


def _static(value, descriptor: str):
    if value is None or sym_help._is_none(value):
        return None
    parsed = sym_help._maybe_get_const(value, descriptor)
    return None if isinstance(parsed, torch._C.Value) else parsed


def _traced_output_size(g) -> list[int] | None:
    """The output's height and width recorded while tracing (valid for a static export only)."""
    node = getattr(g, "original_node", None)
    sizes = sym_help._get_tensor_sizes(node.outputsAt(0)) if node is not None else None
    return list(sizes[2:]) if sizes and len(sizes) == 4 and all(isinstance(s, int) for s in sizes) else None


def make_antialiased_resize(operator: str, kernel, log: list, static_export: bool):
    """The symbolic function of `operator` (the ``.vec`` overload F.interpolate calls).

    In a static export an output size computed from the input (``size=x.shape[-2:]``) is
    the one recorded while tracing; with dynamic height/width it is refused.
    """

    def resize(g, x, output_size, align_corners, scale_factors):
        sizes = sym_help._get_tensor_sizes(x)
        out, scales = _static(output_size, "is"), _static(scale_factors, "fs")
        if out is None and scales is None and static_export:
            out = _traced_output_size(g)
        known_in = sizes is not None and len(sizes) == 4 and all(isinstance(s, int) for s in sizes[2:])
        if not known_in or (out is None and scales is None):
            raise RewriteRefused(
                scope_of(g), f"cannot rewrite {operator} (antialiased resize) in {{module}}: its sizes are known only at "
                "run time", "export a static --input-shape (no --dynamic height,width)")
        corners = bool(sym_help._maybe_get_const(align_corners, "b"))
        rows, cols = (_axis_matrix(kernel, sizes[2 + axis], None if out is None else out[axis], corners,
                                   None if scales is None else scales[axis]) for axis in (0, 1))
        log.append((scope_of(g), f"{operator} {sizes[2]}×{sizes[3]} → {rows.shape[0]}×{cols.shape[0]}: "
                                 "PyTorch's antialiasing weights as two MatMuls"))
        dtype = float_dtype(x)
        left = cast_like(g, g.op("Constant", value_t=rows), dtype)
        right = cast_like(g, g.op("Constant", value_t=cols.T.contiguous()), dtype)
        return g.op("MatMul", g.op("MatMul", left, x), right)

    return resize


def make_bicubic_aa(log: list, static_export: bool):
    return make_antialiased_resize("_upsample_bicubic2d_aa", torch._C._nn._upsample_bicubic2d_aa, log, static_export)


def make_bilinear_aa(log: list, static_export: bool):
    return make_antialiased_resize("_upsample_bilinear2d_aa", torch._C._nn._upsample_bilinear2d_aa, log, static_export)
