"""FP16 and INT8 (Q/DQ) precision graphs, checked by reading the graphs they produce."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from segdeploy.backends.onnxruntime import OrtRunner
from segdeploy.build import BuildOptions, build_artifacts
from segdeploy.precision.graphs import QuantOptions
from segdeploy.errors import UsageError
from segdeploy.precision.fp16 import convert_fp16, fp16_block_list
from segdeploy.precision.quantize import TARGETS, graph_opset, prepare_graph, quantize_graph
from segdeploy.precision.calibration import reader_for, select_images
from segdeploy.manifest import Manifest
from segdeploy.manifest.names import INT8_GRAPHS

from tests.helpers import export_unet, fails, snapshot


def _io_types(model):
    elem = lambda v: v.type.tensor_type.elem_type  # noqa: E731
    return [elem(v) for v in model.graph.input] + [elem(v) for v in model.graph.output]


def _resize_model():
    """x → Conv → Resize(×2, linear) → logits; Resize must stay FP32."""
    from onnx import TensorProto, helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    roi = numpy_helper.from_array(np.array([], np.float32), "roi")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Resize", ["c", "roi", "scales"], ["y"], mode="linear", name="up"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 24])], [w, scales, roi])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def test_fp16_keeps_float32_io_and_resize_in_fp32():
    converted = convert_fp16(_resize_model(), fp16_block_list())
    assert _io_types(converted) == [onnx.TensorProto.FLOAT] * 2
    weights = {i.name: i.data_type for i in converted.graph.initializer}
    assert weights["w"] == onnx.TensorProto.FLOAT16
    # the Resize input must be float32: a Cast to FLOAT feeds it
    casts_to_float = {n.output[0] for n in converted.graph.node if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT}
    resize = next(n for n in converted.graph.node if n.op_type == "Resize")
    assert resize.input[0] in casts_to_float


def test_fp16_block_list_extends_the_converter_defaults():
    ops = fp16_block_list(["Sigmoid"])
    assert {"Resize", "Sigmoid", "TopK"} <= set(ops)


@pytest.fixture
def prepared(deploy, tmp_path):
    directory = deploy("static")
    prepare_graph(directory / "model.onnx", tmp_path / "prepared.onnx")
    return directory, tmp_path / "prepared.onnx"


def _dequant_params(model):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [(n, inits.get(n.input[1]), inits.get(n.input[2]) if len(n.input) > 2 else None)
            for n in model.graph.node if n.op_type == "DequantizeLinear"], inits


def _quantize(prepared, calib_dir, target, tmp_path, cache=None, **kw):
    directory, graph = prepared
    reader = reader_for(Manifest.load(directory), select_images(calib_dir, 6))
    out = tmp_path / f"{target}.onnx"
    reused = quantize_graph(graph, out, TARGETS[target], reader=reader, cache_path=cache or tmp_path / "cache.json",
                            method=kw.pop("method", "minmax"), **kw)
    return onnx.load(str(out)), reused


def test_prepared_graph_is_opset_13(prepared):
    assert graph_opset(onnx.load(str(prepared[1]))) >= 13


def test_tensorrt_target_is_symmetric_per_channel_float_bias(prepared, calib_dir, tmp_path):
    model, _ = _quantize(prepared, calib_dir, "tensorrt", tmp_path)
    dequants, inits = _dequant_params(model)
    assert dequants, "no Q/DQ inserted"
    for node, scale, zero_point in dequants:
        assert zero_point is not None and zero_point.dtype == np.int8 and not zero_point.any(), node.name
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    per_channel = [scale for node, scale, _ in dequants if node.output[0] in conv_weights]
    assert per_channel and all(scale.ndim == 1 and scale.size > 1 for scale in per_channel)
    assert not [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT32]  # no INT32 bias
    assert graph_opset(model) >= 13


def test_onnxruntime_target_uses_u8_activations(prepared, calib_dir, tmp_path):
    model, _ = _quantize(prepared, calib_dir, "onnxruntime", tmp_path)
    dequants, _ = _dequant_params(model)
    assert any(zp is not None and zp.dtype == np.uint8 for _, _, zp in dequants)


def test_cached_ranges_are_reused_without_reading_images(prepared, calib_dir, tmp_path):
    cache = tmp_path / "ranges.json"
    _, reused = _quantize(prepared, calib_dir, "tensorrt", tmp_path, cache=cache)
    assert not reused and cache.is_file()

    class Exploding:
        def __len__(self):
            return 6

        def get_next(self):
            raise AssertionError("calibration images read although ranges were cached")

    directory, graph = prepared
    reused = quantize_graph(graph, tmp_path / "again.onnx", TARGETS["onnxruntime"], reader=Exploding(),
                            cache_path=cache, method="minmax")
    assert reused and (tmp_path / "again.onnx").is_file()


def test_excluded_ops_stay_float(prepared, calib_dir, tmp_path):
    model, _ = _quantize(prepared, calib_dir, "tensorrt", tmp_path, exclude_ops=["ConvTranspose"])
    produced_by_dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    transposed = [n for n in model.graph.node if n.op_type == "ConvTranspose"]
    # weights stay float initializers (its activation input may still come through a DQ shared
    # with the quantized layer before it; the layer itself computes in float)
    float_weights = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert transposed and all(n.input[1] in float_weights for n in transposed)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(n.input[1] in produced_by_dq for n in convs)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods_produce_runnable_graphs(prepared, calib_dir, tmp_path, method):
    model, _ = _quantize(prepared, calib_dir, "onnxruntime", tmp_path, method=method, percentile=99.9)
    path = tmp_path / "q.onnx"
    onnx.save(model, str(path))
    with OrtRunner(path) as runner:
        out = runner.infer({"input": np.zeros((1, 3, 96, 160), np.float32)})
    assert out["logits"].shape == (1, 5, 96, 160)


def test_unknown_method_is_a_usage_error(prepared, calib_dir, tmp_path):
    with pytest.raises(UsageError, match="calib-method"):
        _quantize(prepared, calib_dir, "tensorrt", tmp_path, method="magic")


def test_any_list_of_named_batches_calibrates(prepared, tmp_path):
    _, graph = prepared
    rng = np.random.default_rng(1)
    batches = [{"input": rng.standard_normal((1, 3, 96, 160)).astype(np.float32)} for _ in range(3)]
    reused = quantize_graph(graph, tmp_path / "q.onnx", TARGETS["tensorrt"], reader=batches,
                            cache_path=tmp_path / "c.json", method="minmax")
    assert not reused and (tmp_path / "c.json").is_file()
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(tmp_path / "q.onnx")).graph.node)


# -- where Q/DQ goes: one range cache for both targets; nothing quantizable is one line ----------------

PLACEMENT_MODELS = Path(__file__).parents[1] / "placement_models.py"


def _export_placement_model(factory: str, out: Path) -> Path:
    from segdeploy.export import ExportRequest, export_model

    export_model(ExportRequest(source=f"{PLACEMENT_MODELS}:{factory}", out_dir=out, num_classes=3, input_shape=(1, 3, 64, 96)))
    return out


@pytest.fixture(scope="module")
def noweights(tmp_path_factory):
    return _export_placement_model("NoWeights", tmp_path_factory.mktemp("noweights") / "deploy")


@pytest.mark.parametrize("backend", [["--backend", "onnxruntime"], ["--backend", "tensorrt", "--graph-only"]])
def test_nothing_quantizable_is_one_clear_line(noweights, calib_dir, backend):
    before = snapshot(noweights)
    fails("build", noweights, "-p", "int8", "--calib", calib_dir, "--calib-size", "8", *backend,
          contains=("nothing to quantize to INT8", "Conv", "fp16"), exit_code=1)
    assert snapshot(noweights) == before  # no graph, no calibration cache, manifest untouched


def test_excluding_every_weighted_layer_says_so(tmp_path, calib_dir):
    directory = export_unet(tmp_path / "unet")
    fails("build", directory, "-p", "int8", "--calib", calib_dir, "--calib-size", "2", "--exclude-ops", "Conv,ConvTranspose",
          contains="left after --exclude-nodes/--exclude-ops", exit_code=1)
    assert not list(directory.glob("model.int8*")) and not list(directory.glob("calib-cache*"))


def test_one_range_cache_serves_both_targets(tmp_path, calib_dir):
    """The TensorRT placement quantizes fewer tensors but calibrates the same ones: an onnxruntime
    graph made from ranges a TensorRT build cached is the graph a fresh onnxruntime build makes
    (given one method and percentile for both: by default each target has its own, see graphs.DEFAULT_METHOD)."""
    first = _export_placement_model("Gated", tmp_path / "first")
    alone = tmp_path / "alone"
    shutil.copytree(first, alone)
    quant = QuantOptions(method="percentile", percentile=99.99)
    options = BuildOptions(calib=calib_dir, calib_size=4, quant=quant)
    build_artifacts(first, ["int8"], "tensorrt", BuildOptions(calib=calib_dir, calib_size=4, graph_only=True, quant=quant))
    build_artifacts(first, ["int8"], "onnxruntime", options)
    ort_graph = INT8_GRAPHS["onnxruntime"]
    assert Manifest.load(first).artifact(ort_graph.name).calibration.reused_cache
    build_artifacts(alone, ["int8"], "onnxruntime", options)
    assert not Manifest.load(alone).artifact(ort_graph.name).calibration.reused_cache
    assert (first / ort_graph.file).read_bytes() == (alone / ort_graph.file).read_bytes()
