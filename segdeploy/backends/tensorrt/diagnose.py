"""TensorRT's build errors told in terms of the ONNX graph: which node, what it is, what to do.

TensorRT reports the failing layer or tensor by the name the ONNX parser gave it, which is the
ONNX node or tensor name, inside a message written for TensorRT's developers (source files,
function names, error codes). `explain` finds the ONNX name it mentions, walks from a
Q/DQ node or a quantized tensor to the compute node that reads it (the one a user can keep in
float with `--exclude-nodes`), and says in one line what went wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Known TensorRT complaints → what they mean for the graph (matched against the raw message).
REASONS = (
    (re.compile(r"Quantized constant", re.I),
     "it reads a quantized constant, which TensorRT accepts only in front of a DequantizeLinear"),
    (re.compile(r"Could not find any implementation|no implementation", re.I),
     "TensorRT has no kernel for this layer with these input types"),
    (re.compile(r"scale|zero.?point", re.I), "TensorRT cannot use its quantization scales or zero points"),
)
# TensorRT's own location notes, never useful to a user.
_NOISE = re.compile(r"\s*\(?In \w+ at /?[\w/.]+:\d+\)?|Error Code \d+:\s*|IBuilder::\w+:\s*|\[[\w.]+::\w+::\d+\]\s*")


@dataclass
class Culprit:
    node: str
    op_type: str
    via: str | None = None  # the tensor or Q/DQ node TensorRT named, when it is not the node itself


class GraphNames:
    """The node and tensor names of one ONNX graph, to find what a TensorRT message is about."""

    def __init__(self, onnx_path: Path):
        import onnx

        model = onnx.load(str(onnx_path), load_external_data=False)
        self.nodes = {n.name: n for n in model.graph.node if n.name}
        self.readers: dict[str, list] = {}
        for node in model.graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.names = set(self.nodes) | {i.name for i in model.graph.initializer} | set(self.readers)

    def culprit(self, message: str) -> Culprit | None:
        """The compute node `message` is about (a Q/DQ node or quantized tensor leads to its reader), or None."""
        named = _longest_mention(message, self.names)
        if named is None:
            return None
        node = self.nodes.get(named) or next(iter(self.readers.get(named, [])), None)
        seen = set()
        while node is not None and node.op_type in QDQ_OPS and node.name not in seen:  # Q → DQ → the reader
            seen.add(node.name)
            node = next(iter(self.readers.get(node.output[0], [])), None)
        if node is None:
            return None
        return Culprit(node.name, node.op_type, None if named == node.name else named)


def _longest_mention(message: str, names: set[str]) -> str | None:
    """The longest graph name quoted in the message (names nest: 'a/Conv' is inside 'a/Conv_output_0')."""
    found = [n for n in names if len(n) > 2 and n in message]
    return max(found, key=len) if found else None


def reason(message: str) -> str:
    """What the TensorRT message means, in a few words (its first sentence when the complaint is not a known one)."""
    for pattern, meaning in REASONS:
        if pattern.search(message):
            return meaning
    cleaned = " ".join(_NOISE.sub(" ", message).split())
    return "TensorRT says: " + (cleaned.split(". ")[0][:200] or "no detail")


def explain(onnx_path: Path, errors: list[str], label: str, precision: str) -> tuple[str, str]:
    """(message, hint) for a failed build: node, operator, reason, and how to keep that node out of INT8."""
    graph = GraphNames(onnx_path)
    found = [(e, graph.culprit(e)) for e in errors]
    message, culprit = next(((e, c) for e, c in found if c is not None), (errors[-1] if errors else "", None))
    head = f"{label} could not build an engine from {onnx_path.name}"
    if culprit is None:
        return f"{head}: {reason(message) if message else 'no error reported'}", \
            "build the FP16 or FP32 graph instead, or try another TensorRT version"
    via = f" (through {culprit.via})" if culprit.via else ""
    text = f"{head}: node {culprit.node!r} ({culprit.op_type}){via}: {reason(message)}"
    hints = {"int8": f"keep that node in float: rebuild with -p int8 --exclude-nodes {culprit.node}",
             "fp16": f"keep that operator in FP32: rebuild with -p fp16 --fp16-block-ops {culprit.op_type}"}
    return text, hints.get(precision, "re-export with another --opset, or rewrite that layer")
