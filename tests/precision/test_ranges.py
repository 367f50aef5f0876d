"""Calibration through onnxruntime's calibrators (`precision.ranges`): the ranges onnxruntime itself
computes, and percentile calibration that survives a near-constant tensor (LayerNorm's variance)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from segdeploy.precision.calibration import CalibrationReader
from segdeploy.precision.quantize import METHODS
from segdeploy.precision.ranges import calibrate

SHAPE = [1, 3, 8, 12]


def _model(narrow: bool) -> onnx.ModelProto:
    """Conv → Relu → Conv; with `narrow`, also 1 + 1e-6·sigmoid(conv) (values within a few float32
    steps of 1, like a LayerNorm's variance + eps) as a second output."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 1, (4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 1, (2, 4, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if narrow:
        inits += [numpy_helper.from_array(np.array(1e-6, np.float32), "tiny"), numpy_helper.from_array(np.array(1.0, np.float32), "one")]
        nodes += [helper.make_node("Sigmoid", ["c1"], ["s"], name="sigmoid"),
                  helper.make_node("Mul", ["s", "tiny"], ["small"], name="scale"),
                  helper.make_node("Add", ["small", "one"], ["near_one"], name="variance")]
        outputs.append(helper.make_tensor_value_info("near_one", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _batches(count=6):
    return [{"x": np.random.default_rng(i).normal(0, 1, SHAPE).astype(np.float32)} for i in range(count)]


def _ranges(path) -> dict:
    from onnxruntime.quantization.calibrate import load_tensors_data

    return {name: tuple(np.asarray(v, np.float64).ravel().tolist() for v in data.range_value)
            for name, data in load_tensors_data(path).data.items()}


def _onnxruntime_own(model_path, cache, method):
    """quantize_static calibrating by itself (strides as `calibrate` takes them), writing its cache."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    extra = {"minmax": {"CalibStridedMinMax": 3}, "mean-minmax": {"CalibMovingAverage": True},
             "entropy": {"CalibStridedMinMax": 3}, "percentile": {"CalibStridedMinMax": 3, "CalibPercentile": 99.99}}[method]
    quantize_static(str(model_path), str(cache.with_suffix(".onnx")), CalibrationReader(_batches()), quant_format=QuantFormat.QDQ,
                    calibrate_method=CalibrationMethod[METHODS[method]], calibration_cache_path=str(cache), extra_options=extra)


@pytest.mark.parametrize("method", list(METHODS))
def test_ranges_are_onnxruntimes_own(tmp_path, method):
    path = tmp_path / "model.onnx"
    onnx.save(_model(narrow=False), str(path))
    _onnxruntime_own(path, tmp_path / "own.json", method)
    calibrate(path, CalibrationReader(_batches()), method, 99.99, ["Conv", "Relu"], tmp_path / "ours.json")
    ours, own = _ranges(tmp_path / "ours.json"), _ranges(tmp_path / "own.json")
    assert ours.keys() == own.keys() and len(ours) >= 3
    for name in own:
        np.testing.assert_allclose(ours[name], own[name], rtol=1e-6)


def test_percentile_survives_a_near_constant_tensor(tmp_path):
    narrow, plain = tmp_path / "narrow.onnx", tmp_path / "plain.onnx"
    onnx.save(_model(narrow=True), str(narrow))
    onnx.save(_model(narrow=False), str(plain))
    ops = ["Conv", "Relu", "Sigmoid", "Mul", "Add"]
    calibrate(narrow, CalibrationReader(_batches()), "percentile", 99.99, ops, tmp_path / "narrow.json")
    calibrate(plain, CalibrationReader(_batches()), "percentile", 99.99, ops, tmp_path / "plain.json")
    ranges, reference = _ranges(tmp_path / "narrow.json"), _ranges(tmp_path / "plain.json")
    (low,), (high,) = ranges["near_one"]
    assert abs(low - 1) < 1e-5 and abs(high - 1) < 1e-5  # where the values are (within float32 steps)
    for name in reference:  # every other tensor: what it would be without the narrow one
        assert ranges[name] == reference[name]


def test_mean_minmax_is_the_mean_of_each_batchs_extremes(tmp_path):
    """NNCF's MEAN_MINMAX, checked by running the graph: the mean over batches of min(y) and max(y)."""
    import onnxruntime as ort

    path = tmp_path / "model.onnx"
    onnx.save(_model(narrow=False), str(path))
    calibrate(path, CalibrationReader(_batches()), "mean-minmax", 99.99, ["Conv", "Relu"], tmp_path / "mean.json")
    calibrate(path, CalibrationReader(_batches()), "minmax", 99.99, ["Conv", "Relu"], tmp_path / "minmax.json")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = [session.run(["y"], batch)[0] for batch in _batches()]
    (low,), (high,) = _ranges(tmp_path / "mean.json")["y"]
    np.testing.assert_allclose([low, high], [np.mean([o.min() for o in outputs]), np.mean([o.max() for o in outputs])], rtol=1e-5)
    (lowest,), (highest,) = _ranges(tmp_path / "minmax.json")["y"]
    assert lowest < low < high < highest  # strictly inside the extremes of all batches
