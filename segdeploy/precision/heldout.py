"""Measuring INT8 settings on frames kept apart: calibration, choice and confirmation.

Defaults (calibration method, bias correction) are chosen on one set of frames and reported on
another; calibration uses a third. `split_frames` makes the three disjoint sets from a dataset
with a train and a val split (CamVid's layout): calibration = `calib_size` train frames spread
evenly (exactly what `build --calib ROOT/train --calib-size N` reads), choice = the other train
frames, confirmation = every val frame.

Scoring goes through the budget search's evaluation set (`evalset.EvalSet`: per-image confusion
matrices against the labels, the FP32 graph as reference) and its paired block bootstrap
(`evalset.paired_interval`); `score` runs several predictors in one pass, among them class maps
another runtime computed (`maps_predictor`: the peers in `scripts/compare_quantizers.py`),
scored the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdeploy.manifest.names import FP32_GRAPH
from segdeploy.precision.evalset import EvalSet


@dataclass(frozen=True)
class Frames:
    """Three disjoint frame sets of one dataset."""

    calibration: tuple[Path, ...]  # image files, as `build` reads them
    choice: tuple[str, ...]  # stems of the train split
    confirmation: tuple[str, ...]  # stems of the val split

    def check_disjoint(self) -> None:
        calib = {p.stem for p in self.calibration}
        if calib & set(self.choice) or calib & set(self.confirmation) or set(self.choice) & set(self.confirmation):
            raise ValueError("calibration, choice and confirmation frames overlap")


def split_frames(root: Path, calib_size: int = 100, train: str = "train", val: str = "val") -> Frames:
    """ROOT/train + ROOT/val → calibration / choice / confirmation (see the module docstring)."""
    from segdeploy.data import open_dataset
    from segdeploy.precision.calibration import select_images

    calib = select_images(Path(root) / train, calib_size)
    used = {p.stem for p in calib.images}
    choice = tuple(stem for stem, _, _ in open_dataset(root, split=train).items if stem not in used)
    confirmation = tuple(stem for stem, _, _ in open_dataset(root, split=val).items)
    frames = Frames(calib.images, choice, confirmation)
    frames.check_disjoint()
    return frames


def frame_set(manifest, root: Path, split: str, stems, name: str) -> EvalSet:
    """The frames `stems` of ROOT's `split`, preprocessed as the manifest says, as an evaluation set
    whose FP32 reference is measured (`EvalSet.counts` then gives paired per-image matrices)."""
    from segdeploy.data import open_dataset

    dataset = open_dataset(root, split=split).subset(list(stems))
    frames = EvalSet.from_dataset(manifest, dataset, f"{root} {split}, {name} frames")
    frames.reference(manifest.verify(FP32_GRAPH.name))
    return frames


def maps_predictor(maps: np.ndarray):
    """Class maps computed elsewhere (one H×W map per frame at the model's resolution, in the frames'
    order: another runtime's) as a predictor of the evaluation engine, scored like any graph."""
    from segdeploy.evaluation.engine import Predictor

    index = iter(range(len(maps)))
    return Predictor(lambda data: np.stack([maps[next(index)] for _ in range(len(data))]))


def score(frames: EvalSet, predictors: dict, reference: str) -> dict[str, tuple[np.ndarray, float]]:
    """Each predictor on `frames` in one pass: (per-image confusion matrices against the labels, % of
    pixels agreeing with the `reference` predictor's at label resolution)."""
    from segdeploy.evaluation.engine import evaluate

    result = evaluate(predictors, frames.batches, num_classes=frames.num_classes, classes=frames.classes,
                      reference=reference, input_hw=frames.spec.input_hw, per_image=True)
    agreement = {name: result[name].agreement() for name in predictors}
    return {name: (np.stack(result[name].per_image_vs_labels),
                   100.0 if name == reference else agreement[name]["pixel_agreement"] * 100) for name in predictors}
