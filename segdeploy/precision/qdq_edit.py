"""Keep chosen nodes of a Q/DQ graph in float, by editing the graph onnxruntime quantized.

Why not `quantize_static(nodes_to_exclude=...)`: onnxruntime quantizes a *tensor* when its
producer or any consumer is quantized, so excluding a Conv still feeds it a dequantized
(rounded) activation; only its weights become float (checked on the U-Net: the excluded
Conv's input keeps its QuantizeLinear/DequantizeLinear pair). Keeping a layer in float must
also keep its *inputs* exact, so here a kept node reads the float tensors its
QuantizeLinear nodes read, and the FP32 graph's float weights; other consumers of the same
tensor stay quantized. Q/DQ nodes nobody reads any more are removed. The result is a valid
mixed graph for both onnxruntime and TensorRT (explicit quantization: a layer without Q/DQ
on its inputs runs in float).

One onnxruntime subtlety: with asymmetric U8 activations the quantizer deletes a Relu/Clip
after a Conv and lets QuantizeLinear's clamp to [0, max] do its work, so the tensor it reads
is the *pre-activation* output. A float reader then needs the activation back: a copy of the
FP32 graph's Relu/Clip is inserted in front of it (`float_source`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# onnxruntime also quantizes a graph output (e.g. the logits): rounding logits creates argmax
# ties, so the output is a candidate too, named like a node: "output:<name>".
OUTPUT_PREFIX = "output:"


def quantized_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the compute nodes that read at least one dequantized tensor, in graph order."""
    producers = _producers(model)
    names = []
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            continue
        if any(i in producers and producers[i].op_type == "DequantizeLinear" for i in node.input):
            names.append(node.name)
    names += [OUTPUT_PREFIX + o.name for o in model.graph.output
              if o.name in producers and producers[o.name].op_type == "DequantizeLinear"]
    return names


def keep_float(qdq: onnx.ModelProto, fp32: onnx.ModelProto, names, only_inputs: dict | None = None) -> onnx.ModelProto:
    """A copy of `qdq` where the nodes `names` read float inputs (see the module docstring).

    `fp32` is the prepared graph that was quantized: same node names, original weights.
    `only_inputs` {node: input indices}: for those nodes only these inputs go back to float.
    """
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    wanted = set(names)
    if not wanted:
        return model
    sources = FloatSources(model, fp32)
    for node in list(model.graph.node):
        if node.name not in wanted:
            continue
        _restore_constants(node, sources)
        for index, name in enumerate(node.input):
            dq = sources.producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or index not in (only_inputs or {}).get(node.name, [index]):
                continue
            quantize = sources.producers.get(dq.input[0])
            if quantize is not None and quantize.op_type == "QuantizeLinear":
                node.input[index] = sources.activation(quantize)
            else:
                node.input[index] = sources.weight(node.name, index)
    for output in [n[len(OUTPUT_PREFIX):] for n in wanted if n.startswith(OUTPUT_PREFIX)]:
        _float_output(model, sources, output)
    _drop_unread(model)
    topological_sort(model)
    return model


def _restore_constants(node: onnx.NodeProto, sources: "FloatSources") -> None:
    """A float node reads the FP32 graph's own constants: a bias changed for the quantized graph
    (`precision.bias_correction`, which may also add one — a float initializer, or in the
    onnxruntime graph an INT32 one behind a DequantizeLinear) is put back, an added one dropped."""
    fp32_node = sources.fp32_nodes.get(node.name)
    if fp32_node is None:
        return
    for index, name in enumerate(node.input):
        original = fp32_node.input[index] if index < len(fp32_node.input) else ""
        if name == original:
            continue
        if not original and (name in sources.initializers or sources.dequantized_constant(name)):
            node.input[index] = ""
        elif name in sources.initializers and original in sources.fp32_inits:
            node.input[index] = sources.weight(node.name, index)
    while node.input and not node.input[-1]:
        del node.input[-1]


def _float_output(model: onnx.ModelProto, sources: "FloatSources", output: str) -> None:
    """The graph output `output` taken before its Q/DQ pair (an Identity keeps its name)."""
    dq = sources.producers.get(output)
    quantize = sources.producers.get(dq.input[0]) if dq is not None else None
    if quantize is None or quantize.op_type != "QuantizeLinear":
        raise ValueError(f"graph output {output} is not produced by a Q/DQ pair")
    source = sources.activation(quantize)
    model.graph.node.remove(dq)
    model.graph.node.append(onnx.helper.make_node("Identity", [source], [output], name=f"{output}_float"))


class FloatSources:
    """The float tensor behind each Q/DQ pair of `model` (edited in place when a copy is needed)."""

    RESTORABLE = ("Relu", "Clip")

    def __init__(self, model: onnx.ModelProto, fp32: onnx.ModelProto):
        self.model = model
        self.producers = _producers(model)
        self.fp32_producers = _producers(fp32)
        self.fp32_nodes = {n.name: n for n in fp32.graph.node}
        self.fp32_inits = {i.name: i for i in fp32.graph.initializer}
        self.initializers = {i.name for i in model.graph.initializer}
        self.added: set[str] = set()

    def activation(self, quantize: onnx.NodeProto) -> str:
        """The unrounded tensor QuantizeLinear reads, with a Relu/Clip the quantizer folded away restored."""
        tensor = quantize.input[0]
        original = self.fp32_producers.get(tensor)
        current = self.producers.get(tensor)
        if original is None or current is None or original.op_type == current.op_type:
            return tensor
        if original.op_type not in self.RESTORABLE:
            raise ValueError(f"{tensor} is made by {current.op_type} here but by {original.op_type} in FP32")
        name = f"{tensor}_float"
        if name not in self.added:
            extra = [self._initializer(i) if i else "" for i in original.input[1:]]
            node = onnx.helper.make_node(original.op_type, [tensor, *extra], [name], name=f"{original.name}_float")
            node.attribute.extend(original.attribute)
            self.model.graph.node.append(node)
            self.added.add(name)
        return name

    def dequantized_constant(self, tensor: str) -> bool:
        """Whether `tensor` is a DequantizeLinear of an initializer (a quantized weight or bias)."""
        dq = self.producers.get(tensor)
        return dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in self.initializers

    def weight(self, node_name: str, index: int) -> str:
        """The FP32 graph's value at input `index` of the same-named node (a weight or bias)."""
        fp32_node = self.fp32_nodes.get(node_name)
        if fp32_node is None or index >= len(fp32_node.input) or fp32_node.input[index] not in self.fp32_inits:
            raise ValueError(f"no float weight for input {index} of node {node_name}")
        return self._initializer(fp32_node.input[index])

    def _initializer(self, fp32_name: str) -> str:
        name = f"{fp32_name}_float"  # the original name may now be a DequantizeLinear's output
        if name not in self.added:
            copy = onnx.TensorProto()
            copy.CopyFrom(self.fp32_inits[fp32_name])
            copy.name = name
            self.model.graph.initializer.append(copy)
            self.added.add(name)
        return name
def dequantize_constant(dq: onnx.NodeProto, inits: dict) -> np.ndarray:
    """What DequantizeLinear computes from constant inputs (`inits`: name → TensorProto), in float32
    as onnxruntime does: (q − zero point) · scale, per channel along its axis."""
    q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.int32)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
    has_zero = len(dq.input) > 2 and dq.input[2]
    zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.int32) if has_zero else np.zeros_like(scale, np.int32)
    if scale.ndim == 1 and scale.size > 1:
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (q - zero).astype(np.float32) * scale


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def _drop_unread(model: onnx.ModelProto) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads, then initializers nobody reads."""
    outputs = {o.name for o in model.graph.output}
    while True:
        read = {i for node in model.graph.node for i in node.input} | outputs
        dead = [n for n in model.graph.node if n.op_type in QDQ_OPS and not any(o in read for o in n.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    read = {i for node in model.graph.node for i in node.input} | outputs
    for init in [i for i in model.graph.initializer if i.name not in read]:
        model.graph.initializer.remove(init)


def topological_sort(model: onnx.ModelProto) -> None:
    """Restored activations are appended at the end; ONNX wants producers before readers."""
    ready = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    nodes = [onnx.NodeProto() for _ in model.graph.node]
    for copy, node in zip(nodes, model.graph.node):
        copy.CopyFrom(node)
    pending, ordered = list(range(len(nodes))), []
    while pending:
        progress = [i for i in pending if all(name in ready for name in nodes[i].input)]
        if not progress:
            raise ValueError("the edited graph has a cycle or a missing input")
        for i in progress:
            ordered.append(nodes[i])
            ready.update(nodes[i].output)
        done = set(progress)
        pending = [i for i in pending if i not in done]
    del model.graph.node[:]
    model.graph.node.extend(ordered)
