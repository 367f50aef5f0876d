"""The one image reader: files (any mode Pillow opens) and numpy frames → H×W×3 uint8 RGB.

Calibration, bench/evaluation datasets, `segdeploy run` and `Segmenter` all read images here,
so a picture means the same thing to every step. The rules (also in the README, *Images*):

* 8-bit modes — ``L``, ``P`` (palette, with or without transparency), ``RGB``, ``CMYK``,
  ``YCbCr``, ``1`` (bi-level: 0 or 255), ``LA``, ``RGBA``, ``PA`` … — are converted to RGB by
  Pillow. **Alpha is dropped**: every pixel keeps the colour stored in the file; nothing is
  composited onto a background (a camera frame has no transparency, and the stored colours are
  what the model should see).
* **16-bit** grayscale (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``; ``I`` from a 16-bit PNG, PGM or
  TIFF) is scaled by its bit depth, not clipped: 8-bit value = 16-bit value >> 8 (the high byte,
  0–65535 → 0–255), then replicated to three channels. It is what Pillow itself does with 16-bit
  *colour* PNGs, and it maps an 8-bit picture stored as 16 bits (value × 257) back to exactly its
  8-bit values. Data that uses fewer bits in a 16-bit container (a 12-bit sensor) comes out dark:
  scale it yourself.
* 32-bit integer images (``I`` from a 32-bit TIFF) and float images (``F``) are **refused**: they
  have no defined value range (0–1? 0–255? metres?).
* **EXIF orientation is applied** (as image viewers and OpenCV's ``imread`` do), to images and
  label maps alike; labels must match the image as it is displayed.
* numpy frames (`Segmenter`): H×W×3 ``uint8`` as is, ``uint16`` scaled like files (>> 8); float
  frames, other dtypes, other shapes (gray H×W, H×W×4) and empty frames are refused before
  inference, with what to do.

Anything unreadable is one `SegdeployError` line naming the file and, where it matters, its mode.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from segdeploy.errors import SegdeployError, UsageError, os_error

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
EXIF_ORIENTATION = 0x0112
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB by the rules above; anything else is one clear error."""
    with open_image(path, "image") as img:
        try:
            rgb = _to_rgb8(img, path)
        except _DECODE_ERRORS as exc:  # Pillow decodes lazily: a truncated file fails here
            raise SegdeployError(f"cannot decode image {path}: {exc}", "is the file complete and a valid image?") from None
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise SegdeployError(f"image {path} is empty ({rgb.shape[1]}x{rgb.shape[0]} pixels)")
    return rgb


class open_image:
    """`with open_image(path, what) as img:` a Pillow image, EXIF orientation applied; errors as one line."""

    def __init__(self, path: str | os.PathLike, what: str):
        self.path, self.what, self._file = Path(path), what, None

    def __enter__(self) -> Image.Image:
        path, what = self.path, self.what
        if path.is_dir():
            raise SegdeployError(f"{what} {path} is a folder, not a file")
        try:
            self._file = Image.open(path)
            return _upright(self._file)
        except FileNotFoundError:
            raise SegdeployError(f"{what} not found: {path}") from None
        except Image.DecompressionBombError as exc:
            raise SegdeployError(f"{what} {path} is too large to decode safely: {exc}") from None
        except Image.UnidentifiedImageError:
            raise SegdeployError(f"cannot read {what} {path}: not an image file Pillow knows",
                                 "use PNG, JPEG, BMP, WebP or TIFF; remove other files from the folder") from None
        except PermissionError as exc:
            raise os_error(exc) from None
        except _DECODE_ERRORS as exc:
            raise SegdeployError(f"cannot read {what} {path}: {exc}", "is the file complete and a valid image?") from None

    def __exit__(self, *_) -> None:
        if self._file is not None:
            self._file.close()


def _upright(img: Image.Image) -> Image.Image:
    """The image as displayed: EXIF orientation 2–8 applied (most files have none: returned as is)."""
    if img.getexif().get(EXIF_ORIENTATION, 1) in (1, None):
        return img
    bits = _bits_per_sample(img)
    upright = ImageOps.exif_transpose(img)
    upright.info["segdeploy_bits"] = bits  # transposing drops the TIFF tags the bit depth is read from
    return upright


def _bits_per_sample(img: Image.Image) -> int | None:
    tags = getattr(img, "tag_v2", None)
    value = tags.get(258) if tags is not None else None  # TIFF BitsPerSample
    if isinstance(value, tuple):
        value = value[0] if value else None
    return int(value) if value else img.info.get("segdeploy_bits")


def _to_rgb8(img: Image.Image, path) -> np.ndarray:
    mode = img.mode
    if mode in SIXTEEN_BIT_MODES:
        return _gray16_to_rgb8(np.asarray(img))
    if mode == "I":
        bits = _bits_per_sample(img)
        values = np.asarray(img)
        if (bits or 16) > 16 or (values.size and (values.min() < 0 or values.max() > 65535)):
            raise SegdeployError(
                f"image {path} is a {bits or 32}-bit integer image (mode I): it has no defined 8-bit range",
                "save it as an 8-bit or 16-bit image",
            )
        return _gray16_to_rgb8(values)
    if mode == "F":
        raise SegdeployError(f"image {path} is a 32-bit float image (mode F): its value range is not defined",
                             "save it as an 8-bit or 16-bit image")
    try:
        return np.asarray(img.convert("RGB"))
    except ValueError as exc:  # a mode Pillow cannot convert to RGB (LAB, La, …)
        raise SegdeployError(f"image {path} has mode {mode}, which cannot be converted to RGB ({exc})",
                             "save it as an 8-bit RGB or grayscale image") from None


def _gray16_to_rgb8(values: np.ndarray) -> np.ndarray:
    gray = (values.astype(np.uint32) >> 8).astype(np.uint8)  # the high byte: 0..65535 → 0..255
    return np.repeat(gray[..., None], 3, axis=2)


def frame_to_rgb8(frame, what: str = "frame") -> np.ndarray:
    """A numpy frame as H×W×3 uint8 (the channel order is the caller's); refused with one line otherwise."""
    if not isinstance(frame, np.ndarray):
        raise UsageError(f"{what} is a {type(frame).__name__}, not a numpy array", "pass an H×W×3 uint8 array")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise UsageError(
            f"{what} has shape {tuple(frame.shape)}: expected H×W×3 (three colour channels)",
            "gray: np.repeat(frame[..., None], 3, axis=2); with alpha: frame[..., :3]",
        )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise UsageError(f"{what} is empty ({frame.shape[1]}x{frame.shape[0]} pixels)")
    kind, size = frame.dtype.kind, frame.dtype.itemsize
    if kind == "u" and size == 1:
        return frame
    if kind == "u" and size == 2:
        return (frame.astype(np.uint16) >> 8).astype(np.uint8)  # scaled like 16-bit files
    if kind == "f":
        raise UsageError(
            f"{what} has dtype {frame.dtype}: float frames have no defined range (0–1? 0–255?)",
            "convert it, e.g. (frame * 255).clip(0, 255).round().astype(np.uint8) for 0–1 data",
        )
    raise UsageError(f"{what} has dtype {frame.dtype}: expected uint8 (or uint16, scaled >> 8)")
