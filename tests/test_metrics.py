"""Metrics against hand-computed cases and an independent per-class loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segdeploy.errors import SegdeployError
from segdeploy.metrics import ConfusionMatrix, agreement, scores_from_counts

LABEL = np.array([[0, 0, 1], [1, 2, 2]])
PRED = np.array([[0, 1, 1], [1, 2, 0]])


def test_hand_computed_case():
    matrix = ConfusionMatrix(3)
    matrix.update(LABEL, PRED)
    np.testing.assert_array_equal(matrix.counts, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    scores = matrix.scores()
    # IoU: class 0 = 1/(2+2-1), class 1 = 2/(2+3-2), class 2 = 1/(2+1-1)
    np.testing.assert_allclose(scores.iou, [1 / 3, 2 / 3, 1 / 2])
    assert scores.miou == pytest.approx(0.5)
    assert scores.pixel_accuracy == pytest.approx(4 / 6)
    np.testing.assert_allclose(scores.class_accuracy, [1 / 2, 1, 1 / 2])
    assert scores.mean_class_accuracy == pytest.approx(2 / 3)
    assert scores.pixels == 6


def test_ignore_index_pixels_are_skipped():
    label = np.array([[0, 255, 1], [1, 255, 2]])
    pred = np.array([[0, 2, 1], [1, 0, 2]])  # wrong only where the label is ignored
    matrix = ConfusionMatrix(3, ignore_index=255)
    matrix.update(label, pred)
    assert matrix.counts.sum() == 4
    assert matrix.scores().miou == pytest.approx(1.0)


def test_class_absent_from_label_and_prediction_is_nan_and_excluded():
    matrix = ConfusionMatrix(4)
    matrix.update(LABEL, PRED)  # class 3 never appears
    scores = matrix.scores()
    assert math.isnan(scores.iou[3]) and math.isnan(scores.class_accuracy[3])
    assert scores.miou == pytest.approx(0.5)
    assert scores.to_dict(["a", "b", "c", "d"])["per_class_iou"]["d"] is None


def test_class_only_predicted_counts_as_zero():
    matrix = ConfusionMatrix(4)
    matrix.update(np.array([[0, 0], [1, 1]]), np.array([[0, 3], [1, 1]]))
    scores = matrix.scores()
    assert scores.iou[3] == 0.0
    # class 0: 1/(2+1-1) = 0.5, class 1: 1, class 2: absent (NaN), class 3: 0
    assert scores.miou == pytest.approx((0.5 + 1 + 0) / 3)
    assert math.isnan(scores.class_accuracy[3])  # no label pixels of class 3


def test_label_outside_classes_raises_or_is_skipped():
    matrix = ConfusionMatrix(3, ignore_index=255)
    with pytest.raises(SegdeployError, match=r"\[7\].*outside the 3 classes"):
        matrix.update(np.array([[0, 7]]), np.array([[0, 1]]))
    matrix.update(np.array([[0, 7]]), np.array([[0, 1]]), strict=False)
    assert matrix.counts.sum() == 1


def test_prediction_outside_classes_and_shape_mismatch_raise():
    matrix = ConfusionMatrix(3)
    with pytest.raises(SegdeployError, match="prediction values"):
        matrix.update(np.array([[0, 1]]), np.array([[0, 3]]))
    with pytest.raises(SegdeployError, match="shape"):
        matrix.update(np.zeros((2, 3), int), np.zeros((3, 2), int))


def test_streaming_equals_one_shot_and_merge():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, (4, 7, 9))
    preds = rng.integers(0, 5, (4, 7, 9))
    streamed, whole, other = ConfusionMatrix(5), ConfusionMatrix(5), ConfusionMatrix(5)
    for label, pred in zip(labels[:2], preds[:2]):
        streamed.update(label, pred)
    for label, pred in zip(labels[2:], preds[2:]):
        other.update(label, pred)
    streamed.merge(other)
    whole.update(labels, preds)
    np.testing.assert_array_equal(streamed.counts, whole.counts)


def _naive_scores(label, pred, num_classes, ignore):
    """Independent reference: one boolean mask per class, no confusion matrix."""
    keep = label != ignore
    label, pred = label[keep], pred[keep]
    ious, accs = [], []
    for c in range(num_classes):
        tp = np.sum((label == c) & (pred == c))
        fp = np.sum((label != c) & (pred == c))
        fn = np.sum((label == c) & (pred != c))
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else np.nan)
        accs.append(tp / (tp + fn) if tp + fn else np.nan)
    return np.array(ious), np.array(accs), np.mean(label == pred)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_maps_match_naive_loop(seed):
    rng = np.random.default_rng(seed)
    n = 6
    label = rng.integers(0, n - 1, (3, 31, 47))  # class n-1 never in the labels
    label[rng.random(label.shape) < 0.1] = 255
    pred = rng.integers(0, n, label.shape)
    pred[pred == 2] = 1  # class 2 never predicted
    matrix = ConfusionMatrix(n, ignore_index=255)
    matrix.update(label, pred)
    scores = matrix.scores()
    iou, acc, pixel = _naive_scores(label, pred, n, 255)
    np.testing.assert_allclose(scores.iou, iou, equal_nan=True)
    np.testing.assert_allclose(scores.class_accuracy, acc, equal_nan=True)
    assert scores.pixel_accuracy == pytest.approx(pixel)
    assert scores.miou == pytest.approx(np.nanmean(iou))


def test_agreement():
    assert agreement(PRED, PRED, 3) == {"pixel_agreement": 1.0, "miou_vs_reference": 1.0, "pixels": 6}
    result = agreement(LABEL, PRED, 3)  # LABEL taken as the reference
    assert result["pixel_agreement"] == pytest.approx(4 / 6)
    assert result["miou_vs_reference"] == pytest.approx(0.5)


def test_empty_matrix_scores_are_nan():
    scores = scores_from_counts(np.zeros((3, 3)))
    assert math.isnan(scores.miou) and math.isnan(scores.pixel_accuracy)
    assert scores.to_dict()["miou"] is None


def test_scores_over_evaluated_classes_follow_the_definition():
    """Void predicted on a labelled pixel is a miss for its label's class and nobody's false positive;
    labels of a class not evaluated are not counted. Checked against counts made pixel by pixel."""
    rng = np.random.default_rng(3)
    label = rng.integers(0, 5, 4000)  # labels 0..3 (class 2 not evaluated), 4 = ignore
    prediction = rng.integers(0, 6, 4000)  # 4 and 5: model classes the data does not evaluate
    evaluated = (0, 1, 3)
    matrix = ConfusionMatrix(6, ignore_index=4, evaluated=evaluated)
    matrix.update(label, prediction)
    scores = matrix.scores()
    counted = np.isin(label, evaluated)
    for position, c in enumerate(evaluated):
        tp = np.sum((label == c) & (prediction == c))
        fn = np.sum((label == c) & (prediction != c))
        fp = np.sum(counted & (label != c) & (prediction == c))
        assert scores.iou[position] == pytest.approx(tp / (tp + fp + fn))
        assert scores.class_accuracy[position] == pytest.approx(tp / (tp + fn))
    assert scores.pixels == counted.sum()
    assert scores.pixel_accuracy == pytest.approx(np.mean(label[counted] == prediction[counted]))
    # Not the same as either shortcut: dropping void-predicted pixels, or scoring every class.
    kept = counted & np.isin(prediction, evaluated)
    shortcut = ConfusionMatrix(6, ignore_index=4, evaluated=evaluated)
    shortcut.update(label[kept], prediction[kept])
    assert shortcut.scores().miou > scores.miou + 0.01
    assert len(ConfusionMatrix(6, 4).scores().iou) == 6
