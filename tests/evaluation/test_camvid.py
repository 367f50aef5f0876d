"""Real-data check: the CamVid LR-ASPP model's val figures reproduce through segdeploy's code.

The reference figures are read from ../shared/models/README.md (not copied here), and the
data from ../shared/camvid; both are research-use only and never part of the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared"
CAMVID = SHARED / "camvid"
MODEL = SHARED / "models" / "camvid_lraspp_mbv3.pth"
README = SHARED / "models" / "README.md"

pytestmark = [
    pytest.mark.camvid,
    pytest.mark.skipif(
        not (CAMVID / "val").is_dir() or not MODEL.is_file() or not README.is_file(),
        reason=f"CamVid data or model not found under {SHARED} (research-use data, kept outside the repository)",
    ),
]


def _readme_figures() -> dict:
    text = README.read_text(encoding="utf-8")
    row = re.search(r"\|\s*val[^|]*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", text)
    per_class = re.search(r"Per-class IoU on val:(.*?)\.\s*$", text, re.MULTILINE | re.DOTALL)
    ious = dict(re.findall(r"([A-Za-z]+) ([\d.]+)", per_class.group(1))) if per_class else {}
    return {"miou": float(row.group(1)), "pixel_accuracy": float(row.group(2)), "per_class": {k: float(v) for k, v in ious.items()}}


@pytest.fixture(scope="module")
def camvid_result():
    from segdeploy.data import open_dataset
    from segdeploy.backends.torch import TorchRunner
    from segdeploy.evaluation.engine import evaluate_dataset, runner_predictor
    from segdeploy.models.loading import load_model
    from segdeploy.preprocess import Preprocess

    dataset = open_dataset(CAMVID, split="val")
    model = load_model("lraspp_mobilenet_v3_large", num_classes=11, weights=MODEL).module
    # The README's protocol: RGB, stretched to 320x240, ImageNet mean/std on 0-255 values.
    with TorchRunner(model) as runner:
        result = evaluate_dataset(runner_predictor(runner), dataset, Preprocess(), (240, 320), batch_size=8)
    return dataset, result


def test_camvid_val_reader(camvid_result):
    dataset, result = camvid_result
    assert len(dataset) == 101 == result.images
    assert dataset.classes.num_classes == 11 and dataset.classes.ignore_index == 11
    stem, image, label = dataset[0]
    assert image.shape == (360, 480, 3) and label.shape == (360, 480)


def test_camvid_val_miou_reproduces_readme(camvid_result):
    _, result = camvid_result
    expected = _readme_figures()
    scores = result.results["model"].scores.to_dict(result.class_names)
    assert abs(scores["miou"] - expected["miou"]) <= 0.5, (scores["miou"], expected["miou"])
    assert abs(scores["pixel_accuracy"] - expected["pixel_accuracy"]) <= 0.5
    assert expected["per_class"], "README per-class figures not found"
    for name, iou in expected["per_class"].items():
        assert abs(scores["per_class_iou"][name] - iou) <= 1.0, name


def test_camvid_void_label_is_ignored(camvid_result):
    dataset, result = camvid_result
    from segdeploy.data import read_label

    void = sum(int(np.sum(read_label(label_path) == 11)) for _, _, label_path in dataset.items)
    total = 101 * 360 * 480
    assert void > 0
    assert result.results["model"].vs_labels.counts.sum() == total - void
