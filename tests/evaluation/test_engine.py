"""The evaluation engine: label resolution, several predictors, agreement against a reference,
per-image counts; and `class_maps`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segdeploy.data import open_dataset
from segdeploy.errors import SegdeployError
from segdeploy.backends.torch import TorchRunner
from segdeploy.evaluation.engine import Predictor, evaluate_dataset, runner_predictor
from segdeploy.evaluation.outputs import class_maps
from segdeploy.preprocess import Geometry, Preprocess

PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
IDENTITY = Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.fixture
def colour_set(tmp_path):
    """Images whose pixel colour *is* the class, so a colour decoder is a perfect model."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        label = np.zeros((36, 50), np.uint8)
        label[:, rng.integers(5, 45):] = 1
        label[rng.integers(5, 30):, :20] = 2
        ignored = label.copy()
        ignored[0, :] = 9
        Image.fromarray(PALETTE[label]).save(tmp_path / "images" / f"s{i}.png")
        Image.fromarray(ignored).save(tmp_path / "labels" / f"s{i}.png")
    (tmp_path / "classes.json").write_text(json.dumps({"classes": ["r", "g", "b"], "ignore_index": 9}))
    return open_dataset(tmp_path)


def _colour_decoder(batch: np.ndarray) -> np.ndarray:
    """Logits = the RGB channels themselves (IDENTITY preprocessing keeps 0-255 values)."""
    return batch.copy()


def _constant_zero(batch: np.ndarray) -> np.ndarray:
    logits = np.zeros_like(batch)
    logits[:, 0] = 1
    return logits


colour_decoder, constant_zero = Predictor(_colour_decoder), Predictor(_constant_zero)


def test_perfect_predictor_at_label_resolution(colour_set):
    result = evaluate_dataset(colour_decoder, colour_set, IDENTITY, (36, 50), batch_size=2)
    scores = result.results["model"].scores
    assert result.images == 5
    assert scores.miou == 1.0 and scores.pixel_accuracy == 1.0
    assert scores.pixels == 5 * 35 * 50  # the ignored first row is not counted


def test_reference_and_agreement(colour_set):
    result = evaluate_dataset({"ref": colour_decoder, "zero": constant_zero}, colour_set, IDENTITY, (48, 64), batch_size=3,
                              reference="ref")
    ref, zero = result.results["ref"], result.results["zero"]
    assert ref.agreement() is None and zero.agreement() is not None
    # independent count: fraction of the reference's predicted pixels that are class 0
    maps = []
    for sample in colour_set:
        x, geometry = IDENTITY(sample.image, (48, 64))
        maps.append(Preprocess.restore(x.argmax(0), geometry))
    expected = np.mean(np.concatenate([m.ravel() for m in maps]) == 0)
    report = zero.to_dict(result.class_names)
    assert report["pixel_agreement"] == pytest.approx(expected * 100, abs=1e-3)
    assert report["per_class_iou"]["g"] == 0.0
    assert ref.scores.miou > 0.95  # resized twice, only edges can move


def test_class_maps_low_resolution_logits_and_errors():
    logits = np.zeros((1, 3, 12, 16), np.float32)
    logits[0, 2, :, 8:] = 1
    maps = class_maps(logits, [Geometry(original_hw=(30, 40), content_hw=(24, 32))], (24, 32), 3)
    assert maps[0].shape == (30, 40) and set(np.unique(maps[0])) == {0, 2}
    assert (maps[0][:, :20] == 0).all() and (maps[0][:, 20:] == 2).all()
    with pytest.raises(SegdeployError, match="outputs 3 classes but the dataset has 4"):
        class_maps(logits, [Geometry((30, 40), (24, 32))], (24, 32), 4)
    with pytest.raises(SegdeployError, match="N x C x H x W"):
        class_maps(logits[0], [Geometry((30, 40), (24, 32))], (24, 32), 3)


def test_torch_runner_predicts_from_dict_outputs(colour_set):
    import torch

    class DictModel(torch.nn.Module):
        def forward(self, x):
            return {"out": x * 2, "aux": x}

    with TorchRunner(DictModel()) as runner:
        result = evaluate_dataset(runner_predictor(runner), colour_set, IDENTITY, (36, 50))
    assert result.results["model"].scores.miou == 1.0


def test_unlabelled_dataset_gives_agreement_only(colour_set):
    images = open_dataset(colour_set.root, labels=False)
    result = evaluate_dataset({"a": colour_decoder, "b": colour_decoder}, images, IDENTITY, (36, 50), reference="a")
    assert result.results["a"].vs_labels is None
    assert result.to_dict()["predictors"]["b"]["pixel_agreement"] == 100.0
