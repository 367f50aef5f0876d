"""`--fuse-preprocess` / `--fuse-argmax`: graph I/O, parity record, and agreement with the unfused
export plus a separate `Preprocess` on the shipped calib/ images."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from segdeploy.backends.onnxruntime import OrtRunner
from segdeploy.export import ExportRequest, export_model
from segdeploy.export.fused import Fusion
from segdeploy.images import read_rgb
from segdeploy.models import get_spec
from segdeploy.preprocess import Preprocess
from tests.conftest import REPO
from tests.models.zoo_support import NUM_CLASSES, TINY, input_size

CALIB_IMAGES = sorted((REPO / "calib" / "images").iterdir())[:6]
FUSIONS = {"pre": Fusion(True, False), "argmax": Fusion(False, True), "both": Fusion(True, True)}
# segnet takes BGR pixels in 0-1 units: the in-graph flip and scale are exercised too.
PREPROCESS = {
    "unet": Preprocess(),
    "segnet": Preprocess(channel_order="BGR", scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
}
# unet: the trained demo model shipped in calib/demo (random tiny models predict one class
# everywhere, which would make agreement meaningless); segnet (max_unpool rewritten): tiny zoo
# width, seeded weights with the classifier bias zeroed so that several classes win somewhere.
MODELS = {
    "unet": {"kwargs": {"width": 0.125}, "classes": 6, "hw": (96, 128), "weights": REPO / "calib" / "demo" / "best.pth"},
    "segnet": {"kwargs": {"width": TINY}, "classes": NUM_CLASSES, "hw": input_size(1), "weights": None},
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """exports(model, fusion key or "plain") → deploy dir; every variant of a model shares its weights."""
    root = tmp_path_factory.mktemp("fused")
    cache: dict = {}

    def get(name: str, key: str):
        if (name, key) not in cache:
            config = MODELS[name]
            weights = config["weights"] or root / f"{name}.pth"
            if not weights.exists():
                torch.manual_seed(11)
                state = get_spec(name).build(num_classes=config["classes"], **config["kwargs"]).state_dict()
                state["classifier.bias"].zero_()
                torch.save(state, weights)
            out = root / f"{name}-{key}"
            export_model(ExportRequest(source=name, out_dir=out, input_shape=(1, 3, *config["hw"]),
                                       num_classes=config["classes"], model_kwargs=config["kwargs"], weights=weights,
                                       preprocess=PREPROCESS[name], fusion=FUSIONS.get(key, Fusion())))
            cache[(name, key)] = out
        return cache[(name, key)]

    return get


def _io(graph: onnx.ModelProto):
    def describe(value):
        t = value.type.tensor_type
        return value.name, t.elem_type, [d.dim_value or d.dim_param for d in t.shape.dim]

    return describe(graph.graph.input[0]), describe(graph.graph.output[0])


@pytest.mark.parametrize("name", ["unet", "segnet"])
@pytest.mark.parametrize("key", list(FUSIONS))
def test_fused_graph_io_manifest_and_parity(exports, name, key):
    fusion = FUSIONS[key]
    out = exports(name, key)
    (h, w), classes = MODELS[name]["hw"], MODELS[name]["classes"]
    manifest = json.loads((out / "manifest.json").read_text())
    (in_name, in_type, in_dims), (out_name, out_type, out_dims) = _io(onnx.load(str(out / "model.onnx")))
    assert in_name == manifest["input"]["name"] == "input"
    if fusion.preprocess:
        assert (in_type, in_dims) == (onnx.TensorProto.UINT8, [1, h, w, 3])
        assert manifest["input"] | {"dynamic_axes": []} == {"name": "input", "shape": [1, h, w, 3], "dtype": "uint8",
                                                            "dynamic_axes": [], "layout": "NHWC", "channel_order": "RGB"}
    else:
        assert (in_type, in_dims) == (onnx.TensorProto.FLOAT, [1, 3, h, w])
        assert manifest["input"]["shape"] == [1, 3, h, w] and manifest["input"]["dtype"] == "float32"
    if fusion.argmax:
        assert (out_name, out_type, out_dims) == ("labels", onnx.TensorProto.INT32, [1, h, w])
        assert manifest["output"] == {"name": "labels", "dtype": "int32", "layout": "NHW", "kind": "labels"}
    else:
        assert (out_name, out_type, out_dims) == ("logits", onnx.TensorProto.FLOAT, [1, classes, h, w])
        assert manifest["output"]["kind"] == "logits" and manifest["output"]["layout"] == "NCHW"
    assert manifest["fused"] == {"preprocess": fusion.preprocess, "argmax": fusion.argmax}
    parity = manifest["artifacts"]["onnx-fp32"]["parity"]
    assert parity["passed"] and parity["min_argmax_agreement"] >= 0.999
    assert parity["checks"][0]["shape"] == ([1, h, w, 3] if fusion.preprocess else [1, 3, h, w])
    if fusion.argmax:  # no logits: agreement only, and the record says so
        assert parity["max_abs_error"] is None and "agreement only" in parity["compared"]
    else:
        assert parity["max_rel_error"] <= 1e-3


def test_unfused_manifest_is_unchanged(exports):
    manifest = json.loads((exports("unet", "plain") / "manifest.json").read_text())
    assert "fused" not in manifest
    assert set(manifest["input"]) == {"name", "shape", "dtype", "dynamic_axes"}
    assert manifest["output"] == {"name": "logits", "dtype": "float32", "layout": "NCHW"}


@pytest.mark.parametrize("name", ["unet", "segnet"])
@pytest.mark.parametrize("key", list(FUSIONS))
def test_fused_graph_agrees_with_unfused_export_on_calib_images(exports, name, key):
    """The fused graph fed what it takes vs the plain graph fed `Preprocess` output, on real images."""
    fusion, preprocess = FUSIONS[key], PREPROCESS[name]
    hw = MODELS[name]["hw"]
    plain_maps, fused_maps = [], []
    with OrtRunner(exports(name, "plain") / "model.onnx") as plain, OrtRunner(exports(name, key) / "model.onnx") as fused:
        for path in CALIB_IMAGES:
            canvas, _ = preprocess.resize_image(read_rgb(path), hw)
            tensor = preprocess.normalize(canvas)[None]
            plain_maps.append(plain.infer({"input": tensor})["logits"].argmax(axis=1))
            got = fused.infer({"input": canvas[None] if fusion.preprocess else tensor})
            fused_maps.append(got["labels"] if fusion.argmax else got["logits"].argmax(axis=1))
    plain_maps, fused_maps = np.concatenate(plain_maps), np.concatenate(fused_maps)
    assert len(np.unique(plain_maps)) >= 2, "degenerate model: the comparison would prove nothing"
    assert (plain_maps == fused_maps).mean() >= 0.999


def test_dynamic_fused_export_names_nhwc_axes(tmp_path):
    out = tmp_path / "dyn"
    result = export_model(ExportRequest(source="unet", out_dir=out, input_shape=(1, 3, 64, 96), num_classes=NUM_CLASSES,
                                        model_kwargs={"width": TINY}, dynamic={"batch", "height", "width"},
                                        fusion=Fusion(True, True)))
    (_, _, in_dims), (_, _, out_dims) = _io(onnx.load(str(out / "model.onnx")))
    assert in_dims == ["batch", "height", "width", 3] and out_dims == ["batch", "height", "width"]
    shapes = [c["shape"] for c in result.parity["checks"]]
    assert shapes[0] == [1, 64, 96, 3] and len(shapes) == 2 and shapes[1][3] == 3 and shapes[1][0] == 2


def test_torchscript_source_can_be_fused(tmp_path):
    torch.manual_seed(0)
    model = get_spec("unet").build(num_classes=NUM_CLASSES, width=TINY).eval()
    scripted = tmp_path / "unet.pt"
    torch.jit.trace(model, torch.randn(1, 3, 64, 96)).save(str(scripted))
    result = export_model(ExportRequest(source=str(scripted), out_dir=tmp_path / "ts", input_shape=(1, 3, 64, 96),
                                        fusion=Fusion(True, True)))
    assert result.parity["passed"] and result.manifest.input.dtype == "uint8"


def test_cli_fuse_flags_and_bad_input(cli, tmp_path):
    proc = cli("export", "unet", "--model-kwargs", '{"width": 0.0625}', "--num-classes", "5", "--input-shape", "1x3x64x96",
               "--fuse-preprocess", "--fuse-argmax", "-o", str(tmp_path / "ok"), "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "ok" / "manifest.json").read_text())
    assert manifest["fused"] == {"preprocess": True, "argmax": True}
    assert json.loads(proc.stdout)["parity"]["compared"].startswith("class maps")
    bad = cli("export", "unet", "--model-kwargs", '{"width": 0.0625}', "--num-classes", "5", "--input-shape", "1x1x64x96",
              "--fuse-preprocess", "-o", str(tmp_path / "bad"))
    assert bad.returncode != 0
    assert "--fuse-preprocess needs a 3-channel (RGB) input" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad" / "model.onnx").exists()
