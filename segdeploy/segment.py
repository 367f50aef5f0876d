"""`segdeploy run`: images, folders or videos → colourised overlays and raw class maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from segdeploy.atomic import atomic_path
from segdeploy.timing import summarize
from segdeploy.data import IMAGE_SUFFIXES, find_images
from segdeploy.errors import SegdeployError
from segdeploy.images import read_rgb
from segdeploy.visualize import overlay

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


@dataclass
class RunResult:
    artifact: str
    frames: int
    out_dir: Path
    latency: dict


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Image files, folders of images, and video files, in the order given."""
    paths: list[Path] = []
    for item in inputs:
        if item.is_dir():
            paths.extend(find_images(item))
        elif not item.exists():
            raise SegdeployError(f"input not found: {item}")
        elif item.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
            paths.append(item)
        else:
            raise SegdeployError(f"{item} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a video ({', '.join(VIDEO_SUFFIXES)})")
    if not paths:
        raise SegdeployError("no inputs to segment")
    return paths


def frames(paths: list[Path]) -> Iterator[tuple[str, np.ndarray]]:
    """(name, HxWx3 uint8 RGB) for every image and every video frame."""
    for path in paths:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            yield from _video_frames(path)
        else:
            yield path.stem, read_rgb(path)


def _video_frames(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    try:
        import cv2
    except ImportError:
        raise SegdeployError(f"reading video {path.name} needs OpenCV", "pip install opencv-python-headless") from None
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SegdeployError(f"cannot open video {path}")
    index = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield f"{path.stem}_{index:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


def segment_inputs(deploy: Path, inputs: list[Path], out_dir: Path, *, artifact: str | None = None,
                   threads: int | None = None, alpha: float = 0.5,
                   on_frame: Callable[[str], None] | None = None) -> RunResult:
    """Segment every input; writes `<name>_overlay.png` and `<name>_labels.png` (class indices)."""
    from segdeploy.runtime import Segmenter

    paths = expand_inputs(inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    latencies, seen = [], set()
    with Segmenter(deploy, artifact=artifact, threads=threads) as segmenter:
        for name, image in frames(paths):
            name = _unique(name, seen)
            class_map = segmenter(image)
            latencies.append(segmenter.last_latency_ms)
            _save_png(overlay(image, class_map, segmenter.classes.palette, alpha), out_dir / f"{name}_overlay.png")
            _save_png(class_map, out_dir / f"{name}_labels.png")
            if on_frame is not None:
                on_frame(name)
        chosen = segmenter.artifact
    return RunResult(chosen, len(latencies), out_dir, summarize(latencies).to_dict())


def _unique(name: str, seen: set[str]) -> str:
    candidate, index = name, 1
    while candidate in seen:
        candidate, index = f"{name}_{index}", index + 1
    seen.add(candidate)
    return candidate


def _save_png(array: np.ndarray, path: Path) -> None:
    if array.ndim == 2 and array.dtype != np.uint8:
        array = array.astype(np.uint16)  # more than 256 classes: 16-bit label PNG
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
