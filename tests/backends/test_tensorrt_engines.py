"""Real TensorRT(-RTX) builds, on the CPU, from the graphs of every registry architecture.

TensorRT-RTX builds ahead of time without a GPU. A graph TensorRT cannot parse fails the
test (a SegdeployError naming the node is raised), it is never skipped. Each engine is checked
beyond its file: the network TensorRT built it from is parsed here and its layers inspected
(precision of every convolution, Q/DQ in front of every INT8 one). The engine itself cannot be
opened without a GPU (`deserialize_cuda_engine` and `IEngineInspector` need one; so does
`get_engine_validity` on TensorRT-RTX 1.7), so its chosen tactics stay unchecked here.
"""

from __future__ import annotations

import shutil

import onnx
import pytest
from onnx import TensorProto, helper

from segdeploy.backends.tensorrt.builder import EngineOptions, build_engine
from segdeploy.backends.tensorrt.artifact import build_engine_artifact
from segdeploy.build import BuildOptions, build_artifacts
from segdeploy.errors import SegdeployError
from segdeploy.manifest import Manifest
from segdeploy.models import get_spec, list_specs

from tests.helpers import requires_tensorrt
from tests.models.zoo_support import tiny_kwargs, tiny_shape

pytestmark = [pytest.mark.trt, requires_tensorrt]

# Full-width torchvision ResNet backbones: one of them (fcn_resnet50) runs by default.
SLOW = {"deeplabv3_resnet50", "deeplabv3_resnet101", "fcn_resnet101"}
# Architectures whose FP16 and INT8 graphs are also built, static and with a dynamic profile.
PRECISION_MODELS = ["unet", "lraspp_mobilenet_v3_large"]

def _params(names):
    return [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in names]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Export each (architecture, static|dynamic) once per module."""
    from segdeploy.export import ExportRequest, export_model

    root = tmp_path_factory.mktemp("registry")
    cache = {}

    def get(name: str, dynamic: bool):
        key = (name, dynamic)
        if key not in cache:
            axes = ({"batch", "height", "width"} if get_spec(name).dynamic_hw else {"batch"}) if dynamic else set()
            out = root / f"{name}-{'dynamic' if dynamic else 'static'}"
            export_model(ExportRequest(source=name, out_dir=out, model_kwargs=tiny_kwargs(name), num_classes=5,
                                       input_shape=tiny_shape(name), dynamic=axes))
            cache[key] = out
        return cache[key]

    return get


def _copy(src, tmp_path):
    target = tmp_path / src.name
    shutil.copytree(src, target)
    return target


def _network_convolutions(graph_path) -> list[tuple[str, str, bool]]:
    """(input dtype, output dtype, both data and weights dequantized) of every (de)convolution of the
    network TensorRT parses from `graph_path`."""
    from segdeploy.backends.tensorrt.inspect import network_layers

    return [(layer["input_dtypes"][0], layer["output_dtypes"][0], layer["inputs"][:2] == ["DEQUANTIZE"] * 2)
            for layer in network_layers(graph_path) if layer["type"] in ("CONVOLUTION", "DECONVOLUTION")]


def _check_engine(directory, precision):
    """The engine is a real file, recorded with float32 I/O, built from a network whose every convolution
    runs at the precision asked for: FLOAT, HALF, or INT8 (data and weights read through Q/DQ)."""
    manifest = Manifest.load(directory)
    entry = manifest.artifact(f"trt-{precision}")
    path = manifest.verify(f"trt-{precision}")
    assert path.stat().st_size > 10_000  # a real serialized engine, not an empty file
    assert entry.inputs[0].name == "input" and entry.outputs[0].name == "logits"
    assert entry.inputs[0].dtype == entry.outputs[0].dtype == "float32"  # FP16/INT8 graphs keep float I/O
    convolutions = _network_convolutions(manifest.path_of(entry.parent))
    assert convolutions
    want = {"fp32": ("FLOAT", "FLOAT", False), "fp16": ("HALF", "HALF", False), "int8": ("FLOAT", "FLOAT", True)}[precision]
    assert set(convolutions) == {want}, (precision, sorted(set(convolutions)))
    return entry


@pytest.mark.parametrize("name", _params(s.name for s in list_specs()))
def test_fp32_engine_for_every_architecture(name, exports, tmp_path):
    directory = _copy(exports(name, dynamic=False), tmp_path)
    build_artifacts(directory, ["fp32"], "tensorrt", BuildOptions())
    entry = _check_engine(directory, "fp32")
    assert entry.inputs[0].shape == list(tiny_shape(name))


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("name", PRECISION_MODELS)
def test_fp16_and_int8_engines(name, dynamic, exports, tmp_path, calib_dir):
    directory = _copy(exports(name, dynamic), tmp_path)
    n, c, h, w = tiny_shape(name)
    options = BuildOptions(calib=calib_dir, calib_size=8)
    if dynamic:
        options.min_shapes = {"input": (1, c, h // 2, w // 2)} if get_spec(name).dynamic_hw else {"input": (1, c, h, w)}
        options.max_shapes = {"input": (2, c, h * 2, w * 2)} if get_spec(name).dynamic_hw else {"input": (2, c, h, w)}
    build_artifacts(directory, ["fp16", "int8"], "tensorrt", options)
    for precision in ("fp16", "int8"):
        entry = _check_engine(directory, precision)
        profile = entry.settings["profile"]
        assert bool(profile) == dynamic
        if dynamic:
            assert profile["input"]["max"][0] == 2


def _graph_with_unknown_op(path):
    node = helper.make_node("FancyWarp", ["x"], ["y"], domain="com.example", name="warp_0")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(path))


def test_parser_errors_name_node_and_operator(tmp_path):
    _graph_with_unknown_op(tmp_path / "bad.onnx")
    with pytest.raises(SegdeployError) as err:
        build_engine(tmp_path / "bad.onnx", tmp_path / "bad.engine", precision="fp32", profile={}, options=EngineOptions())
    message = str(err.value)
    assert "cannot parse bad.onnx" in message and "warp_0" in message and "FancyWarp" in message
    assert not (tmp_path / "bad.engine").exists()


def test_onnxruntime_int8_graph_refused_for_tensorrt(exports, tmp_path, calib_dir):
    directory = _copy(exports("unet", dynamic=False), tmp_path)
    build_artifacts(directory, ["int8"], "onnxruntime", BuildOptions(calib=calib_dir, calib_size=4))
    manifest = Manifest.load(directory)
    with pytest.raises(SegdeployError, match="made for onnxruntime, which TensorRT cannot take"):
        build_engine_artifact(manifest, "onnx-int8-ort", "int8", {}, EngineOptions())
    assert not (directory / "model.int8.engine").exists()


def test_builder_settings_recorded(exports, tmp_path):
    directory = _copy(exports("unet", dynamic=False), tmp_path)
    engine = EngineOptions(workspace_mib=256, builder_optimization_level=1, hardware_compatibility_level="ampere_plus",
                           compute_capabilities=["86", "89"], timing_cache=tmp_path / "timing.cache")
    result = build_artifacts(directory, ["fp32"], "tensorrt", BuildOptions(engine=engine))
    settings = Manifest.load(directory).artifact("trt-fp32").settings
    assert settings["workspace_mib"] == 256 and settings["builder_optimization_level"] == 1
    assert settings["hardware_compatibility_level"] == "ampere_plus"
    if settings["tensorrt"]["flavour"] == "tensorrt_rtx":
        assert settings["compute_capabilities"] == ["86", "89"]
        assert any("timing cache" in note for note in result.notes)  # said, not silently ignored
    else:
        assert (tmp_path / "timing.cache").is_file()


def test_unknown_compute_capability(exports, tmp_path):
    directory = _copy(exports("unet", dynamic=False), tmp_path)
    with pytest.raises(SegdeployError, match="compute-capability 42"):
        build_artifacts(directory, ["fp32"], "tensorrt", BuildOptions(engine=EngineOptions(compute_capabilities=["42"])))
    assert not (directory / "model.fp32.engine").exists()
