"""INT8 TensorRT graphs with TensorRT's Q/DQ placement (`precision/trt_placement.py`): they follow its
rules and TensorRT-RTX builds them.

Every finished graph is checked against the placement rules independently of the code that placed
them (`trt_rules`). First on a small graph made here (no TensorRT needed): a Conv with a residual
Add, a max pool, a decomposed LayerNorm with its scalar constants and a MatMul — where
onnxruntime's own placement breaks the rules, which proves the checker catches a regression.
Then through segdeploy's real path (`build_artifacts`, INT8, TensorRT backend) on small
non-square inputs: TensorRT's own parse must show every convolution reading dequantized input,
and the engine must build. By default a representative set runs (LayerNorm/attention: MiT and
SegFormer; ConvNeXt; a ResNet with residual Adds and a max pool); `-m slow` runs the whole zoo,
torchvision's models and a segmentation_models_pytorch matrix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from segdeploy.backends.tensorrt.device import gpu_info
from segdeploy.build import BuildOptions, build_artifacts
from segdeploy.manifest import Manifest
from segdeploy.manifest.names import INT8_GRAPHS, tensorrt_engine
from segdeploy.precision import trt_placement
from segdeploy.precision.quantize import prepare_graph, quantize_graph, target_for

from tests.helpers import requires_tensorrt
from tests.models.zoo_support import tiny_kwargs, tiny_shape
from tests.precision import trt_rules

TRT_GRAPH, TRT_ENGINE = INT8_GRAPHS["tensorrt"].name, tensorrt_engine("int8").name
MODELS = Path(__file__).parents[1] / "placement_models.py"
SHAPE = (1, 3, 64, 96)  # non-square, divisible by 32 (smp encoders need it)
LAYERNORM_OPS = ("ReduceMean", "Sub", "Pow", "Sqrt", "Div", "Erf", "Softmax")


# -- the rules on a small graph made here ----------------------------------------------------------

def _small_graph() -> onnx.ModelProto:
    """x → Conv → Relu → MaxPool → Conv → Add(residual) → LayerNorm over channels (decomposed, scalar
    constants) → Transpose → MatMul(constant weight) → Transpose → logits."""
    rng = np.random.default_rng(0)
    const = lambda name, value: numpy_helper.from_array(np.asarray(value, np.float32), name)  # noqa: E731
    inits = [const("w1", rng.standard_normal((8, 3, 3, 3))), const("w2", rng.standard_normal((8, 8, 3, 3)) * 0.2),
             const("two", 2.0), const("eps", 1e-5), const("gamma", rng.random((1, 8, 1, 1)) + 0.5),
             const("w3", rng.standard_normal((8, 5)))]
    node = helper.make_node
    nodes = [
        node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="stem"),
        node("Relu", ["c1"], ["r1"], name="relu"),
        node("MaxPool", ["r1"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        node("Conv", ["p", "w2"], ["c2"], pads=[1, 1, 1, 1], name="block"),
        node("Add", ["c2", "p"], ["a"], name="residual"),
        node("ReduceMean", ["a"], ["mean"], axes=[1], name="ln_mean"),
        node("Sub", ["a", "mean"], ["d"], name="ln_sub"),
        node("Pow", ["d", "two"], ["sq"], name="ln_pow"),
        node("ReduceMean", ["sq"], ["var"], axes=[1], name="ln_var"),
        node("Add", ["var", "eps"], ["ve"], name="ln_eps"),
        node("Sqrt", ["ve"], ["sd"], name="ln_sqrt"),
        node("Div", ["d", "sd"], ["n"], name="ln_div"),
        node("Mul", ["n", "gamma"], ["g"], name="ln_gamma"),
        node("Transpose", ["g"], ["t"], perm=[0, 2, 3, 1], name="to_nhwc"),
        node("MatMul", ["t", "w3"], ["m"], name="classifier"),
        node("Transpose", ["m"], ["logits"], perm=[0, 3, 1, 2], name="to_nchw"),
    ]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 24])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5, 8, 12])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """The small graph, prepared for quantization the way a build prepares an export."""
    folder = tmp_path_factory.mktemp("small")
    onnx.save(_small_graph(), str(folder / "model.onnx"))
    prepare_graph(folder / "model.onnx", folder / "prepared.onnx")
    return folder / "prepared.onnx"


def _quantize_small(prepared: Path, target, out: Path) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    batches = [{"x": rng.standard_normal((1, 3, 16, 24)).astype(np.float32)} for _ in range(3)]
    quantize_graph(prepared, out, target, reader=batches, cache_path=out.with_suffix(".ranges.json"), method="minmax")
    return onnx.load(str(out))


def test_placement_chooses_weighted_layers_residual_adds_and_pools(small):
    placement = trt_placement.choose(onnx.load(str(small)), excluded=set())
    roles = {n: placement.roles[n] for n in placement.nodes}
    assert roles == {"stem": "weighted", "pool": "pool", "block": "weighted", "residual": "residual-add",
                     "classifier": "weighted"}
    assert placement.float_inputs == {"residual": {0}}  # the Conv branch TensorRT fuses into the Add stays float
    assert not trt_placement.choose(onnx.load(str(small)), excluded={"stem", "block", "classifier"}).nodes


def test_tensorrt_graph_follows_the_rules_where_onnxruntime_placement_breaks_them(small, tmp_path):
    """The TensorRT graph: no quantized scalar constant, nothing dequantized inside the LayerNorm,
    every weighted layer INT8. onnxruntime's placement on the same graph breaks exactly those rules."""
    target = target_for("tensorrt")
    model = _quantize_small(small, target, tmp_path / "trt.onnx")
    assert trt_rules.violations(model) == []
    assert trt_rules.quantized_weighted(model) == (3, 3)
    graph = trt_rules.Graph(model)
    layernorm = [n for n in model.graph.node if n.op_type in LAYERNORM_OPS or n.name in ("ln_eps", "ln_gamma")]
    assert len(layernorm) == 8 and not any(graph.made_by(i, "DequantizeLinear") for n in layernorm for i in n.input)

    old = _quantize_small(small, dataclasses.replace(target, placement="onnxruntime"), tmp_path / "old.onnx")
    found = trt_rules.violations(old)
    assert any("quantized 0-D constant" in v for v in found), found  # the LayerNorm's eps or exponent
    assert any("reads a dequantized tensor" in v for v in found), found  # LayerNorm arithmetic on rounded values


# -- real models through `build_artifacts`, engines built by TensorRT-RTX ---------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
    source: str
    kwargs: dict = dataclasses.field(default_factory=dict)
    opset: int = 11  # scaled_dot_product_attention exports from opset 14 (no opset-11 rewrite yet)
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

    return {spec.name: Case(spec.name, tiny_kwargs(spec.name), shape=tiny_shape(spec.name)) for spec in list_specs()}


def export_case(name: str, case: Case, root: Path) -> Path:
    from segdeploy.export import ExportRequest, export_model

    out = root / name
    export_model(ExportRequest(source=case.source, out_dir=out, model_kwargs=case.kwargs, num_classes=5,
                               input_shape=case.shape, opset=case.opset))
    return out


def build_and_check(name: str, case: Case, root: Path, calib_dir: Path) -> onnx.ModelProto:
    """Export, build the INT8 TensorRT graph and engine, and check both; returns the graph."""
    from segdeploy.backends.tensorrt.inspect import network_layers

    directory = export_case(name, case, root)
    build_artifacts(directory, ["int8"], "tensorrt", BuildOptions(calib=calib_dir, calib_size=8))
    manifest = Manifest.load(directory)
    graph_path = manifest.verify(TRT_GRAPH)
    model = onnx.load(str(graph_path))
    assert trt_rules.violations(model) == []
    quantized, weighted = trt_rules.quantized_weighted(model)
    assert weighted > 0 and quantized == weighted  # every weighted layer is INT8 (none are kept in float here)
    convolutions = [layer for layer in network_layers(graph_path) if layer["type"] in ("CONVOLUTION", "DECONVOLUTION")]
    assert convolutions and all(layer["inputs"][0] == "DEQUANTIZE" for layer in convolutions)
    assert manifest.verify(TRT_ENGINE).stat().st_size > 10_000
    assert manifest.artifact(TRT_GRAPH).settings["placement"] == "tensorrt"
    return model


@pytest.mark.parametrize("name", list(REPRESENTATIVE))
@pytest.mark.trt
@requires_tensorrt
def test_int8_engine_builds_with_tensorrt_placement(name, tmp_path, calib_dir):
    model = build_and_check(name, REPRESENTATIVE[name], tmp_path, calib_dir)
    graph = trt_rules.Graph(model)
    if name != "smp-Unet-resnet18":  # attention / LayerNorm models: those stay float
        inside = [n for n in model.graph.node if n.op_type in LAYERNORM_OPS]
        assert inside and not any(graph.made_by(i, "DequantizeLinear") for n in inside for i in n.input)
    else:  # residual Adds read the shortcut dequantized and the fused Conv branch float
        residual = [n for n in model.graph.node if n.op_type == "Add" and any(graph.made_by(i, "DequantizeLinear") for i in n.input)]
        pools = [n for n in model.graph.node if n.op_type == "MaxPool" and graph.made_by(n.input[0], "DequantizeLinear")]
        assert len(residual) >= 8 and len(pools) == 1  # ResNet-18: 8 basic blocks; its stem max pool runs in INT8


@pytest.mark.slow
@pytest.mark.trt
@requires_tensorrt
@pytest.mark.parametrize("name", [*_registry_cases(), *SMP_MATRIX])
def test_every_int8_tensorrt_graph_builds(name, tmp_path, calib_dir):
    build_and_check(name, {**_registry_cases(), **SMP_MATRIX}[name], tmp_path, calib_dir)


@pytest.mark.gpu
@pytest.mark.trt
@requires_tensorrt
@pytest.mark.skipif(gpu_info() is None,
                    reason="the engine inspector needs a CUDA GPU to load the engine (none here); unverified on this machine")
def test_engine_runs_convolutions_in_int8(tmp_path, calib_dir):
    """What the built engine really runs: every convolution layer reads INT8 (engine inspector, detailed)."""
    from segdeploy.backends.tensorrt.builder import EngineOptions
    from segdeploy.backends.tensorrt.inspect import engine_layers

    directory = export_case("resnet", REPRESENTATIVE["smp-Unet-resnet18"], tmp_path)
    build_artifacts(directory, ["int8"], "tensorrt",
                    BuildOptions(calib=calib_dir, calib_size=8, engine=EngineOptions(detailed_layers=True)))
    layers = engine_layers(Manifest.load(directory).verify(TRT_ENGINE))
    convolutions = [layer for layer in layers if "Convolution" in str(layer.get("LayerType", ""))]
    int8 = [layer for layer in convolutions
            if any("int8" in str(i.get("Format/Datatype", "")).lower() for i in layer.get("Inputs", []))]
    assert convolutions and len(int8) == len(convolutions), [layer.get("Name") for layer in convolutions if layer not in int8]
