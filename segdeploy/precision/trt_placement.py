"""Where the TensorRT INT8 graph gets Q/DQ: TensorRT's placement rules, found in the graph.

TensorRT runs a layer in INT8 when its inputs arrive through DequantizeLinear (explicit
quantization); it recommends quantizing *all inputs of weighted operations* (Conv,
ConvTranspose, Gemm, MatMul with constant weights, weights per output channel), *not
their outputs*, and the *residual input* of an Add that follows a Conv, so that the Conv
fuses the addition; pooling between quantized tensors runs in INT8 too. It refuses a
quantized constant that feeds anything but a DequantizeLinear, which is what onnxruntime's
own placement makes of the scalar constants inside a decomposed LayerNorm or GELU.

So the graph rules here choose the nodes; onnxruntime's quantizer inserts the Q/DQ
(`nodes_to_quantize`, input-only quantization, per-channel axes), and `finish` gives every
other reader of a quantized tensor its float input back (onnxruntime rewires all readers of
a tensor it quantizes, so a LayerNorm or Softmax sharing an input with a MatMul would
otherwise read rounded values). Never selected: scalar or shape constants, LayerNorm /
Softmax / GELU internals, Resize, Concat, element-wise math other than residual Adds, graph
outputs, index arithmetic and fused pre/post-processing (`index_math.kept_fp32_nodes`).

Attention's MatMuls between two activations (Q·Kᵀ, softmax·V) stay in float: TensorRT-RTX
builds them either way, but a softmax output in [0, 1] keeps only 7 of 8 bits under symmetric
INT8, and NVIDIA ModelOpt's INT8 placement leaves them in float too (see README).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Output-channel axis of each weighted op's weight (Gemm's depends on transB: onnxruntime handles it).
WEIGHT_AXES = {"Conv": 0, "ConvTranspose": 1, "MatMul": 1}
POOL_OPS = ("MaxPool",)  # max commutes with rounding: pooling quantized input equals quantizing the pooled output
_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)


@dataclass
class Placement:
    """The nodes TensorRT should run in INT8, and the inputs among them that stay float."""

    nodes: list[str] = field(default_factory=list)
    float_inputs: dict[str, set[int]] = field(default_factory=dict)  # residual Add → index of the branch TensorRT fuses
    roles: dict[str, str] = field(default_factory=dict)  # node → "weighted" | "residual-add" | "pool"

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for role in self.roles.values():
            counts[role] = counts.get(role, 0) + 1
        return counts


class _Graph:
    """Producers, readers, constants and shapes of one graph, for the rules below."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.constants = {i.name: i for i in graph.initializer}
        self.producers = {out: node for node in graph.node for out in node.output}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}
        inferred = onnx.shape_inference.infer_shapes(model)
        values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
        self.shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
                       for v in values if v.type.tensor_type.HasField("shape")}

    def float_weight(self, name: str, rank: tuple[int, ...]) -> bool:
        tensor = self.constants.get(name)
        return tensor is not None and tensor.data_type in _FLOATS and len(tensor.dims) in rank

    def activation(self, name: str) -> bool:
        return bool(name) and name not in self.constants

    def sole_reader(self, tensor: str, node: onnx.NodeProto) -> bool:
        return tensor not in self.outputs and [r.name for r in self.readers.get(tensor, [])] == [node.name]


def is_weighted(node: onnx.NodeProto, graph: _Graph) -> bool:
    """Conv/ConvTranspose/Gemm/MatMul that reads an activation and a constant float weight.

    MatMul and Gemm need a 2-D weight as their *second* input (its columns are the output
    channels); `A @ X` with a constant A (e.g. an averaging matrix) has no per-output-channel
    weight and stays float. Grouped ConvTranspose stays float: its weight's channel axis holds
    C_out/groups entries, not one scale per output channel.
    """
    if node.op_type not in WEIGHTED_OPS or len(node.input) < 2 or not graph.activation(node.input[0]):
        return False
    if node.op_type in ("Conv", "ConvTranspose"):
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        return graph.float_weight(node.input[1], (3, 4, 5)) and (node.op_type == "Conv" or groups == 1)
    return graph.float_weight(node.input[1], (2,))


def _fused_branch(node: onnx.NodeProto, graph: _Graph, weighted: set[str]) -> int | None:
    """For a residual Add: the index of the input a Conv writes only for it (TensorRT fuses that Conv with the Add)."""
    if node.op_type != "Add" or len(node.input) != 2 or not all(graph.activation(i) for i in node.input):
        return None
    a, b = (graph.shapes.get(i) for i in node.input)
    if a is None or a != b:  # a residual adds two tensors of one shape; broadcasting adds are something else
        return None
    for index, tensor in enumerate(node.input):
        producer = graph.producers.get(tensor)
        if producer is not None and producer.op_type == "Conv" and producer.name in weighted and graph.sole_reader(tensor, node):
            return index
    return None


def choose(model: onnx.ModelProto, excluded: set[str], excluded_ops: set[str] = frozenset()) -> Placement:
    """The TensorRT placement for `model` (the prepared graph); `excluded` nodes and op types stay float."""
    graph = _Graph(model)
    allowed = [n for n in model.graph.node if n.name not in excluded and n.op_type not in excluded_ops]
    placement = Placement()
    weighted = {n.name for n in allowed if is_weighted(n, graph)}
    for node in allowed:
        if node.name in weighted:
            placement.roles[node.name] = "weighted"
            continue
        branch = _fused_branch(node, graph, weighted)
        if branch is not None:
            placement.roles[node.name] = "residual-add"
            placement.float_inputs[node.name] = {branch}
    quantized_inputs = {n.input[0] for n in model.graph.node if n.name in weighted}
    quantized_inputs |= {i for n in model.graph.node if n.name in placement.float_inputs for i in n.input}
    for node in allowed:
        if node.op_type in POOL_OPS and len(node.output) == 1 and node.output[0] in quantized_inputs:
            placement.roles[node.name] = "pool"
    placement.nodes = [n.name for n in model.graph.node if n.name in placement.roles]
    return placement


def ort_options(model: onnx.ModelProto, placement: Placement) -> dict:
    """onnxruntime.quantization extra options that make its QDQ quantizer follow `placement`."""
    pools = {n.op_type for n in model.graph.node if placement.roles.get(n.name) == "pool"}
    return {
        # Inputs only ("don't quantize the outputs of weighted operations"); a quantized max
        # pool's output shares its input's scale, so the pool runs in INT8 at no cost.
        "OpTypesToExcludeOutputQuantization": sorted({n.op_type for n in model.graph.node} - pools),
        "QDQOpTypePerChannelSupportToAxis": dict(WEIGHT_AXES),
        "ForceQuantizeNoInputCheck": True,  # a chosen pool quantizes its input even where nothing else does
        "DedicatedQDQPair": False,
    }


def finish(qdq: onnx.ModelProto, prepared: onnx.ModelProto, placement: Placement) -> onnx.ModelProto:
    """Every reader of a quantized tensor that is not in `placement` reads the float tensor again;
    a residual Add's fused branch stays float (see the module docstring)."""
    from segdeploy.precision.qdq_edit import keep_float, quantized_nodes

    chosen = set(placement.nodes)
    readers = [name for name in quantized_nodes(qdq) if name not in chosen]  # a dequantized graph output too
    return keep_float(qdq, prepared, [*readers, *placement.float_inputs], only_inputs=placement.float_inputs)
