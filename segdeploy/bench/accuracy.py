"""Accuracy and drift of every target on the same images, through the shared preprocessing.

Built on the evaluation engine (`segdeploy.evaluation.engine`): streaming confusion matrices at
label resolution, the PyTorch reference first; every other target is also compared with
it pixel by pixel (agreement) and, where both output logits, logit by logit (max abs error,
cosine similarity of each image's logits).
"""

from __future__ import annotations

from typing import Sequence

from segdeploy.classes import ClassMapping
from segdeploy.evaluation.batches import BatchReader
from segdeploy.evaluation.engine import Predictor, evaluate

LABELS_DRIFT = "n/a: the artifact outputs class maps (fused argmax), not logits"


def measure_accuracy(predictors: dict[str, Predictor], reference: str, dataset, preprocess, input_hw: Sequence[int], *,
                     classes: ClassMapping, batch_size: int, limit: int | None, on_batch=None) -> dict:
    """Evaluate every predictor (the reference first) and return per-target accuracy + drift; `classes`
    says how the model's classes are scored against the labels (drift compares all model classes)."""
    reader = BatchReader(dataset, preprocess, input_hw, batch_size, limit=limit)
    result = evaluate(predictors, reader, classes=classes, reference=reference, input_hw=input_hw, compare_outputs=True,
                      on_batch=on_batch)
    report = result.to_dict()
    per_target = report["predictors"]
    for name, outcome in result.results.items():
        if outcome.outputs is not None:
            per_target[name]["logits_vs_reference"] = _logit_drift(outcome.outputs)
    _add_deltas(per_target, reference, result.class_names)
    return {"images": result.images, "labelled": dataset.has_labels, "targets": per_target,
            "class_mapping": classes.to_dict()}


def _logit_drift(outputs) -> dict:
    if outputs.class_maps_only:
        return {"max_abs_error": None, "cosine_mean": None, "cosine_min": None, "note": LABELS_DRIFT}
    summary = outputs.summary()
    return {"max_abs_error": summary.get("max_abs_error"), "cosine_mean": summary.get("cosine_mean"),
            "cosine_min": summary.get("cosine_min")}


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
