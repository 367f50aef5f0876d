"""Segmenter and `segdeploy run` against an independent PyTorch + PIL computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segdeploy import Segmenter
from segdeploy.errors import SegdeployError
from segdeploy.export import ExportRequest, export_model
from segdeploy.models import get_spec
from tests.conftest import CAMVID, CAMVID_MODEL, REPO, requires_camvid
from tests.helpers import demo_model, export_demo

CALIB = REPO / "calib"
MEAN, STD = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])


def _frames(n=3):
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted((CALIB / "images").iterdir())[:n]]


def _torch_reference(model, image, size_hw):
    """Stretch (PIL bilinear), normalise, forward, argmax, PIL nearest back to the image size."""
    resized = np.asarray(Image.fromarray(image).resize(size_hw[::-1], Image.BILINEAR), dtype=np.float64)
    x = torch.from_numpy(((resized - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32))
    with torch.no_grad():
        out = model(x)
    logits = out["out"] if isinstance(out, dict) else out
    small = logits[0].argmax(0).numpy().astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize(image.shape[1::-1], Image.NEAREST))


@pytest.fixture(scope="module")
def deploy(tmp_path_factory):
    """The trained demo U-Net (its class maps vary, so agreement means something), dynamic batch."""
    out = export_demo(tmp_path_factory.mktemp("rt") / "deploy", dynamic={"batch"})
    return out, demo_model()


def test_segmenter_matches_pytorch_at_image_size(deploy):
    out, model = deploy
    with Segmenter(out, artifact="onnx-fp32") as seg:
        wants = []
        for image in _frames():
            got = seg(image)
            want = _torch_reference(model, image, (96, 128))
            wants.append(want)
            assert got.shape == image.shape[:2] and got.dtype == np.uint8
            assert (got == want).mean() >= 0.999
            assert seg.last_latency_ms > 0
    assert len(np.unique(np.concatenate([w.ravel() for w in wants]))) >= 3


def test_bgr_batch_and_probabilities(deploy):
    out, _ = deploy
    images = _frames()
    with Segmenter(out) as seg:
        singles = [seg(image) for image in images]
        batched = seg.predict_batch(images)
        assert all(np.array_equal(a, b) for a, b in zip(singles, batched))
        assert np.array_equal(seg(np.ascontiguousarray(images[0][..., ::-1]), bgr=True), singles[0])
        labels, probs = seg(images[0], probabilities=True)
        assert probs.shape == (6, *images[0].shape[:2])
        np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-5)
        assert (probs.argmax(axis=0) == labels).mean() >= 0.97  # bilinear probabilities vs nearest labels: edges differ
        np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)
        assert (probs.argmax(axis=0) == labels).mean() > 0.98  # bilinear vs nearest differ on edges only


def test_artifact_choice_and_refusals(deploy, tmp_path):
    out, _ = deploy
    with Segmenter(out / "model.onnx") as seg:  # an artifact file selects that artifact
        assert seg.artifact == "onnx-fp32"
    with pytest.raises(SegdeployError, match="no artifact 'trt-int8'"):
        Segmenter(out, artifact="trt-int8")
    with Segmenter(out) as seg:
        with pytest.raises(SegdeployError, match="expected H×W×3"):
            seg(np.zeros((10, 10), dtype=np.uint8))
    seg.close()
    with pytest.raises(SegdeployError, match="closed"):
        seg(_frames(1)[0])


def test_run_writes_overlays_and_class_maps(cli, deploy, tmp_path):
    out, model = deploy
    first = sorted((CALIB / "images").iterdir())[0]
    proc = cli("run", str(out), str(first), "--artifact", "onnx-fp32", "-o", str(tmp_path / "seg"), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["frames"] == 1 and summary["artifact"] == "onnx-fp32"
    labels = np.asarray(Image.open(tmp_path / "seg" / f"{first.stem}_labels.png"))
    image = np.asarray(Image.open(first).convert("RGB"))
    assert (labels == _torch_reference(model, image, (96, 128))).mean() >= 0.999
    assert np.asarray(Image.open(tmp_path / "seg" / f"{first.stem}_overlay.png")).shape == image.shape
    bad = cli("run", str(out), str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "x"))
    assert bad.returncode == 1 and "input not found" in bad.stderr


@pytest.mark.camvid
@requires_camvid()
@pytest.mark.parametrize("fused", [False, True], ids=["logits", "fused"])
def test_segmenter_on_camvid_model_matches_pytorch(tmp_path, fused):
    """The real CamVid model through Segmenter, plain and with preprocessing and argmax fused."""
    from segdeploy.export.fused import Fusion

    if not CAMVID_MODEL.is_file():
        pytest.skip(f"{CAMVID_MODEL} not found")
    out = tmp_path / "camvid"
    export_model(ExportRequest(source="lraspp_mobilenet_v3_large", out_dir=out, num_classes=11, weights=CAMVID_MODEL,
                               input_shape=(1, 3, 240, 320), classes_file=CAMVID / "classes.json",
                               fusion=Fusion(fused, fused)))
    model = get_spec("lraspp_mobilenet_v3_large").build(num_classes=11).eval()
    model.load_state_dict(torch.load(CAMVID_MODEL, weights_only=True))
    paths = sorted((CAMVID / "val" / "images").iterdir())[:4]
    with Segmenter(out) as seg:
        assert seg.spec.fused_preprocess == fused and seg.spec.labels == fused
        for path in paths:
            image = np.asarray(Image.open(path).convert("RGB"))
            assert (seg(image) == _torch_reference(model, image, (240, 320))).mean() >= 0.999


# -- fused exports (--fuse-preprocess / --fuse-argmax) -------------------------------------------
DEMO = CALIB / "demo" / "best.pth"  # trained: its class maps vary, so agreement means something


@pytest.fixture(scope="module")
def fused_deploys(tmp_path_factory):
    """The trained demo U-Net exported plain and with each fusion (dynamic batch), plus its PyTorch model."""
    from segdeploy.export.fused import Fusion

    root = tmp_path_factory.mktemp("fused-rt")
    outs = {}
    for key, fusion in {"plain": Fusion(), "pre": Fusion(True, False), "argmax": Fusion(False, True),
                        "both": Fusion(True, True)}.items():
        outs[key] = root / key
        export_model(ExportRequest(source="unet", out_dir=outs[key], model_kwargs={"width": 0.125}, num_classes=6,
                                   weights=DEMO, input_shape=(1, 3, 96, 128), dynamic={"batch"},
                                   classes_file=CALIB / "classes.json", fusion=fusion))
    model = get_spec("unet").build(num_classes=6, width=0.125).eval()
    model.load_state_dict(torch.load(DEMO, weights_only=True))
    return outs, model


@pytest.mark.parametrize("key", ["pre", "argmax", "both"])
def test_segmenter_on_fused_artifact_matches_unfused_and_pytorch(fused_deploys, key):
    outs, model = fused_deploys
    images = _frames(6)
    with Segmenter(outs["plain"]) as plain, Segmenter(outs[key]) as fused:
        want = [plain(image) for image in images]
        got = [fused(image) for image in images]
        if key != "argmax":  # the graph normalises: the Segmenter only resizes, into a reused uint8 NHWC buffer
            assert fused._buffer.dtype == np.uint8 and fused._buffer.shape == (1, 96, 128, 3)
        batched = fused.predict_batch(images[:3])
        bgr = fused(np.ascontiguousarray(images[0][..., ::-1]), bgr=True)
    assert len(np.unique(np.concatenate([w.ravel() for w in want]))) >= 3
    for image, g, w in zip(images, got, want):
        assert g.shape == image.shape[:2] and g.dtype == np.uint8
        assert (g == w).mean() >= 0.999
        assert (g == _torch_reference(model, image, (96, 128))).mean() >= 0.999
    assert all(np.array_equal(a, b) for a, b in zip(batched, got[:3]))
    assert np.array_equal(bgr, got[0])


def test_fused_argmax_refuses_probabilities(fused_deploys):
    outs, _ = fused_deploys
    with Segmenter(outs["both"]) as seg:
        with pytest.raises(SegdeployError, match="outputs class maps only"):
            seg(_frames(1)[0], probabilities=True)
    with Segmenter(outs["pre"]) as seg:  # preprocessing fused, logits out: probabilities still available
        labels, probs = seg(_frames(1)[0], probabilities=True)
        assert probs.shape == (6, *labels.shape)


def test_fused_int8_and_fp16_artifacts_run_in_segmenter(fused_deploys, tmp_path):
    import shutil

    from segdeploy.build import BuildOptions, build_artifacts

    outs, _ = fused_deploys
    target = tmp_path / "both"
    shutil.copytree(outs["both"], target)
    build_artifacts(target, ["fp16", "int8"], "onnxruntime", BuildOptions(calib=CALIB / "images", calib_size=8))
    images = _frames(4)
    with Segmenter(outs["plain"]) as plain:
        want = [plain(image) for image in images]
    for artifact in ("onnx-fp16", "onnx-int8-ort"):
        with Segmenter(target, artifact=artifact) as seg:
            agreement = np.mean([(seg(i) == w).mean() for i, w in zip(images, want)])
        assert agreement >= 0.95, (artifact, agreement)
