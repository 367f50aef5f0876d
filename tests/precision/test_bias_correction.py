"""Bias correction: the mean output shift INT8 rounding causes is folded into the float bias.

Judged independently of the module's own arithmetic: the shift each layer should lose is measured
directly, by running the layer with float and with rounded weights (and, in activations mode, a
QuantizeLinear/DequantizeLinear pair on its input) in onnxruntime and averaging the difference of
the outputs; the whole graph's per-channel output mean error is compared before and after; W_q is
read back from onnxruntime's DequantizeLinear kernels.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from segdeploy.precision.bias_correction import MODES, correct_biases, quantized_layers
from segdeploy.precision.quantize import TARGETS, quantize_graph

SHAPE = (1, 3, 24, 40)  # non-square
CONV_LAYERS = ("conv1", "dw", "dilated", "head")


def _weights(rng, shape, spike):
    """One large weight per output channel: the per-channel INT8 step is coarse and the small
    weights round badly — a real, systematic weight-rounding error."""
    w = rng.normal(0, 0.3, shape).astype(np.float32)
    w.reshape(shape[0], -1)[:, 0] = spike * rng.choice([-1, 1], shape[0])
    return w


def _conv_model() -> onnx.ModelProto:
    """Conv 3×3 → Relu → depthwise 3×3 stride 2 → Relu → dilated 3×3 (dilation 2, asymmetric pads)
    → Relu → 1×1 Conv without a bias (one is added)."""
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(_weights(rng, (8, 3, 3, 3), 8.0), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1"),
             numpy_helper.from_array(_weights(rng, (8, 1, 3, 3), 4.0), "w2"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b2"),
             numpy_helper.from_array(_weights(rng, (8, 8, 3, 3), 4.0), "w3"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b3"),
             numpy_helper.from_array(_weights(rng, (6, 8, 1, 1), 3.0), "w4")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], group=8, name="dw"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], pads=[2, 1, 2, 3], dilations=[2, 2], name="dilated"),
             helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
             helper.make_node("Conv", ["r3", "w4"], ["y"], name="head")]
    return _model(nodes, inits, [1, 6, 12, 20])


def _matmul_model() -> onnx.ModelProto:
    """Flatten the image rows into tokens: x (1, 3·24, 40) → MatMul (40 → 16) → Add bias → Relu → MatMul (16 → 5), no bias."""
    rng = np.random.default_rng(11)
    inits = [numpy_helper.from_array(np.array([1, 72, 40], np.int64), "shape"),
             numpy_helper.from_array(_weights(rng, (16, 40), 6.0).T.copy(), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 16).astype(np.float32), "b1"),
             numpy_helper.from_array(_weights(rng, (5, 16), 4.0).T.copy(), "w2")]
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["tokens"], name="tokens"),
             helper.make_node("MatMul", ["tokens", "w1"], ["m1"], name="fc1"),
             helper.make_node("Add", ["m1", "b1"], ["a1"], name="fc1_bias"),
             helper.make_node("Relu", ["a1"], ["r1"], name="relu"),
             helper.make_node("MatMul", ["r1", "w2"], ["y"], name="fc2")]
    return _model(nodes, inits, [1, 72, 5])


def _model(nodes, inits, out_shape) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "seeded", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _batches(seed: int, count: int) -> list[dict]:
    rng = np.random.default_rng(seed)  # positive-mean inputs: E[x] ≠ 0, so weight error shifts the mean
    return [{"x": (rng.random(SHAPE) * 2.0 + 0.5).astype(np.float32)} for _ in range(count)]


def _session(model) -> ort.InferenceSession:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def _run(model, batches: list[dict], outputs: list[str] | None = None) -> list[list[np.ndarray]]:
    session = _session(model)
    return [session.run(outputs, batch) for batch in batches]


def _writer(target, calib, cache):
    def write(source, dest):
        quantize_graph(source, dest, target, reader=calib, cache_path=cache, method="minmax")
    return write


@pytest.fixture(params=["conv", "matmul"])
def seeded(request, tmp_path):
    path = tmp_path / f"{request.param}.onnx"
    onnx.save(_conv_model() if request.param == "conv" else _matmul_model(), str(path))
    return path


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def _biases(model: onnx.ModelProto, inits: dict) -> dict[str, np.ndarray]:
    """Each weighted layer's bias (zeros when it has none): Conv's third input, a MatMul's Add."""
    readers = {i: n for n in model.graph.node for i in n.input}
    found = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            found[node.name] = inits[node.input[2]] if len(node.input) > 2 else None
        elif node.op_type == "MatMul":
            add = readers.get(node.output[0])
            found[node.name] = inits[next(i for i in add.input if i in inits)] if add is not None and add.op_type == "Add" else None
    return found


def _direct_shift(float_model: onnx.ModelProto, node_name: str, weight_q: np.ndarray, input_q, batches: list[dict]) -> np.ndarray:
    """The layer's mean output shift measured by running it: mean of layer(x̂, W_q) − layer(x, W) over
    every output position, where x is the layer's input in the float graph and x̂ = DQ(Q(x)) with
    the Q/DQ graph's input scale (activations mode) or x itself (weights mode)."""
    node = next(n for n in float_model.graph.node if n.name == node_name)
    inits = {i.name: i for i in float_model.graph.initializer}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(float_model)
    exposed.graph.output.append(helper.make_empty_tensor_value_info(node.input[0]))
    inputs = [outputs[-1] for outputs in _run(exposed, batches)]
    rest = {"strides", "pads", "dilations", "group"}
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name in rest}
    layer_inits = [inits[node.input[1]], numpy_helper.from_array(weight_q, "w_q")]
    nodes = [helper.make_node(node.op_type, ["x", node.input[1]], ["float"], **attrs)]
    rounded_input = "x"
    if input_q is not None:
        scale, zero = input_q
        layer_inits += [numpy_helper.from_array(np.asarray(scale, np.float32), "s"), numpy_helper.from_array(np.asarray(zero), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]), helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"])]
        rounded_input = "xd"
    nodes += [helper.make_node(node.op_type, [rounded_input, "w_q"], ["rounded"], **attrs),
              helper.make_node("Sub", ["rounded", "float"], ["shift"])]
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("shift", TensorProto.FLOAT, None)], layer_inits)
    layer = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    layer.ir_version = 8
    session = _session(layer)
    shifts = np.concatenate([session.run(None, {"x": x})[0] for x in inputs]).astype(np.float64)
    if node.op_type == "Conv":
        return shifts.mean(axis=(0, 2, 3))
    return shifts.reshape(-1, shifts.shape[-1]).mean(axis=0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target_name", ["tensorrt", "onnxruntime"])
def test_each_bias_loses_the_shift_measured_by_running_the_layer(seeded, tmp_path, target_name, mode):
    """corrected bias − original bias = −(mean of layer(x̂, W_q) − layer(x, W)), for every layer,
    padding, stride, groups, dilation and MatMul tokens included."""
    calib = _batches(0, 6)
    write = _writer(TARGETS[target_name], calib, tmp_path / "cache.json")
    plain, corrected = tmp_path / "plain.onnx", tmp_path / "corrected.onnx"
    write(seeded, plain)
    write(seeded, corrected)
    float_model = onnx.load(str(seeded))
    layers = quantized_layers(onnx.load(str(plain)), float_model)
    record = correct_biases(seeded, corrected, write, calib, mode)
    conv = "conv" in seeded.name
    assert [layer.node for layer in layers] == (list(CONV_LAYERS) if conv else ["fc1", "fc2"])
    assert record.enabled and record.mode == mode and record.images == 6
    assert record.layers_skipped == ({} if conv else {"fc2": "no bias to fold into"})  # a MatMul without an Add
    assert record.layers_corrected == len(layers) - len(record.layers_skipped)
    before = _biases(float_model, _initializers(seeded))
    for layer in (layer for layer in layers if layer.node not in record.layers_skipped):
        expected = -_direct_shift(float_model, layer.node, layer.weight_q, layer.input_q if mode == "activations" else None, calib)
        old = before[layer.node] if before[layer.node] is not None else 0.0
        value, step = _corrected_bias(corrected, layer.node if conv else "fc1_bias")
        assert np.abs(expected).max() > 1e-3  # the seeded weights really do shift the mean
        # equal up to the final graph's own rounding of the bias (onnxruntime quantizes it)
        assert np.all(np.abs(value - old - expected) <= np.abs(expected) * 1e-3 + 1e-5 + np.asarray(step) / 2)


def _corrected_bias(path: Path, owner: str) -> tuple[np.ndarray, np.ndarray | float]:
    """The float bias the final Q/DQ graph gives `owner` (the Conv, or the Add after a MatMul) and its
    rounding step: a float initializer (step 0), or the quantized one dequantized as (q − zero)·scale."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    name = f"{owner}.bias_corrected"
    if name in inits:
        return inits[name].astype(np.float64), 0.0
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == f"{name}_quantized")
    scale = inits[dq.input[1]].astype(np.float64)
    zero = inits[dq.input[2]].astype(np.float64) if len(dq.input) > 2 and dq.input[2] else 0.0
    return (inits[dq.input[0]].astype(np.float64) - zero) * scale, scale


@pytest.mark.parametrize("target_name", ["tensorrt", "onnxruntime"])
@pytest.mark.parametrize("mode", MODES)
def test_bias_correction_reduces_the_per_channel_output_mean_error(tmp_path, target_name, mode):
    """The whole graph's output, float vs INT8, both run in onnxruntime: the per-channel mean error
    falls on the calibration images and on others (a property of the weights and the inputs)."""
    seeded = tmp_path / "float.onnx"
    onnx.save(_conv_model(), str(seeded))
    calib, held_out = _batches(0, 8), _batches(1, 8)
    write = _writer(TARGETS[target_name], calib, tmp_path / "cache.json")
    plain, corrected = tmp_path / "plain.onnx", tmp_path / "corrected.onnx"
    write(seeded, plain)
    write(seeded, corrected)
    correct_biases(seeded, corrected, write, calib, mode)
    for batches in (calib, held_out):
        exact = np.concatenate([o[0] for o in _run(seeded, batches)])
        error = {name: np.abs((np.concatenate([o[0] for o in _run(path, batches)]) - exact).mean(axis=(0, 2, 3)))
                 for name, path in (("before", plain), ("after", corrected))}
        assert error["before"].max() > 0.05
        assert error["after"].mean() < 0.5 * error["before"].mean() and error["after"].max() < error["before"].max()


def test_corrected_graph_differs_from_plain_only_in_biases(tmp_path):
    seeded = tmp_path / "float.onnx"
    onnx.save(_conv_model(), str(seeded))
    calib = _batches(0, 4)
    write = _writer(TARGETS["tensorrt"], calib, tmp_path / "cache.json")
    write(seeded, tmp_path / "plain.onnx")
    write(seeded, tmp_path / "corrected.onnx")
    correct_biases(seeded, tmp_path / "corrected.onnx", write, calib, skip=["dw"])
    plain, corrected = _initializers(tmp_path / "plain.onnx"), _initializers(tmp_path / "corrected.onnx")
    assert sorted(set(corrected) - set(plain)) == ["conv1.bias_corrected", "dilated.bias_corrected", "head.bias_corrected"]
    assert all(np.array_equal(corrected[k], plain[k]) for k in plain if k in corrected)  # weights, scales, dw's bias untouched


@pytest.mark.parametrize("target_name,reduce_range", [("tensorrt", False), ("onnxruntime", False), ("onnxruntime", True)])
def test_w_q_used_for_correction_is_what_onnxruntime_dequantizes(tmp_path, target_name, reduce_range):
    """W_q is read from the first Q/DQ graph; the final graph's DequantizeLinear, run by onnxruntime,
    gives exactly those values (correcting the bias must not move the weights' quantization)."""
    seeded = tmp_path / "float.onnx"
    onnx.save(_conv_model(), str(seeded))
    target = replace(TARGETS[target_name], reduce_range=reduce_range)
    calib = _batches(0, 4)
    write = _writer(target, calib, tmp_path / "cache.json")
    final = tmp_path / "final.onnx"
    write(seeded, final)
    used = {layer.node: layer.weight_q for layer in quantized_layers(onnx.load(str(final)), onnx.load(str(seeded)))}
    correct_biases(seeded, final, write, calib)
    model = onnx.load(str(final))
    weight_inputs = {n.name: n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    model.graph.output.extend(helper.make_empty_tensor_value_info(weight_inputs[name]) for name in used)
    dequantized = dict(zip(used, _run(model, calib[:1], [weight_inputs[name] for name in used])[0]))
    weights = _initializers(seeded)
    for (name, w_q), w in zip(used.items(), (weights["w1"], weights["w2"], weights["w3"], weights["w4"])):
        np.testing.assert_array_equal(dequantized[name], w_q)
        steps = np.abs(w).reshape(len(w), -1).max(axis=1) / (64 if reduce_range else 127)  # symmetric per channel
        q = w_q.reshape(len(w), -1) / steps[:, None]
        np.testing.assert_allclose(q, np.rint(q), atol=1e-3)  # on the per-channel grid the target asks for
        assert np.abs(w_q - w).max() <= steps.max() / 2 * 1.0001  # rounded to nearest, not clipped


# -- through `segdeploy build`: the option and the manifest record --------------------------------

def _build(cli, directory, calib_dir, *extra):
    return cli("build", str(directory), "-p", "int8", "--calib", str(calib_dir), "--calib-size", "8", *extra)


def _weighted_layers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return [n for n in model.graph.node if n.op_type == "Conv" and producers.get(n.input[1]) == "DequantizeLinear"]


def _fp32_bias(directory: Path, node_name: str) -> np.ndarray:
    model = onnx.load(str(directory / "model.onnx"))
    node = next(n for n in model.graph.node if n.name == node_name)
    return _initializers(directory / "model.onnx")[node.input[2]]


def test_build_corrects_every_quantized_layer_of_the_tensorrt_graph_and_records_it(cli, deploy, calib_dir):
    from segdeploy.manifest import Manifest

    directory = deploy("static")
    result = _build(cli, directory, calib_dir, "--backend", "tensorrt", "--graph-only", "--bias-correction",
                    "--bias-correction-threshold", "inf")
    assert result.returncode == 0, result.stderr
    entry = Manifest.load(directory).artifact("onnx-int8-trt")
    graph = onnx.load(str(directory / entry.file))
    layers = _weighted_layers(graph)
    record = entry.bias_correction
    assert record.enabled and record.mode == "weights" and record.images == 8 and record.threshold is None
    assert record.layers_corrected == len(layers) > 0
    assert entry.calibration.method == "mean-minmax" and entry.calibration.percentile is None  # TensorRT's default
    fp32_biases = set(_initializers(directory / "model.onnx"))
    # TensorRT keeps biases in float: every quantized Conv reads its own corrected float bias
    assert all(n.input[2] == f"{n.name}.bias_corrected" and n.input[2] not in fp32_biases for n in layers)
    assert f"biases corrected in {len(layers)} layers" in result.stdout


def test_by_default_a_layer_is_corrected_only_while_its_shift_is_under_twice_its_bias(cli, deploy, calib_dir):
    """NNCF's rule, read off the written graph: a corrected layer's bias moved by less than 2× the FP32
    bias in every channel (none of which is 0); a layer left alone reads its FP32 bias."""
    from segdeploy.manifest import Manifest

    directory = deploy("static")
    result = _build(cli, directory, calib_dir, "--backend", "tensorrt", "--graph-only", "--bias-correction")
    assert result.returncode == 0, result.stderr
    entry = Manifest.load(directory).artifact("onnx-int8-trt")
    graph = onnx.load(str(directory / entry.file))
    written = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    corrected = skipped = 0
    for node in _weighted_layers(graph):
        old, new = _fp32_bias(directory, node.name), written[node.input[2]]
        if node.input[2] == f"{node.name}.bias_corrected":
            assert np.all(old != 0) and np.max(np.abs((new - old) / old)) < 2
            corrected += 1
        else:
            np.testing.assert_array_equal(new, old)
            skipped += 1
    assert entry.bias_correction.threshold == 2.0
    assert (entry.bias_correction.layers_corrected, len(entry.bias_correction.layers_skipped)) == (corrected, skipped)
    assert corrected > 0 and skipped > 0
    assert f"biases corrected in {corrected} layers (shift < 2× bias; {skipped} left alone)" in result.stdout


@pytest.mark.parametrize("off", [["--no-bias-correction"], []])  # TensorRT's default: off (README, "INT8 accuracy")
def test_no_bias_correction_leaves_the_fp32_biases(cli, deploy, calib_dir, off):
    from segdeploy.manifest import Manifest

    directory = deploy("static")
    result = _build(cli, directory, calib_dir, "--backend", "tensorrt", "--graph-only", *off)
    assert result.returncode == 0, result.stderr
    entry = Manifest.load(directory).artifact("onnx-int8-trt")
    assert not entry.bias_correction.enabled and "biases corrected" not in result.stdout
    graph = onnx.load(str(directory / entry.file))
    written = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    layers = _weighted_layers(graph)
    assert layers and all(np.array_equal(written[n.input[2]], _fp32_bias(directory, n.name)) for n in layers)


def test_onnxruntime_graph_quantizes_the_corrected_bias(cli, deploy, calib_dir):
    """onnxruntime's INT32 biases are quantized from the corrected float bias (on by default for onnxruntime)."""
    from segdeploy.manifest import Manifest

    directory = deploy("static")
    assert _build(cli, directory, calib_dir).returncode == 0
    entry = Manifest.load(directory).artifact("onnx-int8-ort")
    assert entry.calibration.method == "percentile" and entry.calibration.percentile == 99.99
    graph = onnx.load(str(directory / entry.file))
    inits = {i.name: i for i in graph.graph.initializer}
    producers = {o: n for n in graph.graph.node for o in n.output}
    moved = 0
    for node in _weighted_layers(graph):
        dq = producers[node.input[2]]
        assert inits[dq.input[0]].data_type == TensorProto.INT32  # still an INT32 bias for QLinearConv
        step = numpy_helper.to_array(inits[dq.input[1]])
        value = numpy_helper.to_array(inits[dq.input[0]]) * step
        moved += int(np.any(np.abs(value - _fp32_bias(directory, node.name)) > step))  # more than bias rounding alone
    record = entry.bias_correction
    assert record.layers_corrected + len(record.layers_skipped) == len(_weighted_layers(graph))
    assert moved == record.layers_corrected > 0


def test_cli_and_pipeline_defaults_are_the_measured_ones():
    """`build`'s option defaults and the pipeline's are QuantOptions' (the README's measured defaults)."""
    import inspect

    from segdeploy.cli.build import build_command
    from segdeploy.pipeline_config import PipelineConfig

    from segdeploy.precision.graphs import QuantOptions

    options = inspect.signature(build_command).parameters
    assert all(options[name].default is None
               for name in ("calib_method", "percentile", "bias_correction", "bias_correction_threshold", "weight_rounding"))
    config = PipelineConfig(out=None, models=[])
    assert config.calib_method is None and config.bias_correction is None and config.weight_rounding is None
    assert config.bias_correction_threshold is None
    assert QuantOptions().bias_threshold() == 2.0 and QuantOptions(bias_correction_threshold=float("inf")).bias_threshold() is None
    defaults = QuantOptions()  # what None means, per target
    assert (defaults.method_for("onnxruntime"), defaults.percentile_for("onnxruntime"), defaults.bias_correction_for("onnxruntime")) == (
        "percentile", 99.99, True)
    assert (defaults.method_for("tensorrt"), defaults.bias_correction_for("tensorrt")) == ("mean-minmax", False)
    assert defaults.weight_rounding_for("onnxruntime") == defaults.weight_rounding_for("tensorrt") == "gptq"
    assert QuantOptions(weight_rounding="nearest").weight_rounding_for("tensorrt") == "nearest"
    explicit = QuantOptions(method="entropy", percentile=99.9, bias_correction=False)
    assert (explicit.method_for("onnxruntime"), explicit.percentile_for("tensorrt"), explicit.bias_correction_for("onnxruntime")) == (
        "entropy", 99.9, False)


def _corrected_conv_model(tmp_path, target_name: str):
    """`_conv_model` saved, and its Q/DQ graph for `target_name` with corrected biases: (float path, graph path)."""
    seeded = tmp_path / "float.onnx"
    onnx.save(_conv_model(), str(seeded))
    calib = _batches(0, 4)
    write = _writer(TARGETS[target_name], calib, tmp_path / "cache.json")
    graph = tmp_path / "corrected.onnx"
    write(seeded, graph)
    correct_biases(seeded, graph, write, calib)
    return seeded, graph


@pytest.mark.parametrize("target_name", ["tensorrt", "onnxruntime"])
def test_a_layer_kept_in_float_gets_the_fp32_bias_back(tmp_path, target_name):
    """A budget search keeps layers float in a bias-corrected graph (`qdq_edit.keep_float`): such a
    layer runs the FP32 graph's weights and bias, the others keep their corrected biases."""
    from segdeploy.precision.qdq_edit import keep_float

    seeded, graph = _corrected_conv_model(tmp_path, target_name)
    mixed = keep_float(onnx.load(str(graph)), onnx.load(str(seeded)), ["dw"])
    inits = {i.name: numpy_helper.to_array(i) for i in mixed.graph.initializer}
    producers = {o: n.op_type for n in mixed.graph.node for o in n.output}
    dw = next(n for n in mixed.graph.node if n.name == "dw")
    fp32 = _initializers(seeded)
    assert all(producers.get(i) != "DequantizeLinear" for i in dw.input)
    np.testing.assert_array_equal(inits[dw.input[1]], fp32["w2"])
    np.testing.assert_array_equal(inits[dw.input[2]], fp32["b2"])
    conv1 = next(n for n in mixed.graph.node if n.name == "conv1")
    assert "bias_corrected" in conv1.input[2]  # directly (TensorRT) or through its INT32 DequantizeLinear


@pytest.mark.parametrize("target_name", ["tensorrt", "onnxruntime"])
def test_a_layer_kept_in_float_drops_the_bias_correction_added(tmp_path, target_name):
    """`head` has no bias in FP32; bias correction adds one (an INT32 DequantizeLinear in the onnxruntime
    graph, a float initializer in TensorRT's). Kept float, it runs as in FP32: no bias at all."""
    from segdeploy.precision.qdq_edit import keep_float

    seeded, graph = _corrected_conv_model(tmp_path, target_name)
    assert len(next(n for n in onnx.load(str(graph)).graph.node if n.name == "head").input) == 3  # added
    mixed = keep_float(onnx.load(str(graph)), onnx.load(str(seeded)), ["head"])
    head = next(n for n in mixed.graph.node if n.name == "head")
    assert len(head.input) == 2
    np.testing.assert_array_equal({i.name: numpy_helper.to_array(i) for i in mixed.graph.initializer}[head.input[1]],
                                  _initializers(seeded)["w4"])
    ort.InferenceSession(mixed.SerializeToString(), providers=["CPUExecutionProvider"])  # still a valid graph


def _written_tensorrt_graph(tmp_path: Path):
    """The seeded conv graph, 4 calibration batches, the TensorRT writer and its Q/DQ graph written."""
    seeded = tmp_path / "float.onnx"
    onnx.save(_conv_model(), str(seeded))
    calib = _batches(0, 4)
    write = _writer(TARGETS["tensorrt"], calib, tmp_path / "cache.json")
    written = tmp_path / "written.onnx"
    write(seeded, written)
    return seeded, calib, write, written


def test_a_threshold_corrects_only_layers_whose_shift_is_small_against_their_bias(tmp_path):
    """NNCF's rule (`threshold`): a layer is corrected only when max |shift / bias| < threshold and no
    channel's bias is 0; the shifts are measured by running each layer, not by the module."""
    seeded, calib, write, written = _written_tensorrt_graph(tmp_path)
    float_model = onnx.load(str(seeded))
    before = _biases(float_model, _initializers(seeded))
    magnitude = {layer.node: float(np.max(np.abs(_direct_shift(float_model, layer.node, layer.weight_q, None, calib) / before[layer.node])))
                 for layer in quantized_layers(onnx.load(str(written)), float_model) if before[layer.node] is not None}
    ordered = sorted(magnitude.values())
    threshold = float(np.sqrt(ordered[0] * ordered[-1]))  # some layers on each side
    small = {node for node, value in magnitude.items() if value < threshold}
    assert small and small != set(magnitude)
    record = correct_biases(seeded, written, write, calib, threshold=threshold)
    assert set(record.layers_skipped) == (set(magnitude) - small) | {"head"}  # head has no bias: none is added
    assert record.layers_corrected == len(small)
    after = _initializers(written)
    assert {name for name in after if name.endswith(".bias_corrected")} == {f"{node}.bias_corrected" for node in small}
    corrected = {n.name: n for n in onnx.load(str(written)).graph.node}
    for node in set(magnitude) - small:  # left alone: the float bias as it was
        np.testing.assert_array_equal(after[corrected[node].input[2]], before[node])
    assert len(corrected["head"].input) == 2


def test_nothing_within_the_threshold_leaves_the_written_graph_without_quantizing_it_again(tmp_path):
    """Every layer left alone: the Q/DQ graph on disk already is the answer; no second quantization."""
    seeded, calib, write, written = _written_tensorrt_graph(tmp_path)
    before = written.read_bytes()
    calls = []
    record = correct_biases(seeded, written, lambda source, dest: calls.append(source) or write(source, dest), calib,
                            threshold=1e-9)
    assert record.layers_corrected == 0 and set(record.layers_skipped) == set(CONV_LAYERS)
    assert calls == [] and written.read_bytes() == before
