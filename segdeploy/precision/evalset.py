"""The evaluation set of a precision search: images preprocessed once, graphs scored against it.

`EvalSet.open` reads a labelled dataset (→ mIoU against its labels) or a plain image folder
(→ *agreement* mIoU against the FP32 graph's own predictions, which needs no labels).
The preprocessed batches are kept in memory: a precision search runs a dozen graphs over the
same images, and decoding/resizing them each time would cost more than the inference.

Drift is always reported as a **drop in mIoU points** relative to the FP32 graph evaluated
the same way, so one budget (`build --miou-budget`) means the same thing for both kinds of data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segdeploy.classes import ClassMapping, match_classes
from segdeploy.errors import UsageError
from segdeploy.evaluation.batches import Batch, BatchReader
from segdeploy.evaluation.engine import PredictorResult, evaluate, graph_predictor
from segdeploy.graph_spec import GraphSpec
from segdeploy.metrics import ConfusionMatrix, scores_from_counts

BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_SEED = 0
EVAL_BATCH = 4  # images per batch when the graph's batch is dynamic


class EvalSet:
    """Preprocessed evaluation batches of one deploy directory, plus the FP32 reference maps."""

    def __init__(self, manifest, batches: list[Batch], description: str, labelled: bool, warning: str | None = None,
                 classes: ClassMapping | None = None):
        self.manifest = manifest
        self.batches = batches
        self.description = description
        self.labelled = labelled
        self.warning = warning
        self.num_classes = manifest.model.num_classes
        self.classes = classes  # how model classes are scored against the labels (labelled data)
        self.evaluated = classes.evaluated if labelled and classes is not None else None  # None: all classes
        self.spec = GraphSpec.of(manifest)
        self.bootstrap_block = 1  # consecutive images resampled together (`bootstrap_drops`)
        self._reference_miou: float | None = None
        self._reference_maps: list[np.ndarray] | None = None
        self._reference_counts: np.ndarray | None = None

    @property
    def images(self) -> int:
        return sum(b.size for b in self.batches)

    @property
    def reference_miou(self) -> float:
        """The FP32 graph's mIoU measured by `reference`."""
        if self._reference_miou is None:
            raise RuntimeError("EvalSet.reference(fp32) must be measured first")
        return self._reference_miou

    @property
    def reference_counts(self) -> np.ndarray:
        """The FP32 graph's per-image confusion matrices measured by `reference`."""
        if self._reference_counts is None:
            raise RuntimeError("EvalSet.reference(fp32) must be measured first")
        return self._reference_counts

    def feed(self, index: int = 0) -> dict[str, np.ndarray]:
        """Batch `index` as the graph's named input."""
        return self.spec.feed(self.batches[index])

    @classmethod
    def open(cls, manifest, data: Path | None, limit: int | None, calib_folder: Path | None) -> "EvalSet":
        """`data` (labelled → mIoU, images → agreement); absent: the calibration folder's val split
        when it is a labelled dataset with one, else its images (with a warning: optimistic)."""
        if limit is not None and limit < 1:
            raise UsageError(f"--eval-limit must be at least 1, got {limit}")
        dataset, what, warning = eval_dataset(manifest, data, calib_folder)
        return cls.from_dataset(manifest, dataset, what, limit, warning)

    @classmethod
    def from_dataset(cls, manifest, dataset, what: str, limit: int | None = None, warning: str | None = None) -> "EvalSet":
        """The first `limit` images of `dataset` (whole batches), read once through the one batch reader."""
        spec = GraphSpec.of(manifest)
        classes = _class_mapping(dataset, manifest)
        reader = BatchReader(dataset, manifest.preprocess, spec.input_hw,
                             EVAL_BATCH if spec.batch_dynamic else spec.batch, limit=limit, whole_batches=True,
                             what="evaluation images")
        labelled = dataset.has_labels
        kind = "mIoU vs labels" if labelled else "agreement mIoU vs the FP32 graph (no labels)"
        if labelled and classes is not None and not classes.identity:
            kind += f" over the data's {len(classes.evaluated)} evaluated classes (model class {classes.listed} not evaluated)"
        return cls(manifest, list(reader), f"{reader.images} images from {what}; {kind}", labelled, warning, classes)

    # -- scoring -------------------------------------------------------------------------
    def _evaluate(self, graph: Path) -> PredictorResult:
        """`graph` (onnxruntime, CPU) over every evaluation image: per-image counts against the labels,
        or against the FP32 reference's maps when unlabelled."""
        from segdeploy.backends.onnxruntime import OrtRunner

        with OrtRunner(graph) as runner:
            result = evaluate({"graph": graph_predictor(runner, self.spec)}, self.batches, num_classes=self.num_classes,
                              classes=self.classes, reference=None if self.labelled else self._reference_maps,
                              input_hw=self.spec.input_hw, per_image=True, keep_maps=self._reference_maps is None)
        return result["graph"]

    def reference(self, fp32: Path) -> float:
        """mIoU (%) of the FP32 graph: against the labels, or 100 against itself (agreement)."""
        if self._reference_maps is None:
            result = self._evaluate(fp32)
            self._reference_maps = result.maps
            self._reference_counts = np.stack(result.per_image_vs_labels if self.labelled
                                              else [_self_agreement(m, self.num_classes) for m in result.maps])
            self._reference_miou = miou_percent(self._reference_counts.sum(axis=0), self.evaluated)
        return self._reference_miou

    def drop(self, graph: Path) -> tuple[float, float]:
        """(mIoU %, drop in points vs the FP32 reference) of `graph`; call `reference` first."""
        miou, drop, _ = self.drop_with_noise(graph, resamples=0)
        return miou, drop

    def drop_with_noise(self, graph: Path, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float, float | None]:
        """(mIoU %, drop, bootstrap standard error of the drop over images).

        The standard error says how much the drop would move on another set of images like
        these: a budget below it cannot be told apart from noise. Resampling uses a fixed seed
        (deterministic); images are resampled jointly for FP32 and the candidate (paired), in
        circular blocks of `bootstrap_block` consecutive images (1: each image on its own)."""
        reference, counts = self.counts(graph)
        miou = miou_percent(counts.sum(axis=0), self.evaluated)
        if resamples < 1 or len(counts) < 2:
            return miou, self._reference_miou - miou, None
        drops = bootstrap_drops(reference, counts, self.bootstrap_block, resamples, evaluated=self.evaluated)
        return miou, self._reference_miou - miou, float(np.std(drops, ddof=1))

    def counts(self, graph: Path) -> tuple[np.ndarray, np.ndarray]:
        """Per-image confusion matrices (images × C × C, in evaluation order) of the FP32 reference and
        of `graph`, for paired resampling; call `reference` first."""
        if self._reference_maps is None:
            raise RuntimeError("EvalSet.reference(fp32) must be measured before drop()")
        result = self._evaluate(graph)
        return self._reference_counts, np.stack(result.per_image_vs_labels if self.labelled else result.per_image_vs_reference)


def bootstrap_drops(reference: np.ndarray, counts: np.ndarray, block: int = 1, resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = BOOTSTRAP_SEED, evaluated=None) -> np.ndarray:
    """mIoU drops (points) of `counts` against `reference` (per-image confusion matrices, paired) over
    `resamples` circular block-bootstrap resamples: blocks of `block` consecutive images start at
    uniformly drawn images and wrap around, so every image is equally likely to be drawn; mIoU
    averages the `evaluated` classes (None: all). Consecutive
    video frames are alike; resampling them in blocks keeps that likeness inside each resample
    instead of treating near-duplicates as independent evidence. `block` 1 is the plain bootstrap."""
    n = len(counts)
    block = max(1, min(block, n))
    rng = np.random.default_rng(seed)
    drops = np.empty(resamples)
    for r in range(resamples):
        starts = rng.integers(0, n, -(-n // block))
        pick = (starts[:, None] + np.arange(block)).ravel()[:n] % n
        drops[r] = miou_percent(reference[pick].sum(axis=0), evaluated) - miou_percent(counts[pick].sum(axis=0), evaluated)
    return drops


def paired_interval(reference: np.ndarray, counts: np.ndarray, block: int = 1, resamples: int = BOOTSTRAP_RESAMPLES,
                    level: float = 0.95, evaluated=None) -> dict:
    """The mIoU drop of `counts` against `reference` (per-image matrices of the same images) with the
    standard error and `level` interval of a paired circular block bootstrap (`bootstrap_drops`)."""
    drop = miou_percent(reference.sum(axis=0), evaluated) - miou_percent(counts.sum(axis=0), evaluated)
    drops = bootstrap_drops(reference, counts, block, resamples, evaluated=evaluated)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(drops, [tail, 100 - tail])
    return {"drop": drop, "standard_error": float(np.std(drops, ddof=1)), "low": float(low), "high": float(high),
            "images": len(counts), "block": block}


def eval_dataset(manifest, data: Path | None, calib_folder: Path | None):
    """(dataset, description, warning) of a precision search's evaluation images (see `EvalSet.open`)."""
    from segdeploy.data import open_dataset

    warning = None
    if data is not None:
        dataset, what = open_dataset(data), f"{data}"
    elif calib_folder is not None and (Path(calib_folder) / "splits" / "val.txt").is_file() and (Path(calib_folder) / "labels").is_dir():
        dataset, what = open_dataset(calib_folder, split="val"), f"{calib_folder} (val split; no --eval-data given)"
    elif calib_folder is not None:
        dataset, what = open_dataset(calib_folder, labels=False), f"{calib_folder} (calibration images; no --eval-data given)"
        warning = "evaluating on the calibration images themselves is optimistic; pass --eval-data with held-out images"
    else:
        raise UsageError("--miou-budget needs evaluation images: pass --eval-data DIR")
    return dataset, what, warning


def _self_agreement(class_map: np.ndarray, num_classes: int) -> np.ndarray:
    """The reference against itself (unlabelled data): its per-image agreement counts."""
    matrix = ConfusionMatrix(num_classes)
    matrix.update(class_map, class_map)
    return matrix.counts


def miou_percent(counts: np.ndarray, evaluated=None) -> float:
    return float(scores_from_counts(counts, evaluated).miou * 100.0)


def _class_mapping(dataset, manifest) -> ClassMapping | None:
    """How the model's classes are scored on `dataset`'s labels (`match_classes`: one line for a mismatch)."""
    if not dataset.has_labels or dataset.classes is None:
        return None
    return match_classes(manifest.classes, dataset.classes, dataset.root)
