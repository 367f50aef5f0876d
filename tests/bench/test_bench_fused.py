"""`segdeploy bench` on a fused deploy directory (uint8 NHWC in, class map out): agreement and mIoU
against the unfused PyTorch reference; logit drift reported as not applicable."""

from __future__ import annotations

import json

import pytest

from segdeploy.build import BuildOptions, build_artifacts
from segdeploy.export import ExportRequest, export_model
from segdeploy.export.fused import Fusion
from tests.conftest import REPO

CALIB = REPO / "calib"
FAST = ["--iterations", "3", "--warmup", "1", "--limit", "6"]


def _export(out, fusion: Fusion):
    # The trained demo U-Net: its class maps vary, so agreement and mIoU mean something.
    export_model(ExportRequest(source="unet", out_dir=out, model_kwargs={"width": 0.125}, num_classes=6,
                               weights=CALIB / "demo" / "best.pth", input_shape=(1, 3, 96, 128), dynamic={"batch"},
                               classes_file=CALIB / "classes.json", fusion=fusion))
    return out


@pytest.mark.parametrize("fusion", [Fusion(True, True), Fusion(True, False)], ids=["both", "pre"])
def test_bench_fused_deploy_reports_agreement_and_miou(cli, tmp_path, fusion):
    deploy = _export(tmp_path / "fused", fusion)
    build_artifacts(deploy, ["int8"], "onnxruntime", BuildOptions(calib=CALIB / "images", calib_size=8))
    proc = cli("bench", str(deploy), *FAST, "--batch", "2", "--report-dir", str(tmp_path / "r"), "--json")
    assert proc.returncode == 0, proc.stderr
    targets = json.loads(proc.stdout)["targets"]
    assert set(targets) == {"pytorch", "onnx-fp32", "onnx-int8-ort"}
    reference = targets["pytorch"]["accuracy"]
    assert reference["miou"] > 30  # the trained model, not a degenerate one
    fp32 = targets["onnx-fp32"]["accuracy"]
    assert fp32["pixel_agreement"] >= 99.9 and fp32["miou"] == pytest.approx(reference["miou"], abs=0.05)
    assert targets["onnx-int8-ort"]["accuracy"]["pixel_agreement"] >= 95
    drift = fp32["logits_vs_reference"]
    if fusion.argmax:
        assert drift["max_abs_error"] is None and drift["note"].startswith("n/a")
    else:
        assert drift["cosine_min"] > 0.9999
    for name in targets:
        latency = targets[name]["latency"]
        assert latency["inference"]["iterations"] == 3 and latency["inference"]["batch"] == 2 and latency["end_to_end"]["median"] > 0
    assert (tmp_path / "r" / "examples.png").is_file()


def test_fused_and_unfused_benches_agree_on_miou(cli, tmp_path):
    scores = {}
    for key, fusion in {"plain": Fusion(), "both": Fusion(True, True)}.items():
        deploy = _export(tmp_path / key, fusion)
        proc = cli("bench", str(deploy), *FAST, "--no-plots", "--report-dir", str(tmp_path / f"r-{key}"), "--json")
        assert proc.returncode == 0, proc.stderr
        scores[key] = json.loads(proc.stdout)["targets"]["onnx-fp32"]["accuracy"]
    assert scores["both"]["miou"] == pytest.approx(scores["plain"]["miou"], abs=0.05)
    assert scores["both"]["per_class_iou"] == pytest.approx(scores["plain"]["per_class_iou"], abs=0.1)
