"""U8 activations with zero point 128 read as S8 with zero point 0 for OpenVINO (`backends.openvino_qdq`).

The claim is that the two forms are the same quantization; it is checked by running both in
onnxruntime (its QuantizeLinear/DequantizeLinear kernels, not the module's arithmetic) on values
that round at ties and saturate at both ends, and by compiling both in OpenVINO.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from segdeploy.backends.openvino_qdq import ZERO, signed_midpoints

SCALE = 0.05


def _qdq_graph() -> onnx.ModelProto:
    """x → three Q/DQ pairs with U8 zero points 128, 127 and 100, each a graph output; then a Conv
    reading the 128 pair (a signed activation into a layer, as in a residual branch)."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(np.array(SCALE, np.float32), "s"),
             numpy_helper.from_array(np.array(128, np.uint8), "z128"),
             numpy_helper.from_array(np.array(127, np.uint8), "z127"),
             numpy_helper.from_array(np.array(100, np.uint8), "z100"),
             numpy_helper.from_array(rng.integers(-64, 65, (4, 2, 3, 3)).astype(np.int8), "w"),
             numpy_helper.from_array(np.full(4, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wz"),
             numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b")]
    nodes = []
    for zero in ("z128", "z127", "z100"):
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", zero], [f"q_{zero}"], name=f"Q_{zero}"),
                  helper.make_node("DequantizeLinear", [f"q_{zero}", "s", zero], [f"y_{zero}"], name=f"DQ_{zero}")]
    nodes += [helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["w_f"], axis=0, name="DQ_w"),
              helper.make_node("Conv", ["y_z128", "w_f", "b"], ["conv"], pads=[1, 1, 1, 1], name="conv")]
    outputs = [helper.make_tensor_value_info(f"y_{z}", TensorProto.FLOAT, [1, 2, 6, 8]) for z in ("z128", "z127", "z100")]
    outputs.append(helper.make_tensor_value_info("conv", TensorProto.FLOAT, [1, 4, 6, 8]))
    graph = helper.make_graph(nodes, "midpoints", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 8])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _inputs() -> list[np.ndarray]:
    """Values on exact half steps (ties), beyond both ends of the U8/128 range, and random."""
    ties = (np.arange(-140, 140, 2.9)[:96] + 0.5) * SCALE
    return [ties.reshape(1, 2, 6, 8).astype(np.float32),
            np.random.default_rng(0).normal(0, 4, (1, 2, 6, 8)).astype(np.float32)]


def _run(model: onnx.ModelProto) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [session.run(None, {"x": x}) for x in _inputs()]


def test_only_zero_point_128_is_rewritten_and_onnxruntime_computes_the_same():
    original = _qdq_graph()
    rewritten = _qdq_graph()
    assert signed_midpoints(rewritten) == 1
    nodes = {n.name: n for n in rewritten.graph.node}
    assert nodes["Q_z128"].input[2] == nodes["DQ_z128"].input[2] == ZERO
    assert numpy_helper.to_array(next(i for i in rewritten.graph.initializer if i.name == ZERO)).dtype == np.int8
    assert [nodes[f"Q_{z}"].input[2] for z in ("z127", "z100")] == ["z127", "z100"]  # another grid: left alone
    for before, after in zip(_run(original), _run(rewritten)):
        assert np.abs(before[0]).max() > 128 * SCALE * 0.99  # the inputs reach saturation
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)


def test_a_pair_on_a_graph_output_or_read_by_another_node_is_left_alone():
    model = _qdq_graph()
    model.graph.output.append(helper.make_tensor_value_info("q_z128", TensorProto.UINT8, [1, 2, 6, 8]))
    assert signed_midpoints(model) == 0
    model = _qdq_graph()
    model.graph.node.append(helper.make_node("Identity", ["q_z128"], ["raw"], name="raw"))
    assert signed_midpoints(model) == 0


def test_openvino_computes_the_same_and_reads_s8(tmp_path):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'segdeploy[openvino]')")
    from segdeploy.backends.openvino import OpenVinoRunner

    paths = {}
    for name, rewrite in (("u8", False), ("s8", True)):
        model = _qdq_graph()
        del model.graph.output[:3]  # the convolution alone: what OpenVINO fuses and runs in INT8
        if rewrite:
            assert signed_midpoints(model) == 1
        paths[name] = tmp_path / f"{name}.onnx"
        onnx.save(model, str(paths[name]))
    outputs, precisions = {}, {}
    for name, path in paths.items():
        with OpenVinoRunner(path, precision="int8", threads=1) as runner:
            outputs[name] = [next(iter(runner.infer({"x": x}).values())) for x in _inputs()]
            precisions[name] = runner.runtime_precisions
    assert precisions == {"u8": {"u8": 1}, "s8": {"i8": 1}}
    for a, b in zip(outputs["u8"], outputs["s8"]):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * float(np.abs(a).max()))
