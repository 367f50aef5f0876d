"""The one batch reader: images (a dataset or image files) → preprocessed batches.

Calibration, the precision graphs' drift checks, `--calib-method best`, the INT8 budget
search, bench, training validation and `inspect precision` all read images through
`BatchReader`, so each applies exactly the manifest's preprocessing (`Preprocess`) and
feeds a graph what it takes (`GraphSpec.feed`: float32 NCHW, or the uint8 NHWC canvas of a
graph with fused preprocessing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from segdeploy.data import Dataset
from segdeploy.errors import SegdeployError
from segdeploy.preprocess import Geometry, Preprocess, check_image


@dataclass(frozen=True)
class Batch:
    """One batch of images in every form a consumer needs."""

    stems: list[str]
    inputs: np.ndarray | None  # N×3×H×W float32, preprocessed (what a plain graph takes)
    geometries: list[Geometry] | None  # how each image was mapped onto the input (None: synthetic input)
    labels: list[np.ndarray | None]
    canvases: np.ndarray | None = None  # N×H×W×3 uint8: the resized images (what a fused-preprocess graph takes)

    @property
    def size(self) -> int:
        return len(self.stems)


def image_dataset(paths: Sequence[Path]) -> Dataset:
    """Image files (no labels) as a dataset, in the order given."""
    paths = [Path(p) for p in paths]
    root = paths[0].parent if paths else Path(".")
    return Dataset([(p.stem, p, None) for p in paths], None, root=root, format="images")


class BatchReader:
    """Preprocessed batches of a dataset, read on demand (random access, so calibrators can stride).

    `limit` keeps the first N images; `whole_batches` drops a last, partial batch (a graph
    with a static batch size takes only whole ones) and refuses data that has none.
    """

    def __init__(self, source: Dataset | Sequence[Path], preprocess: Preprocess, input_hw: Sequence[int],
                 batch_size: int, *, limit: int | None = None, whole_batches: bool = False, what: str = "images"):
        if batch_size < 1:
            raise SegdeployError(f"batch size must be >= 1, got {batch_size}")
        self.dataset = source if isinstance(source, Dataset) else image_dataset(source)
        self.preprocess, self.input_hw, self.batch_size = preprocess, tuple(int(v) for v in input_hw), batch_size
        count = len(self.dataset) if limit is None else min(limit, len(self.dataset))
        if whole_batches:
            if count < batch_size:
                raise SegdeployError(f"the model takes batches of {batch_size} images but only {count} {what} were found")
            count -= count % batch_size
        self.images = count

    def __len__(self) -> int:
        return -(-self.images // self.batch_size)

    def __getitem__(self, index: int) -> Batch:
        if not 0 <= index < len(self):
            raise IndexError(index)
        first = index * self.batch_size
        samples = [self.dataset[i] for i in range(first, min(first + self.batch_size, self.images))]
        canvases, geometries = [], []
        for sample in samples:
            canvas, geometry = self.preprocess.resize_image(check_image(sample.image), self.input_hw)
            canvases.append(canvas)
            geometries.append(geometry)
        return Batch(stems=[s.stem for s in samples],
                     inputs=self.preprocess.normalize_batch(canvases),
                     geometries=geometries, labels=[s.label for s in samples], canvases=np.stack(canvases))

    def __iter__(self) -> Iterator[Batch]:
        for index in range(len(self)):
            yield self[index]


def synthetic_batches(spec, count: int = 2, seed: int = 20251123) -> list[Batch]:
    """Seeded inputs of the graph's kind (`GraphSpec`): uint8 pixels, or N(0, 1) preprocessed values.
    A fallback for graph-against-graph checks when no images are at hand (model resolution only)."""
    rng = np.random.default_rng(seed)
    batches = []
    for index in range(count):
        data = spec.random_input(rng)
        stems = [f"random_{index}_{i}" for i in range(data.shape[0])]
        batches.append(Batch(stems, None if spec.fused_preprocess else data, None, [None] * len(stems),
                             data if spec.fused_preprocess else None))
    return batches
