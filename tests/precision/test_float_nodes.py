"""The logits' tail (what follows the last weighted layers on the way to an output) stays float."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from segdeploy.precision.float_nodes import logits_tail, unrounded_nodes
from segdeploy.precision.qdq_edit import keep_float
from segdeploy.precision.quantize import TARGETS, quantize_graph

SHAPE = [1, 3, 12, 20]


def _model(branch: bool) -> onnx.ModelProto:
    """Two classifier convs summed and upsampled ×2 into `y`; with `branch`, the upsampled tensor
    also feeds a third conv (output `z`), so the Resize is no longer tail."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(0, 1, (4, 3, 3, 3)).astype(np.float32), n) for n in ("w1", "w2")]
    inits += [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
              numpy_helper.from_array(np.array([], np.float32), "roi")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="low"),
             helper.make_node("Conv", ["x", "w2"], ["c2"], pads=[1, 1, 1, 1], name="high"),
             helper.make_node("Add", ["c1", "c2"], ["s"], name="add"),
             helper.make_node("Resize", ["s", "roi", "scales"], ["y"], mode="linear", name="up")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 24, 40])]
    if branch:
        inits.append(numpy_helper.from_array(rng.normal(0, 1, (2, 4, 1, 1)).astype(np.float32), "w3"))
        nodes.append(helper.make_node("Conv", ["y", "w3"], ["z"], name="after"))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2, 24, 40]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _quantized(tmp_path, model, target="onnxruntime"):
    source, out = tmp_path / "float.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(source))
    batches = [{"x": np.random.default_rng(i).normal(0, 1, SHAPE).astype(np.float32)} for i in range(4)]
    quantize_graph(source, out, TARGETS[target], reader=batches, cache_path=tmp_path / f"cache-{target}.json", method="minmax")
    return onnx.load(str(out))


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_tail_is_everything_after_the_last_convs(tmp_path):
    """onnxruntime's placement rounds the sum, the upsampling and the output; TensorRT's placement
    (`precision.trt_placement`) only the sum's residual input, which TensorRT would fuse into a Conv."""
    expected = {"onnxruntime": ["add", "up", "output:y"], "tensorrt": ["add"]}
    for target, tail in expected.items():
        assert logits_tail(_quantized(tmp_path, _model(branch=False), target)) == tail


def test_a_tensor_read_by_a_later_conv_is_not_tail(tmp_path):
    qdq = _quantized(tmp_path, _model(branch=True))
    tail = logits_tail(qdq)
    assert "up" not in tail and "output:y" in tail and "output:z" in tail


def test_float_tail_outputs_unrounded_logits(tmp_path):
    model = _model(branch=False)
    qdq = _quantized(tmp_path, model)
    names = unrounded_nodes(qdq, model)
    assert names == {"logits_tail": ["add", "up", "output:y"], "kept_fp32": []}
    edited = keep_float(qdq, model, names["logits_tail"])
    producers = {o: n.op_type for n in edited.graph.node for o in n.output}
    assert producers["y"] != "DequantizeLinear"
    add = next(n for n in edited.graph.node if n.name == "add")
    assert all(producers[i] == "Conv" for i in add.input)  # reads the convs' unrounded outputs
    x = np.random.default_rng(9).normal(0, 1, SHAPE).astype(np.float32)
    rounded, floated, exact = _run(qdq, x)[0], _run(edited, x)[0], _run(model, x)[0]
    assert len(np.unique(rounded)) <= 256 < len(np.unique(floated))  # 8-bit logits vs float logits
    assert np.abs(floated - exact).mean() < np.abs(rounded - exact).mean()
