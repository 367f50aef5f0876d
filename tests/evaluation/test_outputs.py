"""One decision between logits and class maps, and the comparisons built on it."""

from __future__ import annotations

import numpy as np
import pytest

from segdeploy.errors import SegdeployError
from segdeploy.evaluation.compare import LABELS_NOTE, OutputDiff, compare_outputs, summarize
from segdeploy.evaluation.outputs import class_map_batch, is_class_map


def _logits(seed=0, shape=(2, 4, 6, 9)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_is_class_map_by_rank_and_dtype():
    assert is_class_map(np.zeros((2, 6, 9), np.int32)) and is_class_map(np.zeros((1, 6, 9), np.int64))
    assert not is_class_map(_logits())
    assert not is_class_map(np.zeros((2, 6, 9), np.float32))  # float N×H×W is not a class map
    assert not is_class_map(np.zeros((2, 4, 6, 9), np.int32))


def test_class_map_batch_takes_argmax_over_classes_never_over_height():
    logits = _logits()
    np.testing.assert_array_equal(class_map_batch(logits), logits.argmax(axis=1))
    labels = logits.argmax(axis=1).astype(np.int32)
    np.testing.assert_array_equal(class_map_batch(labels), labels)
    with pytest.raises(SegdeployError, match="N×C×H×W logits or an N×H×W class map"):
        class_map_batch(np.zeros((2, 6), np.float32))


def test_compare_outputs_of_class_maps_counts_equal_pixels():
    logits = _logits()
    labels = logits.argmax(axis=1).astype(np.int32)
    changed = labels.copy()
    changed[0, 0, :3] = (changed[0, 0, :3] + 1) % 4  # 3 of 108 pixels differ
    check = compare_outputs(labels, changed)
    assert check == {"argmax_agreement": pytest.approx(1 - 3 / 108), "labels_only": True}
    assert compare_outputs(logits, labels)["argmax_agreement"] == 1.0  # logits against their own argmax


def test_summary_and_output_diff():
    reference = _logits(1)
    candidate = reference + np.float32(0.5)  # every logit off by 0.5: argmax unchanged
    diff = OutputDiff()
    diff.update(reference, candidate)
    diff.update(reference, reference)
    summary = diff.summary()
    span = float(reference.max() - reference.min())
    assert summary["batches"] == 2 and summary["argmax_agreement"] == 1.0
    assert summary["max_abs_error"] == pytest.approx(0.5, rel=1e-6)
    assert summary["max_rel_error"] == pytest.approx(0.5 / span, rel=1e-6)
    flat = reference.reshape(2, -1).astype(np.float64)
    shifted = flat + 0.5
    cosine = (flat * shifted).sum(1) / (np.linalg.norm(flat, axis=1) * np.linalg.norm(shifted, axis=1))
    assert summary["cosine_min"] == pytest.approx(cosine.min(), rel=1e-9)
    labels = summarize([compare_outputs(reference.argmax(1), candidate.argmax(1))])
    assert labels["compared"] == LABELS_NOTE and labels["max_rel_error"] is None
