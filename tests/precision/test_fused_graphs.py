"""FP16 / INT8 graphs and TensorRT-RTX engines from fused exports (uint8 NHWC in, int32 class map out)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from segdeploy.build import BuildOptions, build_artifacts
from segdeploy.export import ExportRequest, export_model
from segdeploy.export.fused import Fusion
from segdeploy.images import read_rgb
from segdeploy.manifest import Manifest
from segdeploy.precision.calibration import reader_for, select_images
from segdeploy.precision.fused_nodes import fused_nodes
from segdeploy.preprocess import Preprocess

from tests.helpers import TINY_SHAPE, requires_tensorrt

FUSIONS = {"pre": Fusion(True, False), "argmax": Fusion(False, True), "both": Fusion(True, True)}
H, W = TINY_SHAPE[2:]


@pytest.fixture(scope="module")
def fused_exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("fused-build")
    cache = {}

    def get(key: str, dynamic: frozenset = frozenset()):
        if (key, dynamic) not in cache:
            out = root / f"{key}-{'-'.join(sorted(dynamic)) or 'static'}"
            export_model(ExportRequest(source="unet", out_dir=out, model_kwargs={"width": 0.125}, num_classes=5,
                                       input_shape=TINY_SHAPE, dynamic=set(dynamic), fusion=FUSIONS[key]))
            cache[(key, dynamic)] = out
        return cache[(key, dynamic)]

    return get


@pytest.fixture
def fused_deploy(fused_exports, tmp_path):
    import shutil

    def make(key: str, dynamic: frozenset = frozenset()):
        target = tmp_path / key
        shutil.copytree(fused_exports(key, dynamic), target)
        return target

    return make


def _io_types(path):
    graph = onnx.load(str(path))
    return graph.graph.input[0].type.tensor_type.elem_type, graph.graph.output[0].type.tensor_type.elem_type


def test_calibration_reader_feeds_uint8_canvases(fused_deploy, calib_dir):
    directory = fused_deploy("both")
    calib = select_images(calib_dir, 3)
    batch = reader_for(Manifest.load(directory), calib).get_next()["input"]
    assert batch.dtype == np.uint8 and batch.shape == (1, H, W, 3)
    canvas, _ = Preprocess().resize_image(read_rgb(calib.images[0]), (H, W))
    assert np.array_equal(batch[0], canvas)


@pytest.mark.parametrize("key", ["pre", "both"])
def test_fp16_and_int8_keep_fused_io_and_float_preprocessing(fused_deploy, calib_dir, key):
    directory = fused_deploy(key)
    result = build_artifacts(directory, ["fp16", "int8"], "onnxruntime", BuildOptions(calib=calib_dir, calib_size=6))
    manifest = Manifest.load(directory)
    want = (onnx.TensorProto.UINT8, onnx.TensorProto.INT32 if key == "both" else onnx.TensorProto.FLOAT)
    for name in ("onnx-fp16", "onnx-int8-ort"):
        assert _io_types(manifest.path_of(name)) == want, name
        parity = manifest.artifact(name).parity
        assert parity.batches >= 1 and parity.min_argmax_agreement >= 0.9, (name, parity)
        assert (parity.compared is not None) == (key == "both")
    assert {a["name"] for a in result.artifacts} >= {"onnx-fp16", "onnx-int8-ort"}
    int8 = onnx.load(str(manifest.path_of("onnx-int8-ort")))
    quantized = {n.input[0] for n in int8.graph.node if n.op_type == "QuantizeLinear"}
    produced_by_fused = {o for n in int8.graph.node if n.name in fused_nodes(int8) for o in n.output}
    # The pixel normalisation stays float; its result (the first Conv's input) is what gets quantized.
    by_output = {o: n for n in int8.graph.node for o in n.output}
    assert quantized & produced_by_fused == {next(iter(quantized & produced_by_fused))}
    assert by_output[next(iter(quantized & produced_by_fused))].op_type == "Div"
    fp16 = onnx.load(str(manifest.path_of("onnx-fp16")))
    div = next(n for n in fp16.graph.node if n.op_type == "Div")
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
               for i in fp16.graph.value_info if i.name in div.output)


def test_fused_nodes_found_structurally(fused_exports):
    ops = {}
    for key in FUSIONS:
        graph = onnx.load(str(fused_exports(key) / "model.onnx"))
        types = {n.name: n.op_type for n in graph.graph.node}
        ops[key] = sorted(types[n] for n in fused_nodes(graph))
    assert ops["pre"] == sorted(["Cast", "Transpose", "Sub", "Div"])
    assert ops["argmax"] == ["ArgMax", "Cast"]
    assert ops["both"] == sorted(ops["pre"] + ops["argmax"])


@pytest.mark.trt
@requires_tensorrt
@pytest.mark.parametrize("key", list(FUSIONS))
def test_tensorrt_rtx_builds_fused_fp32_engine(fused_deploy, key):
    directory = fused_deploy(key)
    build_artifacts(directory, ["fp32"], "tensorrt", BuildOptions())
    entry = Manifest.load(directory).artifact("trt-fp32")
    inputs, outputs = entry.inputs, entry.outputs
    fusion = FUSIONS[key]
    assert inputs[0].shape == ([1, H, W, 3] if fusion.preprocess else [1, 3, H, W])
    assert inputs[0].dtype == ("uint8" if fusion.preprocess else "float32")
    assert outputs[0].dtype == ("int32" if fusion.argmax else "float32")
    assert outputs[0].shape == ([1, H, W] if fusion.argmax else [1, 5, H, W])


@pytest.mark.trt
@requires_tensorrt
def test_tensorrt_rtx_builds_fused_int8_engine_with_nhwc_profile(fused_deploy, calib_dir):
    directory = fused_deploy("both", frozenset({"batch", "height", "width"}))
    options = BuildOptions(calib=calib_dir, calib_size=8, min_shapes={"input": (1, 64, 96, 3)},
                           max_shapes={"input": (2, 128, 192, 3)})
    build_artifacts(directory, ["int8"], "tensorrt", options)
    entry = Manifest.load(directory).artifact("trt-int8")
    assert entry.parent == "onnx-int8-trt"
    assert entry.settings["profile"]["input"] == {"min": [1, 64, 96, 3], "opt": [1, H, W, 3], "max": [2, 128, 192, 3]}
    assert entry.inputs[0].dtype == "uint8" and entry.outputs[0].dtype == "int32"
