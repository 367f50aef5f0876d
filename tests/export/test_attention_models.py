"""Real attention models at opset 11: transformers' SegFormer, BEiT and DPT and a timm ViT,
built from configs with random weights (scripts/compat_models.py), exported with segdeploy's
parity proof, and built by TensorRT-RTX through segdeploy's build path."""

from __future__ import annotations

import importlib.util

import pytest

from segdeploy.build import BuildOptions, build_artifacts
from segdeploy.errors import SegdeployError
from segdeploy.export import ExportRequest, export_model
from segdeploy.manifest import Manifest
from segdeploy.manifest.names import FP32_GRAPH, INT8_GRAPHS, tensorrt_engine
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("transformers", "timm")), reason="transformers/timm not installed"
)
FACTORIES = REPO / "scripts" / "compat_models.py"
DYNAMIC = {"batch", "height", "width"}
# (factory, input, dynamic H/W, module whose attention is rewritten, logits below input size)
MODELS = {
    "hf_segformer": ((1, 3, 64, 96), True, "model.segformer.stages.0.blocks.0.attention", True),
    "hf_beit": ((1, 3, 64, 96), True, "model.beit.layers.0.attention", True),
    "hf_dpt": ((1, 3, 64, 64), False, "model.dpt.encoder.layer.0.attention.attention", False),  # square only
    "timm_vit": ((1, 3, 64, 96), False, "model.encoder.blocks.0.attn", True),  # fixed position grid
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("attention")
    cache = {}

    def get(name: str, dynamic: bool):
        if (name, dynamic) not in cache:
            shape = MODELS[name][0]
            request = ExportRequest(source=f"{FACTORIES}:{name}", out_dir=root / f"{name}-{dynamic}", input_shape=shape,
                                    num_classes=4, dynamic=DYNAMIC if dynamic else set())
            cache[(name, dynamic)] = export_model(request)
        return cache[(name, dynamic)]

    return get


CASES = [(name, dynamic) for name, (_, can_dynamic, _, _) in MODELS.items() for dynamic in ([False, True] if can_dynamic else [False])]


@pytest.mark.parametrize("name, dynamic", CASES, ids=[f"{n}-{'dynamic' if d else 'static'}" for n, d in CASES])
def test_attention_model_exports_at_opset_11_with_parity(exports, name, dynamic):
    result = exports(name, dynamic)
    shape, _, attention, upsampled = MODELS[name]
    manifest = Manifest.load(result.directory)  # as written to manifest.json
    assert manifest.artifact(FP32_GRAPH.name).opset == 11
    assert result.parity["passed"] and result.parity["min_argmax_agreement"] >= 0.999
    assert len(result.parity["checks"]) == (2 if dynamic else 1)
    assert any(r.startswith(attention) and "scaled_dot_product_attention" in r for r in result.rewrites), result.rewrites
    assert manifest.model.upsampled_output is upsampled  # HF logits at 1/4 resolution → input size
    assert manifest.output.name == "logits"


def test_dpt_refuses_dynamic_size_naming_the_model(tmp_path):
    """DPT's segmentation head reshapes its tokens to a square grid: another size cannot run
    in PyTorch itself, and the export says so instead of blaming the graph."""
    with pytest.raises(SegdeployError, match="the model itself cannot run at input"):
        export_model(ExportRequest(source=f"{FACTORIES}:hf_dpt", out_dir=tmp_path / "d", input_shape=(1, 3, 64, 64),
                                   dynamic=DYNAMIC))
    assert not (tmp_path / "d").exists()


def test_degenerate_mobilevit_is_reported_as_the_models_output(tmp_path):
    """A freshly initialised MobileViT's logits underflow to zero: said so, not a graph failure."""
    with pytest.raises(SegdeployError, match="degenerate — all its logits are zero or denormal"):
        export_model(ExportRequest(source=f"{FACTORIES}:hf_mobilevit", out_dir=tmp_path / "d",
                                   input_shape=(1, 3, 64, 96)))


def _tensorrt_build(exports, tmp_path, name: str, dynamic: bool, precisions: list[str]):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx is not installed")
    import shutil

    deploy = tmp_path / "deploy"
    shutil.copytree(exports(name, dynamic).directory, deploy)
    return build_artifacts(deploy, precisions, "tensorrt", BuildOptions(calib_size=8))


TRT_CASES = [("hf_segformer", True), ("hf_beit", False), ("hf_dpt", False), ("timm_vit", False)]


@pytest.mark.trt
@pytest.mark.parametrize("name, dynamic", TRT_CASES, ids=[f"{n}-{'dynamic' if d else 'static'}" for n, d in TRT_CASES])
def test_tensorrt_rtx_builds_attention_models_fp32_fp16(exports, tmp_path, name, dynamic):
    result = _tensorrt_build(exports, tmp_path, name, dynamic, ["fp32", "fp16"])
    names = {a["name"] for a in result.artifacts}
    assert {"trt-fp32", "trt-fp16"} <= names, names
    assert all((result.directory / a["file"]).stat().st_size > 0 for a in result.artifacts)


@pytest.mark.trt
@pytest.mark.parametrize("name, dynamic", TRT_CASES, ids=[f"{n}-{'dynamic' if d else 'static'}" for n, d in TRT_CASES])
def test_tensorrt_rtx_builds_attention_models_int8(exports, tmp_path, name, dynamic):
    """The opset-11 attention rewrite (MatMul, Softmax) under TensorRT's INT8 placement: the graph
    follows TensorRT's Q/DQ rules, checked independently (no quantized constant outside a weight,
    no dequantized input to Softmax, LayerNorm/GELU arithmetic or a MatMul of two activations),
    its weighted layers are INT8, and TensorRT-RTX builds the engine."""
    import onnx

    from tests.precision import trt_rules

    result = _tensorrt_build(exports, tmp_path, name, dynamic, ["int8"])
    manifest = Manifest.load(result.directory)
    graph = onnx.load(str(manifest.verify(INT8_GRAPHS["tensorrt"].name)))
    assert trt_rules.violations(graph) == []
    quantized, weighted = trt_rules.quantized_weighted(graph)
    assert weighted > 0 and quantized > 0, (quantized, weighted)
    assert manifest.verify(tensorrt_engine("int8").name).stat().st_size > 10_000
