"""Accuracy of one or more predictors over a labelled dataset, at label resolution.

A *predictor* is any callable ``predict(batch) -> logits``: NCHW float32 in, N x C x h x w
out (numpy or torch). `torch_predictor` wraps an nn.Module; backends provide their own.
A predictor marked with `takes_canvases` (a fused-preprocess graph) is given the resized
N x H x W x 3 uint8 images instead; one may return N x h x w class indices instead of logits
(a fused-argmax graph).

Protocol (that of the CamVid figure in ``shared/models/README.md``): preprocess with the
shared `Preprocess`, argmax over classes **at model resolution**, then
`Preprocess.restore` (crop any letterbox padding, nearest-neighbour resize) back to the
label's size, and accumulate a streaming confusion matrix with the ignore index skipped.
If a model's logits are smaller than its input (e.g. stride-8 heads), the class map is
first brought to the input size with nearest-neighbour.

With several predictors, the first is the *reference*: every other one also gets an
agreement matrix against it (pixel agreement, mIoU vs reference) — no labels needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from segdeploy.data import Dataset, iter_batches
from segdeploy.errors import SegdeployError
from segdeploy.metrics import ConfusionMatrix, Scores, agreement_from_counts
from segdeploy.preprocess import Geometry, Preprocess

Predictor = Callable[[np.ndarray], object]


@dataclass
class PredictorResult:
    name: str
    matrix: ConfusionMatrix | None  # vs labels (None for an unlabelled dataset)
    agreement: ConfusionMatrix | None  # vs the reference predictor (None for the reference)
    seconds: float = 0.0  # time spent inside predict()

    @property
    def scores(self) -> Scores | None:
        return self.matrix.scores() if self.matrix is not None else None

    def to_dict(self, names: Sequence[str] | None = None) -> dict:
        out: dict = {"name": self.name, "predict_seconds": round(self.seconds, 3)}
        if self.matrix is not None:
            out.update(self.matrix.scores().to_dict(names))
        if self.agreement is not None:
            agree = agreement_from_counts(self.agreement.counts)
            out["pixel_agreement"] = round(agree["pixel_agreement"] * 100, 4)
            out["miou_vs_reference"] = round(agree["miou_vs_reference"] * 100, 4)
        return out


@dataclass
class EvaluationResult:
    results: dict[str, PredictorResult]
    images: int
    class_names: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {"images": self.images, "predictors": {k: r.to_dict(self.class_names) for k, r in self.results.items()}}


def evaluate(
    predictors: Predictor | Mapping[str, Predictor],
    dataset: Dataset,
    preprocess: Preprocess,
    input_hw: Sequence[int],
    *,
    batch_size: int = 8,
    num_classes: int | None = None,
    limit: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> EvaluationResult:
    """Run every predictor over the dataset once, streaming confusion matrices.

    `on_batch(n)` is called after each batch with the number of images it held (for
    progress bars). `num_classes` defaults to the dataset's classes.
    """
    if callable(predictors) and not isinstance(predictors, Mapping):
        predictors = {"model": predictors}
    if not predictors:
        raise SegdeployError("nothing to evaluate: no predictor given")
    classes = dataset.classes
    n = num_classes or (classes.num_classes if classes is not None else None)
    if n is None:
        raise SegdeployError(f"{dataset.root} has no classes.json; pass the number of classes")
    ignore = classes.ignore_index if classes is not None else None
    names = list(predictors)
    results = {
        name: PredictorResult(
            name,
            ConfusionMatrix(n, ignore) if dataset.has_labels else None,
            ConfusionMatrix(n) if i > 0 else None,
        )
        for i, name in enumerate(names)
    }
    images = 0
    for batch in iter_batches(dataset, preprocess, input_hw, batch_size, limit=limit):
        reference_maps = None
        for name in names:
            start = time.perf_counter()
            predict = predictors[name]
            logits = predict(batch.canvases if getattr(predict, "takes_canvases", False) else batch.inputs)
            results[name].seconds += time.perf_counter() - start
            maps = class_maps(logits, batch.geometries, input_hw, n)
            _accumulate(results[name], maps, batch.labels, reference_maps)
            reference_maps = reference_maps if reference_maps is not None else maps
        images += len(batch.stems)
        if on_batch is not None:
            on_batch(len(batch.stems))
    names_t = tuple(classes.names) if classes is not None else tuple(str(i) for i in range(n))
    return EvaluationResult(results, images, names_t)


def _accumulate(result: PredictorResult, maps, labels, reference_maps) -> None:
    for index, prediction in enumerate(maps):
        if result.matrix is not None:
            result.matrix.update(labels[index], prediction)
        if result.agreement is not None:
            result.agreement.update(reference_maps[index], prediction)


def class_maps(logits, geometries: Sequence[Geometry], input_hw: Sequence[int], num_classes: int) -> list[np.ndarray]:
    """N x C x h x w logits (or N x h x w class indices) → one class map per image at its original (label) size."""
    logits = _to_numpy(logits)
    from segdeploy.export.parity import is_labels

    labels = is_labels(logits)
    if (logits.ndim != 4 and not labels) or logits.shape[0] != len(geometries):
        raise SegdeployError(f"expected N x C x H x W logits for {len(geometries)} images, got shape {logits.shape}")
    if not labels and logits.shape[1] != num_classes:
        raise SegdeployError(f"the model outputs {logits.shape[1]} classes but the dataset has {num_classes}")
    argmax = logits if labels else logits.argmax(axis=1)
    if argmax.shape[1:] != tuple(input_hw):
        full = Geometry(original_hw=tuple(int(v) for v in input_hw), content_hw=argmax.shape[1:])
        argmax = np.stack([Preprocess.restore(m, full) for m in argmax])
    return [Preprocess.restore(m, g) for m, g in zip(argmax, geometries)]


def _to_numpy(logits) -> np.ndarray:
    from segdeploy.export.wrapper import pick_logits

    logits = pick_logits(logits)
    if hasattr(logits, "detach"):
        logits = logits.detach().cpu().numpy()
    return np.asarray(logits)


def takes_canvases(predict: Predictor) -> Predictor:
    """Mark `predict` as taking the resized uint8 NHWC images (a graph with fused preprocessing)."""
    predict.takes_canvases = True
    return predict


def torch_predictor(module) -> Predictor:
    """Wrap an eval-mode nn.Module as a predictor (no grad, CPU, first/`out` output)."""
    import torch

    module.eval()

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return _to_numpy(module(torch.from_numpy(batch)))

    return predict
