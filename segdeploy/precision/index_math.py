"""Float nodes that compute *indices*, found in the graph: they must stay FP32 in every precision graph.

The max-pool-with-indices rewrite (segdeploy.export.rewrite_ops) computes argmax positions
in float arithmetic (ranks, a min-pool, floor, flat index = row·width + column) and casts
them to int64; unpooling compares those indices with a pixel grid. Rounded to INT8 steps or
to FP16 (which holds integers exactly only up to 2048), the indices land on wrong pixels:
measured on a SegNet trained on calib/, both graphs agreed with FP32 on 22 % of pixels.
The pooled maxima are compared with the pooling input to find the argmax, so the MaxPool
that produces them must see the same float values as the comparison: it stays FP32 too, as
does the cast that turns the float indices into integers.

Found structurally, for any model: walking back from the graph outputs, a Cast from a float
type to an integer type ends the walk (what lies behind it only makes indices); every node
the walk never reaches computes nothing but indices. Integer-to-integer casts (an ArgMax's
int64 → int32) do not end it, so a fused argmax keeps the network in front of it.
"""

from __future__ import annotations

import onnx

_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
_INTEGERS = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
             onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}


def index_math_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that only compute indices, plus the MaxPools whose maxima they compare."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    types = _tensor_types(model)
    reached: set[int] = set()
    casts: list[onnx.NodeProto] = []  # float → integer: they read the float indices, so they stay FP32 too
    frontier = [o.name for o in graph.output]
    while frontier:
        node = producers.get(frontier.pop())
        if node is None or id(node) in reached:
            continue
        reached.add(id(node))
        if _float_to_integer_cast(node, types):
            casts.append(node)
            continue  # behind it: index arithmetic only
        frontier.extend(i for i in node.input if i)
    index_only = [n for n in graph.node if id(n) not in reached and _has_float_math(n, types)]
    compared = _compared_maxima(index_only, producers, reached)
    return [n.name for n in index_only + compared + casts if n.name]


def _compared_maxima(index_only: list[onnx.NodeProto], producers: dict, reached: set[int]) -> list[onnx.NodeProto]:
    """The MaxPools whose maxima the index nodes compare, and the data movement between them
    (the Gathers spreading a window's max over the window) even where the value path shares it:
    onnxsim merges the unpooling's spread of the pooled values with the pooling's own when the
    unpooling follows at once (SegNet's last pool). Left to the quantizer, that Gather hands the
    comparison maxima rounded on another scale than the pooling input, and no pixel equals its max."""
    found: list[onnx.NodeProto] = []
    seen: set[int] = set()
    frontier = [i for n in index_only for i in n.input]
    while frontier:
        node = producers.get(frontier.pop())
        if node is None or id(node) in seen or id(node) not in reached:
            continue
        seen.add(id(node))
        if node.op_type == "MaxPool":
            found.append(node)
        elif node.op_type in _MOVES:
            found.append(node)
            frontier.append(node.input[0])
    return found


_MOVES = ("Gather", "Reshape", "Transpose", "Identity", "Expand", "Squeeze", "Unsqueeze", "Flatten", "Tile")


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    types = {v.name: v.type.tensor_type.elem_type for v in values}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


def _float_to_integer_cast(node: onnx.NodeProto, types: dict[str, int]) -> bool:
    if node.op_type != "Cast":
        return False
    to = next((a.i for a in node.attribute if a.name == "to"), None)
    return to in _INTEGERS and types.get(node.input[0]) in _FLOATS


def _has_float_math(node: onnx.NodeProto, types: dict[str, int]) -> bool:
    """Nodes precision tools touch: something float in or out (pure integer/shape nodes are left alone)."""
    return any(types.get(t) in _FLOATS for t in [*node.input, *node.output])


def kept_fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """Every node the graph's structure keeps in FP32 in FP16/INT8 graphs: fused pre/post-processing
    (`precision.fused_nodes`) and index arithmetic (above)."""
    from segdeploy.precision.fused_nodes import fused_nodes

    return list(dict.fromkeys([*fused_nodes(model), *index_math_nodes(model)]))
