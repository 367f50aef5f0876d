"""GPTQ weight rounding: each Conv's INT8 integers chosen for its output, scales and graph unchanged.

Judged independently of the module's arithmetic: a layer's output error is measured by running
the layer in onnxruntime with its float weights and with the weights the final graph's
DequantizeLinear kernels produce, on the layer's own float inputs (exposed from the float graph),
on images calibration did not see; patches are checked against onnxruntime's Conv.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from segdeploy.precision import rounding
from segdeploy.precision.bias_correction import correct_biases, quantized_layers
from segdeploy.precision.quantize import TARGETS, quantize_graph

SHAPE = (1, 3, 30, 44)  # non-square
LAYERS = ("stem", "dw", "dilated", "head")


def _smooth_images(seed: int, count: int) -> list[dict]:
    """Image-like inputs: smooth (neighbouring pixels alike) and colour channels correlated, with a
    positive mean — the inputs whose correlations make nearest rounding's errors add up."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        base = rng.normal(0, 1, (1, 1, SHAPE[2] // 6 + 2, SHAPE[3] // 6 + 2))
        smooth = np.kron(base, np.ones((1, 1, 6, 6)))[:, :, : SHAPE[2], : SHAPE[3]]
        colour = smooth * np.array([1.0, 0.9, 0.8]).reshape(1, 3, 1, 1) + rng.normal(0, 0.05, SHAPE) + 0.4
        batches.append({"x": colour.astype(np.float32)})
    return batches


def _model() -> onnx.ModelProto:
    """Stem 3×3 stride 2 (asymmetric pads) → Relu → depthwise 3×3 → Relu → dilated 3×3 (dilation 2)
    → Relu → 1×1 head; weights seeded with a large spread so INT8 steps are coarse."""
    rng = np.random.default_rng(3)
    def weight(shape):
        return (rng.normal(0, 0.3, shape) * rng.choice([0.2, 1.0, 3.0], shape)).astype(np.float32)
    inits = [numpy_helper.from_array(weight((12, 3, 3, 3)), "w1"), numpy_helper.from_array(np.full(12, 0.1, np.float32), "b1"),
             numpy_helper.from_array(weight((12, 1, 3, 3)), "w2"), numpy_helper.from_array(np.zeros(12, np.float32), "b2"),
             numpy_helper.from_array(weight((10, 12, 3, 3)), "w3"), numpy_helper.from_array(np.zeros(10, np.float32), "b3"),
             numpy_helper.from_array(weight((5, 10, 1, 1)), "w4")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 0, 1, 2], strides=[2, 2], name="stem"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=12, name="dw"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], pads=[2, 2, 2, 2], dilations=[2, 2], name="dilated"),
             helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
             helper.make_node("Conv", ["r3", "w4"], ["y"], name="head")]
    graph = helper.make_graph(nodes, "seeded", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model),
                                providers=["CPUExecutionProvider"])


def _writer(target, calib, cache):
    def write(source, dest):
        quantize_graph(source, dest, target, reader=calib, cache_path=cache, method="minmax")
    return write


@pytest.fixture
def graphs(tmp_path):
    source = tmp_path / "float.onnx"
    onnx.save(_model(), str(source))
    return source, _smooth_images(0, 6)


def _dequantized_weights(path: Path) -> dict[str, np.ndarray]:
    """Each Conv's weight as onnxruntime's DequantizeLinear computes it from the graph at `path`."""
    model = onnx.load(str(path))
    producers = {o: n for n in model.graph.node for o in n.output}
    wanted = {n.name: n.input[1] for n in model.graph.node if n.op_type == "Conv" and producers.get(n.input[1]) is not None
              and producers[n.input[1]].op_type == "DequantizeLinear"}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    exposed.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in wanted.values())
    values = _session(exposed).run(list(wanted.values()), _smooth_images(99, 1)[0])
    return dict(zip(wanted, values))


def _layer_errors(source: Path, weights: dict[str, np.ndarray], batches: list[dict]) -> dict[str, float]:
    """Mean squared output error of each Conv run with `weights` instead of its float weights, on the
    layer's float inputs (the float graph's tensors, exposed)."""
    model = onnx.load(str(source))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    exposed.graph.output.extend(helper.make_empty_tensor_value_info(nodes[n].input[0]) for n in weights)
    session = _session(exposed)
    names = [nodes[n].input[0] for n in weights]
    errors = dict.fromkeys(weights, 0.0)
    for batch in batches:
        inputs = dict(zip(names, session.run(names, batch)))
        for name, w in weights.items():
            node = nodes[name]
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            float_out = _conv(inputs[node.input[0]], inits[node.input[1]], attrs)
            errors[name] += float(np.mean((_conv(inputs[node.input[0]], w, attrs) - float_out) ** 2)) / len(batches)
    return errors


def _conv(x: np.ndarray, w: np.ndarray, attrs: dict) -> np.ndarray:
    """onnxruntime's Conv (no bias) on x with weights w."""
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], **attrs)], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return _session(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("target_name", ["tensorrt", "onnxruntime"])
def test_gptq_lowers_every_layers_output_error_on_unseen_images(graphs, tmp_path, target_name):
    source, calib = graphs
    write = _writer(TARGETS[target_name], calib, tmp_path / "cache.json")
    nearest, gptq = tmp_path / "nearest.onnx", tmp_path / "gptq.onnx"
    write(source, nearest)
    write(source, gptq)
    rounded = rounding.round_weights(source, gptq, calib)
    assert sorted(rounded) == sorted(LAYERS)
    assert rounding.apply(gptq, rounded) == len(LAYERS)
    unseen = _smooth_images(1, 4)
    before = _layer_errors(source, _dequantized_weights(nearest), unseen)
    after = _layer_errors(source, _dequantized_weights(gptq), unseen)
    for layer in LAYERS:
        assert rounded[layer].changed > 0
        assert after[layer] < 0.9 * before[layer], (layer, before[layer], after[layer])
    # the whole graph's output follows: closer to the float graph's than nearest rounding's
    reference = [_session(source).run(None, b)[0] for b in unseen]
    def error(path):
        return np.mean([np.mean((_session(path).run(None, b)[0] - r) ** 2) for b, r in zip(unseen, reference)])
    assert error(gptq) < error(nearest)


def test_only_the_integers_change(graphs, tmp_path):
    """Same nodes, same scales and zero points; integers within the symmetric INT8 range, each within
    a few steps of nearest rounding (GPTQ moves errors, it does not re-scale)."""
    source, calib = graphs
    write = _writer(TARGETS["tensorrt"], calib, tmp_path / "cache.json")
    nearest, gptq = tmp_path / "nearest.onnx", tmp_path / "gptq.onnx"
    write(source, nearest)
    write(source, gptq)
    rounding.apply(gptq, rounding.round_weights(source, gptq, calib))
    a, b = onnx.load(str(nearest)), onnx.load(str(gptq))
    assert [(n.op_type, list(n.input)) for n in a.graph.node] == [(n.op_type, list(n.input)) for n in b.graph.node]
    ia, ib = ({i.name: numpy_helper.to_array(i) for i in m.graph.initializer} for m in (a, b))
    changed = [name for name in ia if not np.array_equal(ia[name], ib[name])]
    assert changed and all(ib[name].dtype == np.int8 for name in changed)
    for name in changed:
        assert ib[name].min() >= -127 and ib[name].max() <= 127
        assert np.abs(ib[name].astype(int) - ia[name].astype(int)).max() <= 8


def test_patches_reproduce_the_convolution(graphs):
    """Σ patch · weight at the sampled positions equals onnxruntime's Conv there (padding, stride,
    groups and dilation included), so H is the second moment of what the layer really reads."""
    source, calib = graphs
    model = onnx.load(str(source))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    nodes = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    exposed.graph.output.extend(helper.make_empty_tensor_value_info(n.input[0]) for n in nodes.values())
    values = dict(zip([n.input[0] for n in nodes.values()], _session(exposed).run([n.input[0] for n in nodes.values()], calib[0])))
    for name, node in nodes.items():
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = inits[node.input[1]]
        layer = rounding.Layer(node=name, op="Conv", input=node.input[0], weight=w, weight_q=w, input_q=None,
                               conv={"strides": attrs.get("strides"), "dilations": attrs.get("dilations"),
                                     "pads": attrs.get("pads"), "group": int(attrs.get("group", 1)), "auto_pad": "NOTSET"})
        x = values[node.input[0]][0]
        expected = _conv(x[None], w, attrs)[0]  # O × Ho × Wo
        rng = np.random.default_rng(0)
        patches = rounding._sampled_patches(x, layer, rng)  # P × G × K
        group = layer.conv["group"]
        per_group = w.shape[0] // group
        got = np.einsum("pgk,gok->pgo", patches, w.reshape(group, per_group, -1)).reshape(len(patches), -1)
        total = expected.shape[1] * expected.shape[2]
        chosen = np.random.default_rng(0).choice(total, rounding.POSITIONS, replace=False) if total > rounding.POSITIONS else np.arange(total)
        np.testing.assert_allclose(got, expected.reshape(expected.shape[0], -1)[:, chosen].T, rtol=1e-4, atol=1e-4)


def test_bias_correction_keeps_the_rounded_integers(graphs, tmp_path):
    """Bias correction re-quantizes from the corrected float graph; the writer that re-applies the
    rounding keeps GPTQ's integers, and the biases are corrected for them (read from the graph)."""
    source, calib = graphs
    write = _writer(TARGETS["onnxruntime"], calib, tmp_path / "cache.json")
    out = tmp_path / "gptq.onnx"
    write(source, out)
    rounded = rounding.round_weights(source, out, calib)
    rounding.apply(out, rounded)
    gptq_weights = _dequantized_weights(out)

    def write_rounded(src, dest):
        write(src, dest)
        rounding.apply(dest, rounded)

    record = correct_biases(source, out, write_rounded, calib)
    assert record.layers_corrected == len(LAYERS)
    final = _dequantized_weights(out)
    for layer in LAYERS:
        np.testing.assert_array_equal(final[layer], gptq_weights[layer])
    layers = {layer.node: layer for layer in quantized_layers(onnx.load(str(out)), onnx.load(str(source)))}
    assert all(np.allclose(layers[n].weight_q, gptq_weights[n]) for n in LAYERS)


def test_apply_leaves_a_layer_with_another_scale_alone(graphs, tmp_path):
    """Integers rounded for one scale are never written under another (e.g. a graph calibrated anew)."""
    source, calib = graphs
    write = _writer(TARGETS["tensorrt"], calib, tmp_path / "cache.json")
    out = tmp_path / "gptq.onnx"
    write(source, out)
    rounded = rounding.round_weights(source, out, calib)
    stem = rounded["stem"]
    rounded["stem"] = rounding.Rounded(stem.node, stem.values, stem.scale * 2, stem.changed)
    assert rounding.apply(out, rounded) == len(LAYERS) - 1


# -- through `segdeploy build`: the option, the default and the manifest record -------------------

def _int8_weights(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer if i.data_type == TensorProto.INT8}


@pytest.mark.parametrize("backend", [["--backend", "tensorrt", "--graph-only"], []])
def test_build_rounds_with_gptq_by_default_and_nearest_on_request(cli, deploy, calib_dir, backend):
    from segdeploy.manifest import Manifest

    directory = deploy("static")
    artifact = "onnx-int8-trt" if backend else "onnx-int8-ort"
    common = ("build", str(directory), "-p", "int8", "--calib", str(calib_dir), "--calib-size", "8", "--no-bias-correction", *backend)
    nearest = cli(*common, "--weight-rounding", "nearest")
    assert nearest.returncode == 0, nearest.stderr
    entry = Manifest.load(directory).artifact(artifact)
    assert entry.settings["weight_rounding"] == {"method": "nearest"}
    plain = _int8_weights(directory / entry.file)
    default = cli(*common)
    assert default.returncode == 0, default.stderr
    entry = Manifest.load(directory).artifact(artifact)
    record = entry.settings["weight_rounding"]
    assert record["method"] == "gptq" and record["images"] == 8 and record["layers"] > 0
    rounded = _int8_weights(directory / entry.file)
    assert rounded.keys() == plain.keys()
    changed = sum(int(np.count_nonzero(rounded[k] != plain[k])) for k in plain)
    assert changed == record["changed_weights"] > 0
    assert f"weights GPTQ-rounded in {record['layers']} layers" in default.stdout
    assert "weights GPTQ-rounded" not in nearest.stdout


def test_a_bad_rounding_name_is_one_line(cli, deploy, calib_dir):
    directory = deploy("static")
    result = cli("build", str(directory), "-p", "int8", "--calib", str(calib_dir), "--weight-rounding", "stochastic")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "stochastic" in result.stderr and not (directory / "model.int8-ort.onnx").exists()


def test_pipeline_config_reads_weight_rounding(tmp_path):
    from segdeploy.errors import UsageError
    from segdeploy.pipeline_config import load_config

    def config(value):
        path = tmp_path / "pipeline.yaml"
        path.write_text(f"out: deploy\nmodels: [{{name: demo, source: unet}}]\nweight_rounding: {value}\n")
        return load_config(path)

    assert config("nearest").weight_rounding == "nearest"
    with pytest.raises(UsageError, match="weight_rounding"):
        config("stochastic")


def test_layers_wider_than_the_cap_keep_nearest_rounding(graphs, tmp_path, monkeypatch):
    """A layer whose H would cost too much (more than MAX_COLUMNS inputs) keeps onnxruntime's
    integers, and is named for the record; the others are rounded as usual."""
    source, calib = graphs
    monkeypatch.setattr(rounding, "MAX_COLUMNS", 100)  # stem 27, dw 9, dilated 12·9 = 108, head 10
    write = _writer(TARGETS["tensorrt"], calib, tmp_path / "cache.json")
    out = tmp_path / "gptq.onnx"
    write(source, out)
    before = _dequantized_weights(out)
    kept: list[str] = []
    rounded = rounding.round_weights(source, out, calib, kept_nearest=kept)
    rounding.apply(out, rounded)
    assert kept == ["dilated"] and sorted(rounded) == ["dw", "head", "stem"]
    after = _dequantized_weights(out)
    np.testing.assert_array_equal(after["dilated"], before["dilated"])
    assert not np.array_equal(after["stem"], before["stem"])
