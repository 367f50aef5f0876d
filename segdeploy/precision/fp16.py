"""FP32 → FP16 graph with float32 inputs/outputs kept (onnxconverter-common)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterable

import onnx

from segdeploy.atomic import atomic_path
from segdeploy.errors import SegdeployError

# Operators left in FP32. onnxconverter-common's own list already holds Resize/Upsample
# (half-precision coordinate maths shifts sampled pixels) plus ops without FP16 kernels;
# reductions and softmax are added because FP16 accumulation over a whole feature map
# overflows or loses range.
EXTRA_BLOCKED_OPS = ("Resize", "Upsample", "ReduceMean", "Softmax")


def fp16_block_list(extra: Iterable[str] = ()) -> list[str]:
    """The operator types kept in FP32: the converter's defaults, ours, and `extra`."""
    from onnxconverter_common import float16

    ops = list(float16.DEFAULT_OP_BLOCK_LIST) + list(EXTRA_BLOCKED_OPS) + list(extra)
    return sorted(set(ops))


def convert_fp16(model: onnx.ModelProto, block_ops: list[str], block_nodes: Iterable[str] = ()) -> onnx.ModelProto:
    """Float16 copy of `model`; float32 graph inputs/outputs are kept so callers feed FP32."""
    from onnxconverter_common import float16

    from segdeploy.precision.index_math import kept_fp32_nodes

    float_outputs = {o.name for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    block_nodes = [*block_nodes, *kept_fp32_nodes(model)]
    try:
        with warnings.catch_warnings():
            # Per-value "will be truncated" warnings: clamping tiny weights is the intended behaviour.
            warnings.simplefilter("ignore", UserWarning)
            converted = float16.convert_float_to_float16(
                model,
                keep_io_types=True,
                op_block_list=block_ops,
                node_block_list=list(block_nodes) or None,
                disable_shape_infer=False,
            )
            return _restore_float_outputs(_drop_roundtrip_casts(converted), float_outputs)
    except Exception as exc:  # the converter raises ValueError/RuntimeError/KeyError on odd graphs
        raise SegdeployError(f"FP16 conversion failed: {' '.join(str(exc).split())[:300]}",
                             "keep the failing operator in FP32 with --fp16-block-ops") from None


def _drop_roundtrip_casts(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove FP32 → FP16 → FP32 cast pairs: blocked nodes then pass FP32 straight to each other.

    onnxconverter-common casts every blocked node's output to FP16 and back, even when the
    next node is blocked too, so a chain kept in FP32 still rounds between its nodes: fatal
    for index arithmetic (FP16 holds integers exactly only up to 2048). Removing a round trip
    only removes a rounding.
    """
    graph = model.graph
    casts = {n.output[0]: n for n in graph.node if n.op_type == "Cast"}
    to = lambda node: next((a.i for a in node.attribute if a.name == "to"), None)  # noqa: E731
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    types.update({i.name: i.data_type for i in graph.initializer})
    removed: set[int] = set()
    rename: dict[str, str] = {}
    for down in list(graph.node):
        up = casts.get(down.input[0]) if down.op_type == "Cast" and to(down) == onnx.TensorProto.FLOAT else None
        if up is None or to(up) != onnx.TensorProto.FLOAT16 or types.get(up.input[0]) != onnx.TensorProto.FLOAT:
            continue
        if down.output[0] in graph_outputs:
            continue
        rename[down.output[0]] = up.input[0]
        removed.add(id(down))
        if all(id(c) in removed for c in consumers.get(up.output[0], [])) and up.output[0] not in graph_outputs:
            removed.add(id(up))
    kept = [n for n in graph.node if id(n) not in removed]
    for node in kept:
        node.input[:] = [rename.get(i, i) for i in node.input]
    del graph.node[:]
    graph.node.extend(kept)
    return model


def _restore_float_outputs(model: onnx.ModelProto, names: set[str]) -> onnx.ModelProto:
    """Make FP32 graph outputs FP32 again where the converter left them FP16.

    With keep_io_types, onnxconverter-common still types an output FP16 when a blocked op
    (e.g. the final Resize of torchvision's models) produces it, casting FP32 → FP16 at the end.
    """
    from onnx import helper

    producers = {out: node for node in model.graph.node for out in node.output}
    for output in model.graph.output:
        if output.name not in names or output.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16:
            continue
        producer = producers.get(output.name)
        if producer is not None and producer.op_type == "Cast":
            for attr in producer.attribute:
                if attr.name == "to":
                    attr.i = onnx.TensorProto.FLOAT
        else:  # any other producer: rename its output and cast back to FP32
            inner = f"{output.name}_fp16"
            for node in model.graph.node:
                node.output[:] = [inner if o == output.name else o for o in node.output]
                node.input[:] = [inner if i == output.name else i for i in node.input]
            model.graph.node.append(helper.make_node("Cast", [inner], [output.name], to=onnx.TensorProto.FLOAT,
                                                     name=f"{output.name}_to_fp32"))
        output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        for info in model.graph.value_info:
            if info.name == output.name:
                info.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return model


def write_fp16(fp32_path: Path, out_path: Path, block_ops: list[str], block_nodes: Iterable[str] = ()) -> None:
    """Convert the graph at `fp32_path` and write it atomically to `out_path`."""
    converted = convert_fp16(onnx.load(str(fp32_path)), block_ops, block_nodes)
    with atomic_path(out_path) as tmp:
        onnx.save(converted, str(tmp))
