"""The evaluation set of a precision search: images preprocessed once, graphs scored against it.

`EvalSet.open` reads a labelled dataset (→ mIoU against its labels) or a plain image folder
(→ *agreement* mIoU against the FP32 graph's own predictions, which needs no labels).
The preprocessed batches are kept in memory: a precision search runs a dozen graphs over the
same images, and decoding/resizing them each time would cost more than the inference.

Drift is always reported as a **drop in mIoU points** relative to the FP32 graph evaluated
the same way, so one budget (`--max-miou-drop`) means the same thing for both kinds of data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import numpy as np

from segdeploy.errors import SegdeployError, UsageError
from segdeploy.evaluate import class_maps
from segdeploy.graph_spec import GraphSpec
from segdeploy.metrics import ConfusionMatrix, scores_from_counts
from segdeploy.preprocess import Preprocess


BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_SEED = 0


@dataclass
class EvalBatch:
    inputs: np.ndarray  # what the graph takes (GraphSpec): NCHW float32, or NHWC uint8 when preprocessing is fused
    geometries: list
    labels: list


class EvalSet:
    """Preprocessed evaluation batches of one deploy directory, plus the FP32 reference maps."""

    def __init__(self, manifest, batches: list[EvalBatch], description: str, labelled: bool, warning: str | None = None,
                 ignore_index: int | None = None):
        self.manifest = manifest
        self.batches = batches
        self.description = description
        self.labelled = labelled
        self.warning = warning
        self.num_classes = int(manifest.data["model"]["num_classes"])
        self.ignore_index = ignore_index
        spec = GraphSpec.of(manifest)
        self.input_name, self.input_hw = spec.input_name, spec.input_hw
        self._reference_miou: float | None = None
        self._reference_maps: list[np.ndarray] | None = None
        self._reference_counts: np.ndarray | None = None

    @property
    def images(self) -> int:
        return sum(len(b.geometries) for b in self.batches)

    @classmethod
    def open(cls, manifest, data: Path | None, limit: int | None, calib_folder: Path | None) -> "EvalSet":
        """`data` (labelled → mIoU, images → agreement); absent: the calibration folder's val split
        when it is a labelled dataset with one, else its images (with a warning: optimistic)."""
        from segdeploy.data import open_dataset

        if limit is not None and limit < 1:
            raise UsageError(f"--eval-limit must be at least 1, got {limit}")
        warning = None
        if data is not None:
            dataset, what = open_dataset(data), f"{data}"
        elif calib_folder is not None and (Path(calib_folder) / "splits" / "val.txt").is_file() and (Path(calib_folder) / "labels").is_dir():
            dataset, what = open_dataset(calib_folder, split="val"), f"{calib_folder} (val split; no --eval-data given)"
        elif calib_folder is not None:
            dataset, what = open_dataset(calib_folder, labels=False), f"{calib_folder} (calibration images; no --eval-data given)"
            warning = "evaluating on the calibration images themselves is optimistic; pass --eval-data with held-out images"
        else:
            raise UsageError("--max-miou-drop needs evaluation images: pass --eval-data DIR")
        _check_class_count(dataset, manifest, data or calib_folder)
        batches = _preprocess(dataset, manifest, limit)
        labelled = dataset.has_labels
        kind = "mIoU vs labels" if labelled else "agreement mIoU vs the FP32 graph (no labels)"
        ignore = dataset.classes.ignore_index if dataset.classes is not None else None
        return cls(manifest, batches, f"{sum(len(b.geometries) for b in batches)} images from {what}; {kind}", labelled,
                   warning, ignore)

    # -- scoring -------------------------------------------------------------------------
    def predict(self, graph: Path) -> list[np.ndarray]:
        """Class maps of `graph` (onnxruntime, CPU) over every evaluation image."""
        from segdeploy.backends.onnxruntime import OrtRunner

        maps: list[np.ndarray] = []
        with OrtRunner(graph) as runner:
            for batch in self.batches:
                output = next(iter(runner.infer({self.input_name: batch.inputs}).values()))
                maps += class_maps(output, batch.geometries, self.input_hw, self.num_classes)  # logits or labels
        return maps

    def reference(self, fp32: Path) -> float:
        """mIoU (%) of the FP32 graph: against the labels, or 100 against itself (agreement)."""
        if self._reference_maps is None:
            self._reference_maps = self.predict(fp32)
            self._reference_counts = self._per_image(self._reference_maps)
            self._reference_miou = _miou(self._reference_counts.sum(axis=0))
        return self._reference_miou

    def drop(self, graph: Path) -> tuple[float, float]:
        """(mIoU %, drop in points vs the FP32 reference) of `graph`; call `reference` first."""
        miou, drop, _ = self.drop_with_noise(graph, resamples=0)
        return miou, drop

    def drop_with_noise(self, graph: Path, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float, float | None]:
        """(mIoU %, drop, bootstrap standard error of the drop over images).

        The standard error says how much the drop would move on another set of images like
        these: a budget below it cannot be told apart from noise. Resampling uses a fixed seed
        (deterministic); images are resampled jointly for FP32 and the candidate (paired)."""
        if self._reference_maps is None:
            raise RuntimeError("EvalSet.reference(fp32) must be measured before drop()")
        counts = self._per_image(self.predict(graph))
        miou = _miou(counts.sum(axis=0))
        if resamples < 1 or len(counts) < 2:
            return miou, self._reference_miou - miou, None
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        drops = []
        for _ in range(resamples):
            pick = rng.integers(0, len(counts), len(counts))
            drops.append(_miou(self._reference_counts[pick].sum(axis=0)) - _miou(counts[pick].sum(axis=0)))
        return miou, self._reference_miou - miou, float(np.std(drops, ddof=1))

    def _per_image(self, maps: list[np.ndarray]) -> np.ndarray:
        """One confusion matrix per image (against labels, or against the FP32 maps)."""
        if self.labelled:
            truths, ignore = [label for batch in self.batches for label in batch.labels], self.ignore_index
        else:
            truths, ignore = (self._reference_maps if self._reference_maps is not None else maps), None
        out = np.zeros((len(maps), self.num_classes, self.num_classes), dtype=np.int64)
        for index, (truth, prediction) in enumerate(zip(truths, maps)):
            matrix = ConfusionMatrix(self.num_classes, ignore)
            matrix.update(truth, prediction)
            out[index] = matrix.counts
        return out


def _miou(counts: np.ndarray) -> float:
    return float(scores_from_counts(counts).miou * 100.0)


def _check_class_count(dataset, manifest, path) -> None:
    n = int(manifest.data["model"]["num_classes"])
    if dataset.has_labels and dataset.classes is not None and dataset.classes.num_classes != n:
        raise SegdeployError(f"{path} has {dataset.classes.num_classes} classes but the model outputs {n}",
                             "evaluate on data labelled with the model's classes, or an image folder (agreement)")


def _preprocess(dataset, manifest, limit: int | None) -> list[EvalBatch]:
    from segdeploy.data import iter_batches

    spec = GraphSpec.of(manifest)
    size = 4 if spec.batch_dynamic else spec.batch
    preprocess = Preprocess.from_dict(manifest.data["preprocess"])
    count = min(len(dataset), limit or len(dataset))
    count -= count % size  # a static batch needs whole batches
    if count == 0:
        raise SegdeployError(f"the model takes batches of {size} images but the evaluation set has {len(dataset)}")
    return [EvalBatch(spec.graph_input(b.canvases, preprocess) if spec.fused_preprocess else b.inputs.astype(np.float32, copy=False),
                      b.geometries, b.labels)
            for b in iter_batches(dataset, preprocess, spec.input_hw, size, limit=count)]
