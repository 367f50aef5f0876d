"""TensorRT's Q/DQ placement rules, checked on a finished INT8 graph (independently of the code that placed them).

`violations(model)` lists every place where the graph breaks a rule; an empty list is a pass.
The rules (TensorRT developer guide, "Q/DQ layer-placement recommendations" and "quantized
constants"; see segdeploy.precision.trt_placement):

* a quantized constant is a weight (rank ≥ 2), read by DequantizeLinear only, per output channel;
* every Conv / ConvTranspose / Gemm / MatMul with a constant weight reads both inputs dequantized;
* dequantized values are read only by those, by residual Adds (one input from a Conv, which
  stays float so TensorRT fuses it) and by max pools writing INT8 again; never by LayerNorm,
  Softmax or GELU arithmetic, shape math, Resize, Concat, or by a MatMul of two activations;
* activations are symmetric INT8 (zero point 0) and no graph output is dequantized.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
DQ_READERS = (*WEIGHTED, "Add", "MaxPool", "QuantizeLinear")


class Graph:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.inits = {i.name: i for i in model.graph.initializer}
        self.producers = {o: n for n in model.graph.node for o in n.output}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)

    def made_by(self, tensor: str, op_type: str) -> bool:
        node = self.producers.get(tensor)
        return node is not None and node.op_type == op_type

    def constant(self, tensor: str) -> bool:
        """An initializer, or an initializer seen through its DequantizeLinear."""
        if tensor in self.inits:
            return True
        node = self.producers.get(tensor)
        return node is not None and node.op_type == "DequantizeLinear" and node.input[0] in self.inits


def _attr(node: onnx.NodeProto, name: str, default):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def weight_axis(node: onnx.NodeProto) -> int:
    """The output-channel axis of a weighted node's weight."""
    if node.op_type == "Gemm":
        return 0 if _attr(node, "transB", 0) else 1
    return {"Conv": 0, "ConvTranspose": 1, "MatMul": 1}[node.op_type]


def is_weighted(node: onnx.NodeProto, graph: Graph) -> bool:
    if node.op_type not in WEIGHTED or len(node.input) < 2 or graph.constant(node.input[0]) or not graph.constant(node.input[1]):
        return False
    return not (node.op_type == "ConvTranspose" and _attr(node, "group", 1) > 1)


def violations(model: onnx.ModelProto) -> list[str]:
    graph = Graph(model)
    found = [*_constant_violations(graph), *_weighted_violations(graph), *_reader_violations(graph)]
    found += [f"graph output {o.name} is dequantized" for o in model.graph.output if graph.made_by(o.name, "DequantizeLinear")]
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in graph.inits:
            if numpy_helper.to_array(graph.inits[node.input[2]]).any():
                found.append(f"{node.name}: zero point is not 0 (TensorRT needs symmetric INT8)")
    return found


def _constant_violations(graph: Graph) -> list[str]:
    found = []
    for node in graph.model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in graph.inits:
            continue
        weight = graph.inits[node.input[0]]
        readers = graph.readers.get(node.output[0], [])
        if len(weight.dims) < 2:
            found.append(f"{node.input[0]}: a quantized {len(weight.dims)}-D constant (only weights may be quantized)")
            continue
        if [r.op_type for r in readers if r.op_type not in WEIGHTED]:
            found.append(f"{node.input[0]}: a quantized constant read by {[r.op_type for r in readers]}")
            continue
        axis = weight_axis(readers[0])
        scales = numpy_helper.to_array(graph.inits[node.input[1]])
        if weight.dims[axis] > 1 and (_attr(node, "axis", 1) != axis or scales.size != weight.dims[axis]):
            found.append(f"{node.input[0]}: not quantized per output channel (axis {_attr(node, 'axis', 1)}, "
                         f"{scales.size} scales for {weight.dims[axis]} channels)")
    return found


def _weighted_violations(graph: Graph) -> list[str]:
    return [f"{node.name} ({node.op_type}): input {i} is not dequantized" for node in graph.model.graph.node
            if is_weighted(node, graph) for i in (0, 1) if not graph.made_by(node.input[i], "DequantizeLinear")]


def _reader_violations(graph: Graph) -> list[str]:
    found = []
    for node in graph.model.graph.node:
        dequantized = [i for i, t in enumerate(node.input) if graph.made_by(t, "DequantizeLinear")]
        if not dequantized or node.op_type == "DequantizeLinear":
            continue
        if node.op_type not in DQ_READERS:
            found.append(f"{node.name} ({node.op_type}) reads a dequantized tensor")
        elif node.op_type == "MatMul" and not is_weighted(node, graph):
            found.append(f"{node.name}: a MatMul of two activations reads a dequantized tensor")
        elif node.op_type == "Add" and (len(dequantized) != 1 or not graph.made_by(node.input[1 - dequantized[0]], "Conv")):
            found.append(f"{node.name}: an Add reading dequantized values is not a residual Add after a Conv")
        elif node.op_type == "MaxPool" and not all(r.op_type == "QuantizeLinear" for r in graph.readers.get(node.output[0], [])):
            found.append(f"{node.name}: a quantized MaxPool whose output is not quantized again")
    return found


def quantized_weighted(model: onnx.ModelProto) -> tuple[int, int]:
    """(weighted nodes that read a dequantized weight, weighted nodes): the test's proof that INT8 happened."""
    graph = Graph(model)
    weighted = [n for n in model.graph.node if is_weighted(n, graph)]
    return sum(graph.made_by(n.input[1], "DequantizeLinear") for n in weighted), len(weighted)
