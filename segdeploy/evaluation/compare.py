"""How close one output is to another: logits or class maps, one batch at a time, and one summary.

Every comparison in segdeploy goes through here: the export's parity proof (graph vs PyTorch),
the precision graphs' drift records (FP16/INT8 graph vs FP32 graph), `--calib-method best`
and bench's logit drift (artifact vs PyTorch). A batch comparison is a small dict
(`compare_outputs`); `summarize` turns a list of them into the figures every record carries.
"""

from __future__ import annotations

import math

import numpy as np

from segdeploy.evaluation.outputs import class_map_batch, is_class_map

LABELS_NOTE = "class maps (fused argmax): pixel agreement only, no logits to compare"


def compare_outputs(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """`compare_logits`, or agreement only when either output is a class map."""
    if is_class_map(reference) or is_class_map(candidate):
        return compare_labels(reference, candidate)
    return compare_logits(reference, candidate)


def compare_labels(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Pixel agreement of two class maps (logits are reduced to their argmax first)."""
    ref, cand = class_map_batch(reference), class_map_batch(candidate)
    if ref.shape != cand.shape:
        return {"shape_mismatch": [list(ref.shape), list(cand.shape)], "argmax_agreement": 0.0}
    return {"argmax_agreement": float(np.mean(ref == cand)), "labels_only": True}


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Max abs error, error relative to the reference's logit range, argmax agreement."""
    if reference.shape != candidate.shape:
        return {"shape_mismatch": [list(reference.shape), list(candidate.shape)], "argmax_agreement": 0.0}
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    span = float(reference.max() - reference.min()) or 1.0
    agreement = float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
    max_abs = float(diff.max()) if diff.size else 0.0
    return {"max_abs_error": max_abs, "rel_error": max_abs / span, "argmax_agreement": agreement}


def cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine similarity of each image's flattened logits (1 where either is all zero)."""
    ref = reference.astype(np.float64).reshape(reference.shape[0], -1)
    cand = candidate.astype(np.float64).reshape(candidate.shape[0], -1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    return np.where(norms > 0, (ref * cand).sum(axis=1) / np.where(norms > 0, norms, 1), 1.0)


def summarize(checks: list[dict]) -> dict:
    """The one summary of per-batch comparisons: mean and worst agreement, worst absolute and
    relative error (None when class maps were compared: there are no logits)."""
    if not checks:
        return {"batches": 0}
    agreements = [c["argmax_agreement"] for c in checks]
    summary = {"batches": len(checks), "argmax_agreement": float(np.mean(agreements)),
               "min_argmax_agreement": float(min(agreements))}
    if any(c.get("labels_only") for c in checks):
        return {**summary, "max_abs_error": None, "max_rel_error": None, "compared": LABELS_NOTE}
    return {**summary, "max_abs_error": float(max(c.get("max_abs_error", math.inf) for c in checks)),
            "max_rel_error": float(max(c.get("rel_error", math.inf) for c in checks))}


class OutputDiff:
    """Candidate outputs compared with the reference's, batch by batch; `summary()` at the end."""

    def __init__(self) -> None:
        self.checks: list[dict] = []
        self._cosines: list[float] = []

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> dict:
        reference, candidate = np.asarray(reference), np.asarray(candidate)
        check = compare_outputs(reference, candidate)
        self.checks.append(check)
        if "max_abs_error" in check:
            self._cosines += cosines(reference, candidate).tolist()
        return check

    @property
    def class_maps_only(self) -> bool:
        return any(c.get("labels_only") for c in self.checks)

    def summary(self) -> dict:
        """`summarize` of every batch, plus the mean and worst per-image cosine of the logits."""
        summary = summarize(self.checks)
        if self._cosines:
            summary.update(cosine_mean=float(np.mean(self._cosines)), cosine_min=float(min(self._cosines)))
        return summary
