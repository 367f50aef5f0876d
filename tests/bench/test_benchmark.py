"""`segdeploy bench` end to end on tiny models and the shipped calib/ data (a few images)."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from segdeploy.export import ExportRequest, export_model
from segdeploy.manifest import Manifest
from segdeploy.manifest.names import ONNX
from tests.conftest import REPO
from tests.helpers import export_demo

CALIB = REPO / "calib"
FAST = ["--iterations", "3", "--warmup", "1", "--limit", "6"]


@pytest.fixture(scope="module")
def deploy(tmp_path_factory):
    """The trained demo U-Net (its class maps vary) with the calib classes, plus a copy of its graph made worse on purpose."""
    out = export_demo(tmp_path_factory.mktemp("bench") / "deploy", dynamic={"batch"})
    graph = onnx.load(str(out / "model.onnx"))
    bias = next(i for i in graph.graph.initializer if tuple(numpy_helper.to_array(i).shape) == (6,))
    worse = numpy_helper.to_array(bias).copy()
    worse[2] += 1e4  # class 2 wins everywhere
    bias.CopyFrom(numpy_helper.from_array(worse, bias.name))
    onnx.save(graph, str(out / "model.worse.onnx"))
    manifest = Manifest.load(out)
    manifest.add_artifact("onnx-worse", "model.worse.onnx", kind=ONNX, precision="fp32", backend="onnxruntime")
    manifest.save()
    return out


def _copy(deploy, tmp_path):
    target = tmp_path / "deploy"
    shutil.copytree(deploy, target)
    return target


def test_gates_trip_on_the_worse_artifact_only(cli, deploy, tmp_path):
    reports = tmp_path / "reports"
    proc = cli("bench", str(deploy), *FAST, "--min-agreement", "99", "--report-dir", str(reports), "--no-plots")
    assert proc.returncode == 1, proc.stderr
    assert "bench gates failed: 1 of 2" in proc.stderr
    report = json.loads((reports / "bench.json").read_text())
    assert report["schema"] == "segdeploy/bench" and report["data"]["images"] == 6
    fp32, worse = report["targets"]["onnx-fp32"], report["targets"]["onnx-worse"]
    assert fp32["accuracy"]["pixel_agreement"] >= 99.9
    assert fp32["accuracy"]["logits_vs_reference"]["cosine_min"] > 0.9999
    assert worse["accuracy"]["pixel_agreement"] < 99
    verdicts = {(g["gate"], g["target"]): g["passed"] for g in report["gates"]["results"]}
    assert verdicts == {("min-agreement", "onnx-fp32"): True, ("min-agreement", "onnx-worse"): False}
    suite = ET.parse(reports / "junit.xml").getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    failed = [c.get("name") for c in suite if c.find("failure") is not None]
    assert failed == ["min-agreement[onnx-worse]"]
    markdown = (reports / "bench.md").read_text()
    assert "| onnx-worse | onnxruntime | fp32 |" in markdown and "**Gates FAILED**" in markdown


def test_miou_drop_gate_and_table(cli, deploy, tmp_path):
    proc = cli("bench", str(deploy), *FAST, "--artifact", "onnx-fp32", "--max-miou-drop", "0.01",
               "--report-dir", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report["targets"]) == {"pytorch", "onnx-fp32"}
    accuracy = report["targets"]["onnx-fp32"]["accuracy"]
    assert abs(accuracy["delta_miou"]) <= 0.01 and accuracy["miou"] == pytest.approx(
        report["targets"]["pytorch"]["accuracy"]["miou"], abs=0.01)
    latency = report["targets"]["onnx-fp32"]["latency"]["inference"]
    assert latency["iterations"] == 3 and latency["min"] <= latency["median"] <= latency["max"]
    assert {p.name for p in tmp_path.iterdir()} >= {"bench.json", "bench.md", "junit.xml", "latency.png",
                                                    "latency_vs_miou.png", "per_class_iou.png", "examples.png"}
    png = (tmp_path / "latency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_baseline_comparison(cli, deploy, tmp_path):
    first = tmp_path / "first"
    assert cli("bench", str(deploy), *FAST, "-a", "onnx-fp32", "--report-dir", str(first), "--no-plots").returncode == 0
    baseline = first / "bench.json"
    proc = cli("bench", str(deploy), *FAST, "-a", "onnx-fp32", "--baseline", str(baseline), "--max-slowdown", "1000",
               "--report-dir", str(tmp_path / "second"), "--no-plots")
    assert proc.returncode == 0, proc.stderr
    gates = json.loads((tmp_path / "second" / "bench.json").read_text())["gates"]["results"]
    assert {g["gate"] for g in gates} == {"max-slowdown", "baseline-miou"} and all(g["passed"] for g in gates)
    # an impossible slowdown budget trips
    proc = cli("bench", str(deploy), *FAST, "-a", "onnx-fp32", "--baseline", str(baseline), "--max-slowdown", "0.0001",
               "--report-dir", str(tmp_path / "third"), "--no-plots")
    assert proc.returncode == 1
    # a baseline of another model is refused
    other = json.loads(baseline.read_text())
    other["model"]["name"] = "fcn_resnet50"
    (tmp_path / "other.json").write_text(json.dumps(other))
    proc = cli("bench", str(deploy), *FAST, "--baseline", str(tmp_path / "other.json"), "--report-dir", str(tmp_path / "x"))
    assert proc.returncode == 1 and "is for another model" in proc.stderr


def test_unlabelled_folder_gives_drift_only(cli, deploy, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((CALIB / "images").iterdir())[:3]:
        shutil.copy(path, images / path.name)
    proc = cli("bench", str(deploy), *FAST, "-a", "onnx-worse", "--data", str(images), "--json",
               "--report-dir", str(tmp_path / "r"), "--no-plots")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["data"]["labelled"] is False and report["data"]["images"] == 3
    accuracy = report["targets"]["onnx-worse"]["accuracy"]
    assert "miou" not in accuracy and accuracy["pixel_agreement"] < 99
    proc = cli("bench", str(deploy), *FAST, "--data", str(images), "--max-miou-drop", "1", "--report-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "needs labelled data" in proc.stderr


def test_bad_inputs(cli, deploy, tmp_path):
    copy = _copy(deploy, tmp_path)
    (copy / "model.worse.onnx").write_bytes(b"tampered")
    proc = cli("bench", str(copy), *FAST)
    assert proc.returncode == 1 and "modified after it was recorded" in proc.stderr
    proc = cli("bench", str(deploy), *FAST, "--artifact", "trt-int8")
    assert proc.returncode == 2 and "no artifact trt-int8" in proc.stderr
    proc = cli("bench", str(deploy), *FAST, "--max-slowdown", "1.1")
    assert proc.returncode == 2 and "--max-slowdown needs --baseline" in proc.stderr
    classes = tmp_path / "data"
    shutil.copytree(CALIB, classes)
    meta = json.loads((classes / "classes.json").read_text())
    meta["classes"] = meta["classes"][:5]
    meta["palette"] = meta["palette"][:5]
    (classes / "classes.json").write_text(json.dumps(meta))
    proc = cli("bench", str(deploy), *FAST, "--data", str(classes))
    assert proc.returncode == 1
    assert "has 5 classes but the model outputs 6" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = cli("bench", str(empty))
    assert proc.returncode == 1 and "not a deploy directory" in proc.stderr


def test_static_batch_refuses_larger_batch(cli, tmp_path):
    out = tmp_path / "static"
    export_model(ExportRequest(source="unet", out_dir=out, model_kwargs={"width": 0.0625}, num_classes=6,
                               input_shape=(1, 3, 64, 96), classes_file=CALIB / "classes.json"))
    proc = cli("bench", str(out), *FAST, "--batch", "2")
    assert proc.returncode == 2 and "static batch of 1" in proc.stderr


@pytest.mark.trt
def test_engine_that_cannot_run_here_is_listed_not_hidden(cli, deploy, tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (the CPU-capable builder) is not installed")
    from segdeploy.backends.tensorrt.device import gpu_info

    if gpu_info():
        pytest.skip("a GPU is present: the engine would run, this test is about machines without one")
    copy = _copy(deploy, tmp_path)
    built = cli("build", str(copy), "-p", "fp32", "--backend", "tensorrt")
    assert built.returncode == 0, built.stderr
    proc = cli("bench", str(copy), *FAST, "--json", "--no-plots", "--report-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    skipped = json.loads(proc.stdout)["skipped"]
    assert [s["name"] for s in skipped] == ["trt-fp32"] and "GPU" in skipped[0]["reason"]
    proc = cli("bench", str(copy), *FAST, "--artifact", "trt-fp32", "--no-plots")
    assert proc.returncode == 1 and "cannot run here" in proc.stderr


@pytest.mark.trt
def test_cuda_graph_without_a_runnable_engine_is_a_usage_error(cli, deploy, tmp_path):
    """--cuda-graph is never silently ignored: with no engine that runs here it is refused."""
    proc = cli("bench", str(deploy), *FAST, "--cuda-graph", "--no-plots", "--report-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "--cuda-graph applies to TensorRT engines" in proc.stderr
    assert not (tmp_path / "r").exists()
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (the CPU-capable builder) is not installed")
    from segdeploy.backends.tensorrt.device import gpu_info

    if gpu_info():
        pytest.skip("a GPU is present: the engine would run with a CUDA graph")
    copy = _copy(deploy, tmp_path)
    assert cli("build", str(copy), "-p", "fp32", "--backend", "tensorrt").returncode == 0
    proc = cli("bench", str(copy), *FAST, "--cuda-graph", "--no-plots")
    assert proc.returncode == 2 and "trt-fp32: no CUDA GPU" in proc.stderr
