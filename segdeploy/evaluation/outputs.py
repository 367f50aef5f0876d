"""What a segmentation graph or model outputs, and how it becomes class maps.

Two kinds of output exist (see docs/design.md, "Graphs and their outputs"):

* **logits**, N×C×H×W floats (a plain export, the PyTorch reference, every precision graph
  of a plain export);
* a **class map**, N×H×W integers (an export with ``--fuse-argmax``: the graph takes the
  argmax itself).

`is_class_map` is the one test that tells them apart; everything that compares or scores
outputs asks it, so no code takes an argmax over the image height by mistake.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from segdeploy.errors import SegdeployError
from segdeploy.preprocess import Geometry, Preprocess


def is_class_map(output: np.ndarray) -> bool:
    """An N×H×W integer class map (a fused-argmax graph's output), not N×C×H×W logits."""
    output = np.asarray(output)
    return output.ndim == 3 and np.issubdtype(output.dtype, np.integer)


def class_map_batch(output: np.ndarray) -> np.ndarray:
    """Logits or a class map → N×H×W class indices at the output's own resolution."""
    output = np.asarray(output)
    if is_class_map(output):
        return output
    if output.ndim != 4:
        raise SegdeployError(f"expected N×C×H×W logits or an N×H×W class map, got shape {output.shape}")
    return output.argmax(axis=1)


def class_maps(output, geometries: Sequence[Geometry], input_hw: Sequence[int], num_classes: int) -> list[np.ndarray]:
    """Logits (or a class map) of a batch → one class map per image at its original (label) size.

    The argmax is taken at model resolution; a map smaller than the model input (a stride-8
    head) is first brought to the input size with nearest-neighbour; then `Preprocess.restore`
    crops letterbox padding and resizes to the image.
    """
    output = np.asarray(output)
    labels = is_class_map(output)
    if (output.ndim != 4 and not labels) or output.shape[0] != len(geometries):
        raise SegdeployError(f"expected N x C x H x W logits for {len(geometries)} images, got shape {output.shape}")
    if not labels and output.shape[1] != num_classes:
        raise SegdeployError(f"the model outputs {output.shape[1]} classes but the dataset has {num_classes}")
    maps = class_map_batch(output)
    if maps.shape[1:] != tuple(input_hw):
        full = Geometry(original_hw=tuple(int(v) for v in input_hw), content_hw=maps.shape[1:])
        maps = np.stack([Preprocess.restore(m, full) for m in maps])
    return [Preprocess.restore(m, g) for m, g in zip(maps, geometries)]
