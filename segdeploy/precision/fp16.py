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

    from segdeploy.precision.fused import fused_nodes

    float_outputs = {o.name for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    block_nodes = [*block_nodes, *fused_nodes(model)]
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
            return _restore_float_outputs(converted, float_outputs)
    except Exception as exc:  # the converter raises ValueError/RuntimeError/KeyError on odd graphs
        raise SegdeployError(f"FP16 conversion failed: {' '.join(str(exc).split())[:300]}",
                             "keep the failing operator in FP32 with --fp16-block-ops") from None


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
