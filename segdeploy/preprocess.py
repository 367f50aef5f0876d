"""One preprocessing definition, shared by calibration, evaluation, bench and the runtime.

It is recorded in the deploy directory's manifest at export time, so every later
step applies exactly what the model was exported with.

Convention: ``x = (pixel * scale - mean) / std`` per channel, where ``pixel`` is the
0-255 value in the recorded channel order (RGB or BGR). With the default ``scale = 1``,
mean and std are in 0-255 units (ImageNet: mean 123.675/116.28/103.53, std
58.395/57.12/57.375).

Resize policies (image → model input):

* ``stretch``: resize to the input size, aspect ratio not kept (bilinear);
* ``letterbox``: keep the aspect ratio, fit inside the input size, pad the right and
  bottom with the mean colour (zero after normalisation).

Predictions are brought back to the original (label) resolution by undoing the same
geometry: argmax at model resolution, crop the padding (letterbox), then nearest-neighbour
resize of the class map with PIL's ``Image.NEAREST`` (`Preprocess.restore`). Evaluation
compares that map with the label at the label's own resolution.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image

from segdeploy.errors import UsageError

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
RESIZE_POLICIES = ("stretch", "letterbox")


@dataclass(frozen=True)
class Geometry:
    """How one image was mapped onto the model input, so predictions can be mapped back."""

    original_hw: tuple[int, int]
    content_hw: tuple[int, int]  # size of the resized image inside the input (no padding)


@dataclass(frozen=True)
class Preprocess:
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale: float = 1.0
    channel_order: str = "RGB"
    resize: str = "stretch"
    layout: str = "NCHW"
    dtype: str = "float32"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise UsageError("mean and std need three values (one per channel), e.g. 123.675,116.28,103.53")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std, self.scale)):
            raise UsageError(f"mean, std and scale must be finite numbers, got mean {list(self.mean)}, "
                             f"std {list(self.std)}, scale {self.scale}")
        if any(s <= 0 for s in self.std):
            raise UsageError(f"std values must be positive, got {list(self.std)}")
        if self.scale <= 0:
            raise UsageError(f"scale must be positive, got {self.scale}")
        if self.channel_order not in ("RGB", "BGR"):
            raise UsageError(f"channel order must be RGB or BGR, got {self.channel_order!r}")
        if self.resize not in RESIZE_POLICIES:
            raise UsageError(f"resize policy must be one of {', '.join(RESIZE_POLICIES)}, got {self.resize!r}")

    # -- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocess":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["mean"] = tuple(float(v) for v in known.get("mean", IMAGENET_MEAN))
        known["std"] = tuple(float(v) for v in known.get("std", IMAGENET_STD))
        return cls(**known)

    # -- image → tensor ------------------------------------------------------------------
    def resize_image(self, image: np.ndarray, input_hw: Sequence[int]) -> tuple[np.ndarray, Geometry]:
        """Resize an HxWx3 uint8 RGB image onto the model input canvas (uint8, HxWx3)."""
        h, w = int(input_hw[0]), int(input_hw[1])
        oh, ow = image.shape[:2]
        if self.resize == "stretch":
            ch, cw = h, w
        else:
            ratio = min(h / oh, w / ow)
            ch, cw = max(1, round(oh * ratio)), max(1, round(ow * ratio))
        resized = image if (oh, ow) == (ch, cw) else np.asarray(
            Image.fromarray(image).resize((cw, ch), Image.BILINEAR)
        )
        if (ch, cw) != (h, w):
            pad_colour = np.asarray(self.mean, dtype=np.float64) / self.scale
            canvas = np.empty((h, w, 3), dtype=np.uint8)
            canvas[...] = np.clip(np.round(pad_colour), 0, 255).astype(np.uint8)
            canvas[:ch, :cw] = resized
            resized = canvas
        return resized, Geometry(original_hw=(oh, ow), content_hw=(ch, cw))

    def normalize(self, canvas: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB canvas → 3xHxW float32, normalised in the recorded channel order."""
        pixels = canvas.astype(np.float32)
        if self.channel_order == "BGR":
            pixels = pixels[..., ::-1]
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        out = (pixels * np.float32(self.scale) - mean) / std
        return np.ascontiguousarray(out.transpose(2, 0, 1))

    def normalize_batch(self, canvases) -> np.ndarray:
        """N×H×W×3 uint8 canvases → N×3×H×W float32 model inputs."""
        return np.stack([self.normalize(c) for c in canvases]).astype(np.float32, copy=False)

    def __call__(self, image: np.ndarray, input_hw: Sequence[int]) -> tuple[np.ndarray, Geometry]:
        """HxWx3 uint8 RGB image → (3xHxW float32 model input, geometry to undo it)."""
        canvas, geometry = self.resize_image(check_image(image), input_hw)
        return self.normalize(canvas), geometry

    # -- prediction → label resolution ---------------------------------------------------
    @staticmethod
    def restore(class_map: np.ndarray, geometry: Geometry) -> np.ndarray:
        """Model-resolution HxW class map → the original image size (crop padding, nearest)."""
        ch, cw = geometry.content_hw
        cropped = class_map[:ch, :cw]
        oh, ow = geometry.original_hw
        if cropped.shape == (oh, ow):
            return np.ascontiguousarray(cropped)
        # PIL's NEAREST, not a pixel-centre formula of our own: PIL rounds exact ties down
        # (66 of 360 rows differ for 240 -> 360), and PIL's is what the CamVid reference
        # figure used (val mIoU 57.47 with PIL, 57.44 with the pixel-centre formula).
        small = cropped.min() >= 0 and cropped.max() < 256
        image = Image.fromarray(cropped.astype(np.uint8 if small else np.int32))
        return np.asarray(image.resize((ow, oh), Image.NEAREST)).astype(class_map.dtype, copy=False)


def check_image(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UsageError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    return image
