"""Segmentation metrics from a streaming confusion matrix.

`ConfusionMatrix` accumulates ``counts[label, prediction]`` over any number of
(label, prediction) pairs with one ``np.bincount`` per update, so a whole dataset is
evaluated in constant memory.

Conventions (the usual ones: Pascal VOC, Cityscapes, torchvision's references):

* pixels whose label is ``ignore_index`` are skipped; so are label values outside
  ``0..num_classes-1`` when ``strict=False`` (with ``strict=True`` they raise);
* IoU of class c = TP / (TP + FP + FN). A class absent from *both* the labels and the
  predictions has no IoU: it is NaN per class and **excluded from the mean**
  (``nanmean``). A class present in the predictions only has IoU 0 and counts;
* class accuracy (recall) of c = TP / (TP + FN), NaN for a class absent from the labels,
  excluded from the mean class accuracy;
* pixel accuracy = trace / total counted pixels;
* with ``evaluated`` (a subset of the class indices, see `segdeploy.classes.ClassMapping`) only
  those rows and classes are scored: pixels labelled with another class are not counted, and a
  prediction of another class on a counted pixel is a miss for its label's class and a false
  positive of none.

Every metric is reported as a fraction in 0..1; reports multiply by 100.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from segdeploy.errors import SegdeployError


class ConfusionMatrix:
    """Streaming ``num_classes x num_classes`` confusion matrix, rows = label, columns = prediction."""

    def __init__(self, num_classes: int, ignore_index: int | None = None, evaluated: Sequence[int] | None = None):
        if num_classes < 1:
            raise SegdeployError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.evaluated = None if evaluated is None else tuple(evaluated)  # classes scored (None: all)
        self.counts = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, label: np.ndarray, prediction: np.ndarray, *, strict: bool = True) -> None:
        """Add one pair (or a batch) of HxW maps of the same shape."""
        label = np.asarray(label)
        prediction = np.asarray(prediction)
        if label.shape != prediction.shape:
            raise SegdeployError(f"label shape {label.shape} and prediction shape {prediction.shape} differ")
        label = label.reshape(-1).astype(np.int64, copy=False)
        prediction = prediction.reshape(-1).astype(np.int64, copy=False)
        keep = label != self.ignore_index if self.ignore_index is not None else np.ones(label.shape, bool)
        n = self.num_classes
        valid = keep & (label >= 0) & (label < n)
        if strict and not np.array_equal(valid, keep):
            bad = np.unique(label[keep & ~valid])[:5].tolist()
            raise SegdeployError(
                f"label values {bad} are outside the {n} classes (0..{n - 1}) and not the ignore index "
                f"({self.ignore_index})",
                "check num_classes and ignore_index in classes.json",
            )
        if prediction.size and (prediction.min() < 0 or prediction.max() >= n):
            raise SegdeployError(f"prediction values must lie in 0..{n - 1}; got {prediction.min()}..{prediction.max()}")
        flat = label[valid] * n + prediction[valid]
        self.counts += np.bincount(flat, minlength=n * n).reshape(n, n)

    def merge(self, other: "ConfusionMatrix") -> None:
        """Add another matrix's counts (e.g. from a worker)."""
        if other.num_classes != self.num_classes:
            raise SegdeployError(f"cannot merge a {other.num_classes}-class matrix into a {self.num_classes}-class one")
        self.counts += other.counts

    def scores(self) -> "Scores":
        return scores_from_counts(self.counts, self.evaluated)


@dataclass(frozen=True)
class Scores:
    """Metrics of one confusion matrix; per-class arrays hold NaN where undefined."""

    iou: np.ndarray
    class_accuracy: np.ndarray
    pixel_accuracy: float
    pixels: int

    @property
    def miou(self) -> float:
        return _nanmean(self.iou)

    @property
    def mean_class_accuracy(self) -> float:
        return _nanmean(self.class_accuracy)

    def to_dict(self, names: tuple[str, ...] | list[str] | None = None) -> dict:
        """JSON-ready dict (percentages); NaN becomes None."""
        names = list(names) if names is not None else [str(i) for i in range(len(self.iou))]
        return {
            "miou": _pct(self.miou),
            "pixel_accuracy": _pct(self.pixel_accuracy),
            "mean_class_accuracy": _pct(self.mean_class_accuracy),
            "pixels": self.pixels,
            "per_class_iou": {name: _pct(v) for name, v in zip(names, self.iou)},
        }


def scores_from_counts(counts: np.ndarray, evaluated: Sequence[int] | None = None) -> Scores:
    """IoU, class accuracy and pixel accuracy of a confusion matrix (rows = label), over the
    `evaluated` classes only when given (one IoU each, in that order; see the module docstring)."""
    counts = np.asarray(counts, dtype=np.float64)
    if evaluated is not None:
        index = np.asarray(evaluated, dtype=np.int64)
        rows = counts[index]  # pixels labelled with an evaluated class, predicted as anything
        counts, label_total = rows[:, index], rows.sum(axis=1)
    else:
        label_total = counts.sum(axis=1)
    tp = np.diag(counts)
    pred_total = counts.sum(axis=0)
    union = label_total + pred_total - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        class_acc = np.where(label_total > 0, tp / label_total, np.nan)
    total = label_total.sum()
    pixel_acc = float(tp.sum() / total) if total > 0 else float("nan")
    return Scores(iou=iou, class_accuracy=class_acc, pixel_accuracy=pixel_acc, pixels=int(total))


def agreement(reference: np.ndarray, candidate: np.ndarray, num_classes: int) -> dict:
    """How closely two predictions agree (no labels needed).

    Returns the fraction of equal pixels and the mIoU of `candidate` measured against
    `reference` taken as ground truth (same NaN/absent-class convention as above).
    """
    matrix = ConfusionMatrix(num_classes)
    matrix.update(reference, candidate)
    return agreement_from_counts(matrix.counts)


def agreement_from_counts(counts: np.ndarray) -> dict:
    """Agreement metrics of a reference-vs-candidate confusion matrix (as fractions)."""
    scores = scores_from_counts(counts)
    return {"pixel_agreement": scores.pixel_accuracy, "miou_vs_reference": scores.miou, "pixels": scores.pixels}


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _pct(value: float) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value) * 100.0, 4)
