"""The nodes that `--fuse-preprocess` / `--fuse-argmax` add to a graph, found in the graph itself."""

from __future__ import annotations

import onnx

# Ops of the fused pre/post-processing (segdeploy.export.fused) as exported and simplified.
FUSED_PREPROCESS_OPS = ("Cast", "Transpose", "Slice", "Mul", "Sub", "Div")
FUSED_ARGMAX_OPS = ("ArgMax", "Cast")


def fused_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that fused pre/post-processing added; they stay FP32 in every precision graph.

    INT8: quantizing the pixel normalisation would round 0-255 pixels to 8-bit steps of a
    symmetric range (half the levels unused) before the first convolution; Q/DQ in front of
    ArgMax buys nothing and may change ties. FP16: onnxconverter-common retypes the uint8→float
    Cast inconsistently (onnxruntime then refuses the graph), and normalised pixels lose
    precision. Found structurally: the chain of preprocessing ops fed by a uint8 graph input,
    and the ArgMax/Cast chain producing an integer output.
    """
    graph = model.graph
    consumers: dict[str, list] = {}
    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found: list[str] = []
    frontier = [i.name for i in graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.UINT8]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.op_type in FUSED_PREPROCESS_OPS and node.name not in found:
                found.append(node.name)
                frontier.extend(node.output)
    integer_outputs = [o.name for o in graph.output if o.type.tensor_type.elem_type in (onnx.TensorProto.INT32, onnx.TensorProto.INT64)]
    for name in integer_outputs:
        node = producers.get(name)
        while node is not None and node.op_type in FUSED_ARGMAX_OPS:
            found.append(node.name)
            node = producers.get(node.input[0])
    return [n for n in found if n]
