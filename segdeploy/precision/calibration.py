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

from segdeploy.data import find_images
from segdeploy.errors import SegdeployError, UsageError
from segdeploy.graph_spec import GraphSpec
from segdeploy.images import read_rgb
from segdeploy.preprocess import Preprocess

CALIB_METHODS = ("minmax", "entropy", "percentile")


def default_calib_dir() -> Path:
    """The project's `calib/` folder at the repository root (beside the package)."""
    import segdeploy

    return Path(segdeploy.__file__).resolve().parents[1] / "calib"


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


class ImageBatchReader:
    """Named batches of preprocessed images for onnxruntime's calibrators.

    `on_batch(done, total)` is called after each batch is handed out (progress display).
    Supports `set_range` so the calibrator can work in strides and bound its memory.
    """

    def __init__(
        self,
        images: tuple[Path, ...],
        preprocess: Preprocess,
        *,
        input_name: str,
        batch: int,
        input_hw: tuple[int, int],
        on_batch: Callable[[int, int], None] | None = None,
        spec: GraphSpec | None = None,
    ):
        if len(images) < batch:
            raise SegdeployError(f"the model takes batches of {batch} images but only {len(images)} calibration images were found")
        self.images = images
        self.preprocess = preprocess
        self.input_name = input_name
        self.batch = batch
        self.input_hw = input_hw
        self.on_batch = on_batch
        self.spec = spec  # None: preprocessed NCHW float32; else whatever that graph takes (uint8 NHWC when fused)
        self.done = 0
        self.set_range(0, len(self))

    def __len__(self) -> int:
        return len(self.images) // self.batch

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, len(self))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        batch = self.load_batch(self._next)
        self._next += 1
        self.done += 1
        if self.on_batch:
            self.on_batch(self.done, len(self))
        return batch

    def load_batch(self, index: int) -> dict[str, np.ndarray]:
        """Batch `index` as {input name: N×3×H×W float32}, or N×H×W×3 uint8 for a fused-preprocess graph."""
        paths = self.images[index * self.batch : (index + 1) * self.batch]
        if self.spec is not None:
            canvases = np.stack([self.preprocess.resize_image(read_rgb(path), self.input_hw)[0] for path in paths])
            return {self.input_name: self.spec.graph_input(canvases, self.preprocess)}
        arrays = [self.preprocess(read_rgb(path), self.input_hw)[0] for path in paths]
        return {self.input_name: np.stack(arrays).astype(np.float32, copy=False)}

    def rewind(self) -> None:
        self.done = 0
        self.set_range(0, len(self))


class BatchListReader:
    """Any sequence of named batches ({input name: array}) as a calibration reader."""

    def __init__(self, batches):
        self.batches = list(batches)
        self.set_range(0, len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, len(self.batches))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        self._next += 1
        return self.batches[self._next - 1]


def as_reader(data):
    """A calibration reader as given, or a list/iterable of named batches wrapped as one."""
    return data if hasattr(data, "get_next") else BatchListReader(data)


def check_readable(images: tuple[Path, ...]) -> None:
    """Open every calibration image once, so a bad file fails before minutes of calibration."""
    for path in images:
        read_rgb(path)


def reader_for(manifest, calib: CalibrationSet, on_batch=None) -> ImageBatchReader:
    """An `ImageBatchReader` shaped and preprocessed as the manifest's input says (see `GraphSpec`)."""
    spec = GraphSpec.of(manifest)
    return ImageBatchReader(
        calib.images,
        Preprocess.from_dict(manifest.data["preprocess"]),
        input_name=spec.input_name,
        batch=1 if spec.batch_dynamic else spec.batch,
        input_hw=spec.input_hw,
        on_batch=on_batch,
        spec=spec,
    )
