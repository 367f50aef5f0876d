"""A model with one more output class than the data evaluates (void trained as a class).

The model is the trained demo U-Net (calib/demo) with a 7th output channel: the mean of the
building and vegetation logits plus 2, so it wins on ~10 % of the labelled pixels, mostly where
the model hesitates between those two classes. Every mIoU segdeploy reports for it is checked
against `_reference`, computed here from a plain onnxruntime session, PIL resizing and numpy
counts by the definition (void pixels ignored; void predicted on a labelled pixel is a miss for
that pixel's class and no class's false positive; the mean over the data's 6 classes).
"""

from __future__ import annotations

import json
from pathlib import Path
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from segdeploy import Segmenter
from segdeploy.backends.onnxruntime import OrtRunner
from segdeploy.data import open_dataset
from segdeploy.evaluation.engine import evaluate_dataset, runner_predictor
from segdeploy.export import ExportRequest, export_model
from segdeploy.manifest import Manifest
from tests.helpers import CALIB, DEMO_WEIGHTS, canvases, graph_class_maps

VOID, SHAPE, IMAGES = 6, (1, 3, 96, 128), 8  # 8 frames: 4 choose, 4 confirm in the budget test
NAMES = json.loads((CALIB / "classes.json").read_text())["classes"]
VOID_ENTRY = {"index": VOID, "name": "hood", "color": [255, 255, 0]}


@pytest.fixture(scope="module")
def void_model(tmp_path_factory):
    """(deploy dir, void-style dataset dir): the 7-class model exported with a classes.json that names its void
    output, and 6 calib val frames whose ignored pixels (255) are relabelled 6 = void, CamVid style."""
    root = tmp_path_factory.mktemp("void")
    state = torch.load(DEMO_WEIGHTS, weights_only=True)
    weight, bias = state["classifier.weight"], state["classifier.bias"]
    state["classifier.weight"] = torch.cat([weight, 0.5 * (weight[2:3] + weight[3:4])])
    state["classifier.bias"] = torch.cat([bias, 0.5 * (bias[2:3] + bias[3:4]) + 2.0])
    torch.save(state, root / "void7.pth")
    data = root / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    classes = {"classes": NAMES, "ignore_index": VOID, "void": VOID_ENTRY}
    (data / "classes.json").write_text(json.dumps(classes))
    for stem in (CALIB / "splits" / "val.txt").read_text().split()[:IMAGES]:
        shutil.copy(CALIB / "images" / f"{stem}.jpg", data / "images")
        label = np.asarray(Image.open(CALIB / "labels" / f"{stem}.png")).copy()
        label[label == 255] = VOID
        Image.fromarray(label).save(data / "labels" / f"{stem}.png")
    deploy = root / "deploy"
    export_model(ExportRequest(source="unet", out_dir=deploy, model_kwargs={"width": 0.125}, num_classes=7,
                               weights=root / "void7.pth", input_shape=SHAPE, classes_file=data / "classes.json"))
    return deploy, data


def _reference(graph, data, ignore) -> dict:
    """mIoU (%) and per-class IoU of `graph` on `data`, by the definition, with no segdeploy code."""
    images = sorted((data / "images").iterdir())
    maps = graph_class_maps(graph, canvases(images, SHAPE[2:]))
    counts = {c: np.zeros(3, np.int64) for c in range(len(NAMES))}  # tp, fp, fn
    void_share = []
    for path, small in zip(images, maps):
        label = np.asarray(Image.open(data / "labels" / f"{path.stem}.png")).astype(np.int64)
        prediction = np.asarray(Image.fromarray(small.astype(np.uint8)).resize(label.shape[::-1], Image.NEAREST))
        labelled = label != ignore
        void_share.append(np.mean(prediction[labelled] == VOID))
        for c, row in counts.items():
            row += [np.sum((label == c) & (prediction == c)), np.sum(labelled & (label != c) & (prediction == c)),
                    np.sum((label == c) & (prediction != c))]
    ious = {NAMES[c]: 100 * tp / (tp + fp + fn) for c, (tp, fp, fn) in counts.items() if tp + fp + fn}
    return {"miou": float(np.mean(list(ious.values()))), "ious": ious, "void_share": float(np.mean(void_share)),
            "naive_7_class_mean": float(np.sum(list(ious.values())) / 7)}


def test_export_names_and_colours_the_void_output(void_model):
    deploy, data = void_model
    classes = Manifest.load(deploy).classes
    assert classes.names == (*NAMES, "hood") and classes.palette[VOID] == (255, 255, 0) and classes.not_evaluated == (VOID,)
    with Segmenter(deploy, artifact="onnx-fp32") as segment:
        assert segment.classes.palette[VOID] == (255, 255, 0)
        maps = [segment(np.asarray(Image.open(p).convert("RGB"))) for p in sorted((data / "images").iterdir())]
    assert any((m == VOID).any() for m in maps)  # the Segmenter returns the void class; its palette colours it


def test_bench_scores_the_data_classes_with_void_as_a_miss(cli, void_model, tmp_path):
    deploy, data = void_model
    reference = _reference(deploy / "model.onnx", data, ignore=VOID)
    assert 0.03 < reference["void_share"] < 0.3  # the rule is exercised on a real share of labelled pixels
    proc = cli("bench", str(deploy), "--data", str(data), "--iterations", "2", "--warmup", "1", "--no-plots",
               "--report-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r" / "bench.json").read_text())
    mapping = report["class_mapping"]
    assert (mapping["model_classes"], mapping["dataset_classes"], mapping["not_evaluated"]) == (7, 6, [VOID])
    for target in ("pytorch", "onnx-fp32"):
        accuracy = report["targets"][target]["accuracy"]
        assert accuracy["miou"] == pytest.approx(reference["miou"], abs=2e-3)
        assert accuracy["per_class_iou"] == pytest.approx(reference["ious"], abs=2e-3)
    assert abs(reference["miou"] - reference["naive_7_class_mean"]) > 1  # a 7-class mean would fail the check
    assert "**Classes:** the model outputs 7 classes, the data has 6" in (tmp_path / "r" / "bench.md").read_text()
    assert "classes: the model outputs 7 classes" in " ".join(proc.stdout.split())


def test_engine_with_the_void_output_declared_not_evaluated_on_ignore_255_data(void_model, tmp_path):
    """Cityscapes style: the labels keep 255 = ignore; the data's classes.json declares the model's class 6."""
    deploy, _ = void_model
    data = tmp_path / "data"
    shutil.copytree(CALIB, data, ignore=shutil.ignore_patterns("demo"))
    meta = json.loads((CALIB / "classes.json").read_text())
    (data / "classes.json").write_text(json.dumps({**meta, "not_evaluated": [VOID]}))
    stems = (CALIB / "splits" / "val.txt").read_text().split()[:IMAGES]
    (data / "splits" / "few.txt").write_text("\n".join(stems))
    dataset = open_dataset(data, split="few")
    with OrtRunner(deploy / "model.onnx") as runner:
        result = evaluate_dataset(runner_predictor(runner), dataset, Manifest.load(deploy).preprocess, SHAPE[2:],
                                  batch_size=1, num_classes=7)
    view = tmp_path / "view"  # the same frames laid out for `_reference`
    (view / "images").mkdir(parents=True)
    shutil.copytree(data / "labels", view / "labels")
    for stem in stems:
        shutil.copy(data / "images" / f"{stem}.jpg", view / "images")
    reference = _reference(deploy / "model.onnx", view, ignore=255)
    scores = result["model"].scores
    assert result.classes.not_evaluated == (VOID,) and len(scores.iou) == 6
    assert scores.miou * 100 == pytest.approx(reference["miou"], abs=1e-6)


def _part(data: Path, stems: list[str], folder: Path) -> Path:
    """A dataset folder holding `stems` of `data` (images, labels, classes.json)."""
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    shutil.copy(data / "classes.json", folder)
    for stem in stems:
        shutil.copy(data / "images" / f"{stem}.jpg", folder / "images")
        shutil.copy(data / "labels" / f"{stem}.png", folder / "labels")
    return folder


def test_budget_search_scores_the_same_way(cli, void_model, tmp_path):
    """The budget's choice and confirmation parts are scored with the class mapping (void not evaluated)."""
    deploy, data = void_model
    copy = tmp_path / "deploy"
    shutil.copytree(deploy, copy)
    stems = sorted(p.stem for p in (data / "images").iterdir())
    choice = _part(data, stems[: len(stems) // 2], tmp_path / "choice")
    confirm = _part(data, stems[len(stems) // 2:], tmp_path / "confirm")
    calib = tmp_path / "calib"  # train frames only: the confirmation shares no image with calibration
    calib.mkdir()
    for stem in (CALIB / "splits" / "train.txt").read_text().split()[:8]:
        shutil.copy(CALIB / "images" / f"{stem}.jpg", calib)
    proc = cli("build", str(copy), "-p", "int8", "--calib", str(calib), "--calib-size", "8", "--miou-budget", "100",
               "--eval-data", str(choice), "--confirm-data", str(confirm))
    assert proc.returncode == 0, proc.stderr
    record = Manifest.load(copy).artifact("onnx-int8-ort").mixed_precision
    assert record.fp32_miou == pytest.approx(_reference(copy / "model.onnx", choice, ignore=VOID)["miou"], abs=2e-3)
    assert record.confirmation["fp32_miou"] == pytest.approx(_reference(copy / "model.onnx", confirm, ignore=VOID)["miou"],
                                                             abs=2e-3)
    assert "6 evaluated classes (model class 6 (hood) not evaluated)" in record.eval["description"]


def test_mismatches_the_rule_does_not_cover_are_one_line(cli, void_model, tmp_path):
    deploy, _ = void_model
    export = ["export", "unet", "--num-classes", "7", "--weights", str(deploy.parent / "void7.pth"),
              "--model-kwargs", '{"width": 0.125}', "--input-shape", "1x3x96x128"]
    proc = cli(*export, "--classes", str(CALIB / "classes.json"), "-o", str(tmp_path / "x"))
    assert proc.returncode == 1 and "lists 6 classes but the model outputs 7" in proc.stderr
    assert not (tmp_path / "x").exists()
    # Exported without classes.json, nothing says what the 7th class is: calib/ (ignore 255) cannot score it.
    assert cli(*export, "-o", str(tmp_path / "generic")).returncode == 0
    proc = cli("bench", str(tmp_path / "generic"), "--data", str(CALIB), "--iterations", "1", "--no-plots")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "model's class(es) [6] are neither the data's ignore_index (255)" in proc.stderr
