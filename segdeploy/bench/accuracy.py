"""Accuracy and drift of every target on the same images, through the shared preprocessing.

Built on `segdeploy.evaluate.evaluate` (streaming confusion matrices at label resolution;
the first predictor is the reference). On top of it, logit statistics against the
reference: max abs error and cosine similarity of the flattened logits, per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from segdeploy.evaluate import evaluate, takes_canvases
from segdeploy.export.parity import is_labels


LABELS_DRIFT = "n/a: the artifact outputs class maps (fused argmax), not logits"


@dataclass
class LogitDrift:
    max_abs_error: float = 0.0
    cosine_min: float = 1.0
    _cos_sum: float = 0.0
    _batches: int = 0
    labels: bool = False  # the candidate outputs class maps: no logit statistics exist

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        ref = reference.astype(np.float64).reshape(reference.shape[0], -1)
        cand = candidate.astype(np.float64).reshape(candidate.shape[0], -1)
        self.max_abs_error = max(self.max_abs_error, float(np.abs(ref - cand).max()))
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
        cosines = np.where(norms > 0, (ref * cand).sum(axis=1) / np.where(norms > 0, norms, 1), 1.0)
        self.cosine_min = min(self.cosine_min, float(cosines.min()))
        self._cos_sum += float(cosines.sum())
        self._batches += len(cosines)

    def to_dict(self) -> dict:
        if self.labels:
            return {"max_abs_error": None, "cosine_mean": None, "cosine_min": None, "note": LABELS_DRIFT}
        mean = self._cos_sum / self._batches if self._batches else None
        return {"max_abs_error": self.max_abs_error, "cosine_mean": mean, "cosine_min": self.cosine_min}


@dataclass
class DriftTracker:
    """Wraps predictors so each candidate's logits are compared with the reference's on the same batch."""

    reference_name: str
    drifts: dict[str, LogitDrift] = field(default_factory=dict)
    _last: np.ndarray | None = None

    def wrap(self, name: str, predict: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
        if name == self.reference_name:
            def reference(batch: np.ndarray) -> np.ndarray:
                self._last = np.asarray(predict(batch))
                return self._last
            return reference

        drift = self.drifts.setdefault(name, LogitDrift())

        def candidate(batch: np.ndarray) -> np.ndarray:
            logits = np.asarray(predict(batch))
            if is_labels(logits):
                drift.labels = True
            elif self._last is not None and self._last.shape == logits.shape:
                drift.update(self._last, logits)
            return logits
        if getattr(predict, "takes_canvases", False):
            takes_canvases(candidate)
        return candidate


def measure_accuracy(predictors: dict[str, Callable], reference: str, dataset, preprocess, input_hw: Sequence[int], *,
                     num_classes: int, batch_size: int, limit: int | None, on_batch=None) -> dict:
    """Evaluate every predictor (the reference first) and return per-target accuracy + drift."""
    tracker = DriftTracker(reference)
    ordered = {reference: predictors[reference], **{k: v for k, v in predictors.items() if k != reference}}
    wrapped = {name: tracker.wrap(name, fn) for name, fn in ordered.items()}
    result = evaluate(wrapped, dataset, preprocess, input_hw, batch_size=batch_size, num_classes=num_classes,
                      limit=limit, on_batch=on_batch)
    report = result.to_dict()
    per_target = report["predictors"]
    for name, drift in tracker.drifts.items():
        per_target[name]["logits_vs_reference"] = drift.to_dict()
    _add_deltas(per_target, reference, result.class_names)
    return {"images": result.images, "labelled": dataset.has_labels, "targets": per_target}


def _add_deltas(per_target: dict, reference: str, class_names: Sequence[str]) -> None:
    ref = per_target[reference]
    if "miou" not in ref:
        return
    for name, scores in per_target.items():
        if name == reference:
            continue
        scores["delta_miou"] = _sub(scores.get("miou"), ref.get("miou"))
        deltas = {c: _sub(scores["per_class_iou"].get(c), ref["per_class_iou"].get(c)) for c in class_names}
        scores["per_class_delta_iou"] = deltas
        defined = {c: d for c, d in deltas.items() if d is not None}
        if defined:
            worst = min(defined, key=defined.get)
            scores["worst_class_delta_iou"] = {"class": worst, "delta": defined[worst]}


def _sub(a, b):
    return None if a is None or b is None else round(a - b, 4)
