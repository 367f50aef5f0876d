"""What a deploy directory's graph takes and gives, read from its manifest in one place.

Every consumer (calibration, parity batches, bench, the Segmenter, TensorRT profiles) asks
`GraphSpec.of(manifest)` for the input size, layout and dtype and for whether the output is
logits or a class map, instead of indexing ``input.shape`` itself.

Two kinds of graph exist:

* unfused (the default): ``input`` N×3×H×W float32, preprocessed by the caller; ``logits``
  N×C×H×W float32;
* fused (``segdeploy export --fuse-preprocess/--fuse-argmax``): the input may be N×H×W×3
  uint8, the resized RGB canvas (the graph casts, normalises and transposes); the output
  may be ``labels`` N×H×W int32 (the graph takes the argmax).

Manifests written before fusion existed have no layout/kind fields: they read as unfused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from segdeploy.preprocess import Preprocess


@dataclass(frozen=True)
class GraphSpec:
    input_name: str
    input_shape: tuple  # as the graph takes it (ints; axis names stay as recorded)
    input_layout: str  # "NCHW" (float32, preprocessed) or "NHWC" (uint8 canvas)
    input_dtype: str
    output_name: str
    output_kind: str  # "logits" (N×C×H×W) or "labels" (N×H×W class indices)
    output_dtype: str
    dynamic_axes: frozenset = frozenset()

    @classmethod
    def of(cls, manifest) -> "GraphSpec":
        """The spec recorded in a `Manifest` (its `input` and `output` records)."""
        entry, out = manifest.input, manifest.output
        return cls(
            input_name=entry.name,
            input_shape=tuple(entry.shape),
            input_layout=entry.layout or "NCHW",
            input_dtype=entry.dtype,
            output_name=out.name,
            output_kind=out.kind or "logits",
            output_dtype=out.dtype,
            dynamic_axes=frozenset(entry.dynamic_axes),
        )

    # -- what the graph does itself --------------------------------------------------------------
    @property
    def fused_preprocess(self) -> bool:
        return self.input_layout == "NHWC"

    @property
    def labels(self) -> bool:
        """The graph outputs class indices (fused argmax), not logits."""
        return self.output_kind == "labels"

    @property
    def input_hw(self) -> tuple[int, int]:
        h, w = (1, 2) if self.fused_preprocess else (2, 3)
        return int(self.input_shape[h]), int(self.input_shape[w])

    @property
    def batch(self) -> int:
        return int(self.input_shape[0])

    @property
    def batch_dynamic(self) -> bool:
        return "batch" in self.dynamic_axes

    def unfused(self) -> "GraphSpec":
        """The same model as a plain graph would take it (the PyTorch reference's view)."""
        n, (h, w) = self.input_shape[0], self.input_hw
        return GraphSpec(self.input_name, (n, 3, h, w), "NCHW", "float32", "logits", "logits", "float32",
                         self.dynamic_axes)

    # -- feeding it -------------------------------------------------------------------------------
    def shape_for(self, batch: int, hw: Sequence[int] | None = None) -> tuple[int, int, int, int]:
        h, w = hw or self.input_hw
        return (batch, h, w, 3) if self.fused_preprocess else (batch, 3, h, w)

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.fused_preprocess else np.float32)

    def graph_input(self, canvases: np.ndarray, preprocess: Preprocess) -> np.ndarray:
        """N×H×W×3 uint8 resized RGB canvases → what the graph takes (as is, or normalised NCHW)."""
        if self.fused_preprocess:
            return np.ascontiguousarray(canvases, dtype=np.uint8)
        return preprocess.normalize_batch(canvases)

    def feed(self, batch) -> dict[str, np.ndarray]:
        """A `segdeploy.evaluation.batches.Batch` as the graph's named input."""
        return {self.input_name: batch.canvases if self.fused_preprocess else batch.inputs}

    def random_input(self, rng: np.random.Generator, shape: Sequence[int] | None = None) -> np.ndarray:
        """Seeded noise of the graph's input kind: uint8 pixels, or N(0, 1) preprocessed values."""
        shape = tuple(shape or self.input_shape)
        if self.fused_preprocess:
            return rng.integers(0, 256, size=shape, dtype=np.uint8)
        return rng.standard_normal(shape).astype(np.float32)
