"""INT8 TensorRT graphs with TensorRT's Q/DQ placement: they follow its rules and TensorRT-RTX builds them.

Each model is exported and built through segdeploy's real path (`build_artifacts`, INT8,
TensorRT backend) on a small non-square input. The finished graph is checked against the
placement rules independently of the code that placed them (`trt_rules`), TensorRT's own
parse of it must show every convolution reading dequantized input, and the engine must build.
By default a representative set runs (LayerNorm/attention: MiT and SegFormer; ConvNeXt; a ResNet
with residual Adds and a max pool); `-m slow` runs the whole zoo, torchvision's models and a
segmentation_models_pytorch matrix.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import onnx
import pytest

from segdeploy.backends.tensorrt.device import gpu_info
from segdeploy.build import BuildOptions, build_artifacts
from segdeploy.errors import SegdeployError
from segdeploy.manifest import Manifest

import trt_rules
from build_helpers import requires_tensorrt

pytestmark = [pytest.mark.trt, requires_tensorrt]

MODELS = Path(__file__).with_name("placement_models.py")
SHAPE = (1, 3, 64, 96)  # non-square, divisible by 32 (smp encoders need it)


@dataclasses.dataclass(frozen=True)
class Case:
    source: str
    kwargs: dict = dataclasses.field(default_factory=dict)
    opset: int = 11  # scaled_dot_product_attention exports from opset 14 until its opset-11 rewrite lands
    shape: tuple[int, int, int, int] = SHAPE


def smp(arch: str, encoder: str, opset: int = 11, shape=SHAPE) -> Case:
    return Case(f"{MODELS}:smp_model", {"arch": arch, "encoder": encoder}, opset, shape)


REPRESENTATIVE = {
    "smp-Unet-mit_b0": smp("Unet", "mit_b0", opset=14),
    "smp-UPerNet-convnext_atto": smp("UPerNet", "tu-convnext_atto"),
    "hf-SegFormer": Case(f"{MODELS}:segformer", opset=14),
    "smp-Unet-resnet18": smp("Unet", "resnet18"),
}
SMP_MATRIX = {
    f"smp-{arch}-{encoder}": smp(arch, encoder, 14 if encoder == "mit_b0" else 11)
    for arch, encoders in {
        "Unet": ["tu-mobilenetv3_small_100", "tu-efficientnet_b0", "tu-convnext_atto"],
        "FPN": ["resnet18", "mit_b0", "tu-mobilenetv3_small_100"],
        "DeepLabV3Plus": ["resnet18", "tu-efficientnet_b0"],
        "DeepLabV3": ["resnet18"], "Linknet": ["resnet18"], "MAnet": ["tu-efficientnet_b0"],
        "UnetPlusPlus": ["resnet18"], "UPerNet": ["resnet18", "mit_b0"], "Segformer": ["mit_b0", "resnet18"],
    }.items() for encoder in encoders
} | {
    # PSPNet's pyramid (bins 1, 2, 3, 6 at 1/8) gets sizes its bins divide: at 64×96 the export fails (see README);
    # PAN's pooling attention needs at least 8 px at 1/32.
    "smp-PSPNet-tu-mobilenetv3_small_100": smp("PSPNet", "tu-mobilenetv3_small_100", shape=(1, 3, 96, 144)),
    "smp-PAN-resnet18": smp("PAN", "resnet18", shape=(1, 3, 256, 320)),
}


def _registry_cases() -> dict[str, Case]:
    from segdeploy.models import list_specs

    cases = {}
    for spec in list_specs():
        zoo = "width" in inspect.signature(spec.builder).parameters
        cases[spec.name] = Case(spec.name, {"width": 0.0625} if zoo else {})
    return cases


def _export(name: str, case: Case, root: Path) -> Path:
    from segdeploy.export import ExportRequest, export_model
    from segdeploy.models import get_spec

    shape = case.shape
    if ":" not in case.source:  # a registry model: its own size multiple, still non-square
        multiple = get_spec(case.source).size_multiple
        shape = (1, 3, max(multiple, -(-64 // multiple) * multiple), max(2 * multiple, -(-96 // multiple) * multiple))
    out = root / name
    export_model(ExportRequest(source=case.source, out_dir=out, model_kwargs=case.kwargs, num_classes=5,
                               input_shape=shape, opset=case.opset))
    return out


def build_and_check(name: str, case: Case, root: Path, calib_dir: Path) -> onnx.ModelProto:
    """Export, build the INT8 TensorRT graph and engine, and check both; returns the graph."""
    from segdeploy.backends.tensorrt.inspect import network_layers

    directory = _export(name, case, root)
    build_artifacts(directory, ["int8"], "tensorrt", BuildOptions(calib=calib_dir, calib_size=4))
    manifest = Manifest.load(directory)
    graph_path = manifest.verify("onnx-int8-trt")
    model = onnx.load(str(graph_path))
    assert trt_rules.violations(model) == []
    quantized, weighted = trt_rules.quantized_weighted(model)
    assert weighted > 0 and quantized == weighted  # every weighted layer is INT8 (none are kept in float here)
    convolutions = [layer for layer in network_layers(graph_path) if layer["type"] in ("CONVOLUTION", "DECONVOLUTION")]
    assert convolutions and all(layer["inputs"][0] == "DEQUANTIZE" for layer in convolutions)
    assert manifest.verify("trt-int8").stat().st_size > 10_000
    assert manifest.artifact("onnx-int8-trt")["settings"]["placement"] == "tensorrt"
    return model


@pytest.mark.parametrize("name", list(REPRESENTATIVE))
def test_int8_engine_builds_with_tensorrt_placement(name, tmp_path, calib_dir):
    model = build_and_check(name, REPRESENTATIVE[name], tmp_path, calib_dir)
    ops = {n.op_type for n in model.graph.node}
    if "Softmax" in ops or "ReduceMean" in ops:  # attention / LayerNorm models: those stay float
        graph = trt_rules.Graph(model)
        inside = [n for n in model.graph.node if n.op_type in ("Softmax", "ReduceMean", "Pow", "Sqrt", "Erf")]
        assert inside and not any(graph.made_by(i, "DequantizeLinear") for n in inside for i in n.input)
    if name == "smp-Unet-resnet18":  # residual Adds read the shortcut dequantized and the fused Conv branch float
        graph = trt_rules.Graph(model)
        residual = [n for n in model.graph.node if n.op_type == "Add" and any(graph.made_by(i, "DequantizeLinear") for i in n.input)]
        pools = [n for n in model.graph.node if n.op_type == "MaxPool" and graph.made_by(n.input[0], "DequantizeLinear")]
        assert len(residual) >= 8 and len(pools) == 1  # ResNet-18: 8 basic blocks; its stem max pool runs in INT8


@pytest.mark.slow
@pytest.mark.parametrize("name", [*_registry_cases(), *SMP_MATRIX])
def test_every_int8_tensorrt_graph_builds(name, tmp_path, calib_dir):
    case = {**_registry_cases(), **SMP_MATRIX}[name]
    build_and_check(name, case, tmp_path, calib_dir)


def test_old_placement_failure_names_the_onnx_node(tmp_path, calib_dir):
    """onnxruntime's own placement quantizes a LayerNorm's scalar constants; TensorRT refuses that,
    and the error says which ONNX node, its operator and how to keep it in float."""
    from segdeploy.backends.tensorrt.builder import EngineOptions, build_engine
    from segdeploy.precision.calibration import reader_for, select_images
    from segdeploy.precision.quantize import prepare_graph, quantize_graph, target_for

    directory = _export("segformer", REPRESENTATIVE["hf-SegFormer"], tmp_path)
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


@pytest.mark.gpu
@pytest.mark.skipif(gpu_info() is None,
                    reason="the engine inspector needs a CUDA GPU to load the engine (none here); unverified on this machine")
def test_engine_runs_convolutions_in_int8(tmp_path, calib_dir):
    """What the built engine really runs: every convolution layer reads INT8 (engine inspector, detailed)."""
    from segdeploy.backends.tensorrt.builder import EngineOptions
    from segdeploy.backends.tensorrt.inspect import engine_layers

    directory = _export("resnet", REPRESENTATIVE["smp-Unet-resnet18"], tmp_path)
    build_artifacts(directory, ["int8"], "tensorrt",
                    BuildOptions(calib=calib_dir, calib_size=4, engine=EngineOptions(detailed_layers=True)))
    layers = engine_layers(Manifest.load(directory).verify("trt-int8"))
    convolutions = [layer for layer in layers if "Convolution" in str(layer.get("LayerType", ""))]
    int8 = [layer for layer in convolutions
            if any("int8" in str(i.get("Format/Datatype", "")).lower() for i in layer.get("Inputs", []))]
    assert convolutions and len(int8) == len(convolutions), [layer.get("Name") for layer in convolutions if layer not in int8]
