"""A TensorRT build failure told by ONNX node, operator, reason and remedy (`backends/tensorrt/diagnose.py`),
never TensorRT's raw message.

The explanation is checked on TensorRT-style messages against a small Q/DQ graph (no TensorRT
needed), and on a real failure: a SegFormer's INT8 graph with onnxruntime's own Q/DQ placement
(what segdeploy made before the TensorRT placement), which TensorRT-RTX refuses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from segdeploy.backends.tensorrt.diagnose import explain
from segdeploy.errors import SegdeployError

from tests.helpers import requires_tensorrt

MODELS = Path(__file__).parents[1] / "placement_models.py"


def _qdq_graph(path: Path) -> Path:
    """x → Mul(x, Q/DQ of a scalar constant) → y: the shape of the failure onnxruntime's placement caused."""
    inits = [numpy_helper.from_array(np.array(1.5, np.float32), "scale_const"),
             numpy_helper.from_array(np.array(0.01, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["scale_const", "s", "z"], ["scale_const_quantized"], name="q_const"),
             helper.make_node("DequantizeLinear", ["scale_const_quantized", "s", "z"], ["scale_const_dq"], name="dq_const"),
             helper.make_node("Mul", ["x", "scale_const_dq"], ["y"], name="block/attention/Mul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_a_quantized_tensor_leads_to_the_node_that_reads_it(tmp_path):
    raw = ("Error Code 10: Internal Error (Quantized constant (scale_const_quantized) is only allowed before DQ. "
           "In qdqGraphOptimizer at /_src/optimizer/qdq.cpp:1234)")
    message, hint = explain(_qdq_graph(tmp_path / "g.onnx"), ["some warning-free error", raw], "TensorRT-RTX 1.7", "int8")
    assert message == ("TensorRT-RTX 1.7 could not build an engine from g.onnx: node 'block/attention/Mul' (Mul) "
                       "(through scale_const_quantized): it reads a quantized constant, which TensorRT accepts only "
                       "in front of a DequantizeLinear")
    assert hint == "keep that node in float: rebuild with -p int8 --exclude-nodes block/attention/Mul"


def test_an_unknown_complaint_is_cleaned_of_tensorrt_internals(tmp_path):
    raw = "Error Code 2: Internal Error (Assertion failed: something odd. In build at /_src/builder.cpp:77)"
    message, hint = explain(_qdq_graph(tmp_path / "g.onnx"), [raw], "TensorRT 10.3", "fp16")
    assert message == "TensorRT 10.3 could not build an engine from g.onnx: TensorRT says: Internal Error (Assertion failed: something odd."
    assert "Error Code" not in message and ".cpp" not in message
    named, hint = explain(_qdq_graph(tmp_path / "g.onnx"), ["no implementation for block/attention/Mul"], "TensorRT 10.3", "fp16")
    assert "node 'block/attention/Mul' (Mul): TensorRT has no kernel" in named and "--fp16-block-ops Mul" in hint


@pytest.mark.trt
@requires_tensorrt
def test_old_placement_failure_names_the_onnx_node(tmp_path, calib_dir):
    """onnxruntime's own placement quantizes a LayerNorm's scalar constants; TensorRT refuses that,
    and the error says which ONNX node, its operator and how to keep it in float."""
    from segdeploy.backends.tensorrt.builder import EngineOptions, build_engine
    from segdeploy.export import ExportRequest, export_model
    from segdeploy.manifest import Manifest
    from segdeploy.precision.calibration import reader_for, select_images
    from segdeploy.precision.quantize import prepare_graph, quantize_graph, target_for

    directory = tmp_path / "segformer"
    export_model(ExportRequest(source=f"{MODELS}:segformer", out_dir=directory, num_classes=5, input_shape=(1, 3, 64, 96),
                               opset=14))
    prepared, graph = tmp_path / "prepared.onnx", tmp_path / "model.int8-trt.onnx"
    prepare_graph(directory / "model.onnx", prepared)
    old = dataclasses.replace(target_for("tensorrt"), placement="onnxruntime")
    reader = reader_for(Manifest.load(directory), select_images(calib_dir, 2))
    quantize_graph(prepared, graph, old, reader=reader, cache_path=tmp_path / "ranges.json", method="minmax")
    with pytest.raises(SegdeployError) as err:
        build_engine(graph, tmp_path / "x.engine", precision="int8", profile={}, options=EngineOptions())
    nodes = {n.name: n.op_type for n in onnx.load(str(graph)).graph.node}
    named = [name for name in nodes if f"node {name!r} ({nodes[name]})" in err.value.message]
    assert len(named) == 1 and nodes[named[0]] not in ("QuantizeLinear", "DequantizeLinear")
    assert f"--exclude-nodes {named[0]}" in err.value.hint
    assert "quantized constant" in err.value.message and "qdqGraphOptimizer" not in str(err.value)
    assert not (tmp_path / "x.engine").exists()
