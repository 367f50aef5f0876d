"""Index arithmetic stays FP32 in FP16/INT8 graphs: SegNet's pooling indices survive precision.

The max-pool-with-indices rewrite computes argmax positions in float; rounded to FP16 or INT8
they pointed at wrong pixels (a SegNet trained on calib/ agreed with FP32 on 22 % of pixels in
both graphs). The check here is exact: in each precision graph, the indices equal PyTorch's
`max_pool2d(return_indices=True)` on that graph's *own* pooling input.
"""

from __future__ import annotations

import textwrap

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from segdeploy.build import BuildOptions, build_artifacts
from segdeploy.export import ExportRequest, export_model
from segdeploy.export.fused import Fusion
from segdeploy.precision.index_math import index_math_nodes

# Flat indices reach 64·96 = 6144 here: beyond FP16's exact integers (2048).
SEGNET_LIKE = '''
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Net(nn.Module):
        def __init__(self, num_classes=4):
            super().__init__()
            torch.manual_seed(0)
            self.enc = nn.Conv2d(3, 8, 3, padding=1)
            self.mid = nn.Conv2d(8, 8, 3, padding=1)
            self.head = nn.Conv2d(8, num_classes, 3, padding=1)

        def forward(self, x):
            e = torch.relu(self.enc(x))
            p, i = F.max_pool2d(e, 2, 2, return_indices=True)
            return self.head(F.max_unpool2d(torch.relu(self.mid(p)), i, 2, 2, output_size=e.shape[-2:]))
'''


# SegNet's last pool: the pooled maxima go straight back through the unpooling, whose spread of
# them over the windows onnxsim merges with the pooling's own spread (one shared Gather pair).
SEGNET_SHARED_SPREAD = SEGNET_LIKE.replace(
    "return self.head(F.max_unpool2d(torch.relu(self.mid(p)), i, 2, 2, output_size=e.shape[-2:]))",
    "return self.head(torch.relu(self.mid(F.max_unpool2d(p, i, 2, 2, output_size=e.shape[-2:]))))")


@pytest.fixture(scope="module")
def segnet_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("segnet-like")
    (root / "net.py").write_text(textwrap.dedent(SEGNET_LIKE))
    (root / "shared.py").write_text(textwrap.dedent(SEGNET_SHARED_SPREAD))
    return root


def _export(segnet_like, name, fusion=Fusion(), source="net.py"):
    out = segnet_like / name
    export_model(ExportRequest(source=f"{segnet_like / source}:Net", out_dir=out, input_shape=(1, 3, 64, 96), fusion=fusion))
    return out


def _own_indices_match_pytorch(graph_path) -> float:
    """Run the graph exposing the pooling input as compared (FP32) and the int64 indices."""
    import onnxruntime as ort

    model = onnx.load(str(graph_path))
    inferred = onnx.shape_inference.infer_shapes(model).graph
    info = {v.name: v for v in inferred.value_info}
    elem = lambda name: info[name].type.tensor_type.elem_type if name in info else None  # noqa: E731
    rank = lambda name: len(info[name].type.tensor_type.shape.dim) if name in info else 0  # noqa: E731
    # the pooling Equal compares floats (the unpooling one compares int32 indices with a grid)
    equal = next(n for n in model.graph.node if n.op_type == "Equal" and elem(n.input[0]) == onnx.TensorProto.FLOAT)
    to_int64 = [n for n in model.graph.node if n.op_type == "Cast" and elem(n.input[0]) == onnx.TensorProto.FLOAT
                and elem(n.output[0]) == onnx.TensorProto.INT64 and rank(n.output[0]) == 4]
    assert len(to_int64) == 1
    pooled_input, index = equal.input[0], to_int64[0].output[0]
    for name in (pooled_input, index):
        model.graph.output.append(info[name])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": x})))
    _, expected = F.max_pool2d(torch.from_numpy(values[pooled_input]), 2, 2, return_indices=True)
    return float(np.mean(expected.numpy() == values[index]))


def test_index_nodes_are_found_and_convolutions_are_not(segnet_like):
    model = onnx.load(str(_export(segnet_like, "plain") / "model.onnx"))
    kinds = {n.name: n.op_type for n in model.graph.node}
    found = {kinds[n] for n in index_math_nodes(model)}
    assert {"MaxPool", "Floor", "Cast", "Equal"} <= found
    assert "Conv" not in found


def test_fused_argmax_keeps_the_network_quantizable(segnet_like):
    """ArgMax's int64 → int32 cast must not end the walk: the network stays out of the list."""
    model = onnx.load(str(_export(segnet_like, "fused", Fusion(False, True)) / "model.onnx"))
    kinds = {n.name: n.op_type for n in model.graph.node}
    assert "Conv" not in {kinds[n] for n in index_math_nodes(model)}


@pytest.mark.parametrize("precision, artifact", [("fp16", "model.fp16.onnx"), ("int8", "model.int8-ort.onnx")])
def test_indices_exact_in_precision_graphs(segnet_like, calib_dir, precision, artifact):
    directory = _export(segnet_like, f"built-{precision}")
    build_artifacts(directory, [precision], "onnxruntime", BuildOptions(calib=calib_dir, calib_size=8))
    assert _own_indices_match_pytorch(directory / artifact) == 1.0
    graph = onnx.load(str(directory / artifact)).graph
    kept = set(index_math_nodes(onnx.load(str(directory / "model.onnx"))))
    # the pooled maxima also flow on to the decoder, which may quantize them; the index arithmetic may not
    arithmetic = {o for n in graph.node if n.name in kept and n.op_type != "MaxPool" for o in n.output}
    rounded = [n.name for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in arithmetic]
    assert arithmetic and not rounded


def test_the_spread_maxima_are_index_math_where_the_unpooling_shares_them(segnet_like):
    """SegNet's last pool: onnxsim merges the unpooling's spread of the pooled values with the
    pooling's own, so the Gathers feeding the comparison also feed the value path."""
    model = onnx.load(str(_export(segnet_like, "shared", source="shared.py") / "model.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}

    def spread_of_maxima(name):
        chain = [producers.get(name)]
        while chain[-1] is not None and chain[-1].op_type == "Gather":
            chain.append(producers.get(chain[-1].input[0]))
        return len(chain) == 3 and chain[-1] is not None and chain[-1].op_type == "MaxPool"

    readers = {n.op_type for n in model.graph.node for i in n.input if spread_of_maxima(i)}
    assert {"Equal", "Where"} <= readers  # compared for the indices, and unpooled as values
    kept = set(index_math_nodes(model))
    assert sum(1 for n in model.graph.node if n.name in kept and n.op_type in ("Gather", "MaxPool")) >= 3


@pytest.mark.parametrize("backend, artifact, source", [("onnxruntime", "model.int8-ort.onnx", "shared.py"),
                                                      ("tensorrt", "model.int8-trt.onnx", "net.py"),
                                                      ("tensorrt", "model.int8-trt.onnx", "shared.py")])
def test_indices_exact_with_percentile_ranges(segnet_like, calib_dir, backend, artifact, source):
    """Percentile (the default) sets the pooled maxima's range (hence INT8 scale) apart from the
    pooling input's; an index node reading them through Q/DQ pairs compared values rounded on two
    scales, no pixel equalled its window's max and every index fell outside its window (SegNet:
    -62 mIoU). Nodes kept FP32 read the unrounded tensors (precision.float_nodes). (onnxruntime with
    net.py: test_indices_exact_in_precision_graphs.)"""
    directory = _export(segnet_like, f"percentile-{backend}-{source}", source=source)
    build_artifacts(directory, ["int8"], backend, BuildOptions(calib=calib_dir, calib_size=8, graph_only=backend == "tensorrt"))
    assert _own_indices_match_pytorch(directory / artifact) == 1.0
