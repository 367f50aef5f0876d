"""Nodes that stay float in an INT8 graph read unrounded tensors.

Two kinds, both found in the graph:

**The logits' tail** — what follows the last weighted layers on the way to the outputs.
onnxruntime's quantizer puts Q/DQ on every tensor an operator it knows produces, down to the
graph output: a segmentation head's sum of classifiers, the bilinear upsampling of the logits and
the logits themselves end up rounded to 8 bits. No INT8 arithmetic is gained there (the last
Conv/Gemm/MatMul already ran), but rounded logits tie and flip the argmax at class boundaries.
Measured on the CamVid LR-ASPP (README, "INT8 accuracy"): reading the tail unrounded recovers
0.10 mIoU on the choice frames and 0.25 on the held-out frames (onnxruntime graph, minmax). The
TensorRT placement quantizes no tensor of the tail but a residual Add's input, so there it
changes little.

The tail is found in the graph: walk back from each graph output through producers, skipping
Q/DQ, until a Conv/ConvTranspose/Gemm/MatMul; every node met on the way whose outputs are read
only inside the tail is in it.

**Nodes kept FP32 by structure** (`index_math.kept_fp32_nodes`: index arithmetic and fused
pre/post-processing). Excluding them from quantization keeps their arithmetic float, but
onnxruntime still hands them the *dequantized* tensors their neighbours share, each with its own
scale. SegNet's max-pool-with-indices finds the argmax by comparing the pooling input with the
pooled maxima spread back over the window; the two sides arrived through two Q/DQ pairs with
different scales, so with any method that sets those scales apart (percentile: 99.99th percentile
of all values vs of the maxima) no pixel compared equal, every index fell outside its window and
the unpooled maps were empty (measured: −62 mIoU on the SegNet trained on calib/, −0.2 with
minmax, whose ranges happen to coincide). Read from the unrounded tensors, the indices are
FP32's own. (TensorRT would also move a DequantizeLinear through a MaxPool and run it in INT8.)

The edit itself is `qdq_edit.keep_float` (the kept nodes read the unrounded tensors; Q/DQ pairs
nobody reads any more go).
"""

from __future__ import annotations

import onnx

from segdeploy.precision.index_math import kept_fp32_nodes
from segdeploy.precision.qdq_edit import OUTPUT_PREFIX, QDQ_OPS, quantized_nodes

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def logits_tail(model: onnx.ModelProto) -> list[str]:
    """Names of the tail's compute nodes (and `output:<name>` for quantized outputs), graph order."""
    producers = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    tail: dict[str, onnx.NodeProto] = {}
    pending = [producers[o] for o in outputs if o in producers]
    while pending:
        node = pending.pop()
        if node.op_type in WEIGHTED or node.name in tail:
            continue
        if node.op_type not in QDQ_OPS:
            tail[node.name] = node
        pending += [producers[i] for i in node.input if i in producers]
    inside = set(tail)
    kept = [n for n in tail.values() if all(_read_inside(o, readers, inside, outputs) for o in n.output)]
    quantized = set(quantized_nodes(model))
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    names = sorted((n.name for n in kept if n.name in quantized), key=order.get)
    return names + [q for q in quantized if q.startswith(OUTPUT_PREFIX)]


def _read_inside(tensor: str, readers: dict, inside: set[str], outputs: set[str]) -> bool:
    """True when every reader of `tensor` (through Q/DQ) is a tail node or a graph output."""
    for reader in readers.get(tensor, []):
        if reader.op_type in QDQ_OPS:
            if not all(_read_inside(o, readers, inside, outputs) for o in reader.output):
                return False
        elif reader.name not in inside:
            return False
    return True


def unrounded_nodes(qdq: onnx.ModelProto, fp32: onnx.ModelProto, tail: bool = True) -> dict[str, list[str]]:
    """The nodes of `qdq` that must read unrounded tensors, by kind (the manifest's record):
    `kept_fp32` (by structure, reading a dequantized tensor) and, with `tail`, `logits_tail`.
    `Int8Maker` hands them to `qdq_edit.keep_float`."""
    reading_rounded = set(quantized_nodes(qdq))
    return {"kept_fp32": [n for n in kept_fp32_nodes(fp32) if n in reading_rounded],
            "logits_tail": logits_tail(qdq) if tail else []}
