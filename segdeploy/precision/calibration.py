"""Calibration data: which images, preprocessed exactly as the manifest says, in named batches.

The reader is an `onnxruntime.quantization.CalibrationDataReader`; it knows nothing about
quantization. Dataset logic stays here, range computation stays in onnxruntime.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from segdeploy.data import default_calib_dir, find_images
from segdeploy.errors import SegdeployError, UsageError
from segdeploy.evaluation.batches import BatchReader
from segdeploy.graph_spec import GraphSpec
from segdeploy.images import read_rgb

CALIB_METHODS = ("minmax", "mean-minmax", "entropy", "percentile")
# The fewest calibration images each method is trusted with, by measurement (README "How few
# calibration images", `scripts/measure_calib_size.py`): the smallest size from which, on CamVid,
# no draw of that many images lost more than 0.25 mIoU beyond calibrating on 100. mean-minmax (the
# TensorRT graph's default) needs 8: below that a draw's ranges are its few images' extremes.
# minmax was no worse on 1 image than on 100 (its ranges only widen with more images), entropy
# neither; percentile (the onnxruntime graph's default) lost 0.29 on its worst single image.
MIN_IMAGES = {"minmax": 1, "mean-minmax": 8, "entropy": 1, "percentile": 2}


@dataclass(frozen=True)
class CalibrationSet:
    """The images chosen for calibration and a fingerprint of their bytes."""

    folder: Path
    images: tuple[Path, ...]
    requested: int

    @property
    def short(self) -> bool:
        return len(self.images) < self.requested

    def fingerprint(self) -> str:
        """sha256 over the chosen files' names and contents (a changed image → new cache)."""
        digest = hashlib.sha256()
        for path in self.images:
            digest.update(os.fsencode(path.name))  # bytes: a name that is not UTF-8 must not crash
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()


def select_images(folder: Path | None, size: int, warn: Callable[[str], None] = warnings.warn) -> CalibrationSet:
    """Pick `size` images spread evenly over the folder (frames of a sequence are alike).

    Fewer images than asked is allowed: `warn` is told, and all of them are used.
    """
    if size < 1:
        raise UsageError(f"--calib-size must be at least 1, got {size}")
    if folder is None:
        folder = default_calib_dir()
        if not folder.is_dir():
            raise SegdeployError(
                f"no --calib folder given and the default calibration folder {folder} does not exist",
                "pass --calib DIR with a few hundred images like those the model will see",
            )
    folder = Path(folder)
    images = find_images(folder)
    if len(images) < size:
        warn(f"only {len(images)} calibration images in {folder} (asked for {size}); calibrating with {len(images)}")
        chosen = images
    else:
        picks = np.linspace(0, len(images) - 1, size).round().astype(int)
        chosen = [images[i] for i in sorted(set(picks.tolist()))]
    return CalibrationSet(folder=folder, images=tuple(chosen), requested=size)


def check_enough(calib: CalibrationSet, method: str) -> None:
    """Refuse a calibration set smaller than `method` is trusted with (`MIN_IMAGES`); "best" tries
    every method, so it needs the most."""
    need = MIN_IMAGES.get(method, max(MIN_IMAGES.values()))
    have = len(calib.images)
    if have >= need:
        return
    what = f"{method} calibration" if method in MIN_IMAGES else f"--calib-method {method} (it tries every method)"
    raise UsageError(f"{have} calibration image{'s are' if have != 1 else ' is'} too few for {what}: it needs at least {need} "
                     "(with fewer, the INT8 graph's accuracy depends on which images were drawn; README, "
                     "\"How few calibration images\")",
                     f"calibrate on at least {need} images like those the model will see: --calib-size {need} or more "
                     "(default 100) from a --calib folder that has them")


class CalibrationReader:
    """Named batches ({input name: array}) in onnxruntime's CalibrationDataReader protocol
    (`get_next`, and `set_range` so the calibrator can work in strides and bound its memory).

    `feeds` is any sequence of named batches: a list, or `GraphFeeds` (images read on demand
    through the one `BatchReader`). `on_batch(done, total)` is called after each batch is handed
    out (progress display).
    """

    def __init__(self, feeds, on_batch: Callable[[int, int], None] | None = None):
        self.feeds, self.on_batch = feeds, on_batch
        self.rewind()

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, len(self))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        batch = self.feed(self._next)
        self._next += 1
        self.done += 1
        if self.on_batch:
            self.on_batch(self.done, len(self))
        return batch

    def feed(self, index: int) -> dict[str, np.ndarray]:
        return self.feeds[index]

    def rewind(self) -> None:
        self.done = 0
        self.set_range(0, len(self))


class GraphFeeds:
    """The batches of a `BatchReader` as a graph's named inputs (`GraphSpec.feed`), read on demand."""

    def __init__(self, batches: BatchReader, spec: GraphSpec):
        self.batches, self.spec = batches, spec

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.spec.feed(self.batches[index])


def as_reader(data):
    """A calibration reader as given, or a list/iterable of named batches wrapped as one."""
    return data if hasattr(data, "get_next") else CalibrationReader(list(data))


def check_readable(images: tuple[Path, ...]) -> None:
    """Open every calibration image once, so a bad file fails before minutes of calibration."""
    for path in images:
        read_rgb(path)


def batch_size(manifest) -> int:
    """Images per batch for graph-against-graph work: the graph's static batch, else one."""
    spec = GraphSpec.of(manifest)
    return 1 if spec.batch_dynamic else spec.batch


def batch_reader(manifest, images, what: str = "calibration images") -> BatchReader:
    """Whole batches of `images`, shaped and preprocessed as the manifest's graph takes them."""
    return BatchReader(images, manifest.preprocess, GraphSpec.of(manifest).input_hw, batch_size(manifest),
                       whole_batches=True, what=what)


def reader_for(manifest, calib: CalibrationSet, on_batch=None) -> CalibrationReader:
    """The calibration images as onnxruntime's calibrators read them (see `GraphSpec`)."""
    return CalibrationReader(GraphFeeds(batch_reader(manifest, calib.images), GraphSpec.of(manifest)), on_batch)
