"""`Segmenter`: a deploy directory (or one artifact) → class maps, for robot pipelines.

    from segdeploy import Segmenter

    with Segmenter("deploy/unet") as seg:          # picks the best artifact that runs here
        labels = seg(frame_rgb)                     # HxW uint8 class map at the frame's size
        labels, probs = seg(frame_bgr, bgr=True, probabilities=True)
        print(seg.artifact, seg.last_latency_ms)

Artifact choice (unless `artifact=` names one, `backends.registry.preference`): a TensorRT
engine when one can run here (INT8, then FP16, then FP32), then on x86 an OpenVINO artifact
when openvino is installed (INT8, BF16, FP16, FP32), else onnxruntime (the CPU-friendly INT8
graph, then FP32, then FP16); off x86, OpenVINO's artifacts come last. Preprocessing and the
class count come from the manifest. A graph exported with `--fuse-preprocess` is fed the
resized uint8 frame (it normalises itself); one exported with `--fuse-argmax` returns its
class map directly (no probabilities).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from segdeploy.backends.registry import preference
from segdeploy.backends.select import cannot_run_here, make_runner
from segdeploy.errors import SegdeployError
from segdeploy.evaluation.outputs import class_map_batch, is_class_map
from segdeploy.graph_spec import GraphSpec
from segdeploy.images import frame_to_rgb8
from segdeploy.manifest import FILENAME, Manifest
from segdeploy.preprocess import Preprocess

def _open_manifest(path: Path) -> tuple[Manifest, str | None]:
    """A deploy directory, or an artifact file inside one (then that artifact is chosen)."""
    if path.is_file():
        manifest = Manifest.load(path.parent)
        names = [n for n, e in manifest.artifacts.items() if e.file == path.name]
        if not names:
            raise SegdeployError(f"{path.name} is not an artifact recorded in {path.parent / FILENAME}")
        return manifest, names[0]
    return Manifest.load(path), None


def choose_artifact(manifest: Manifest) -> str:
    """The preferred artifact that can run on this machine (`backends.registry.preference`)."""
    runnable = [n for n, entry in manifest.artifacts.items() if cannot_run_here(entry) is None]
    for name in preference():
        if name in runnable:
            return name
    if runnable:
        return runnable[0]
    raise SegdeployError(f"no artifact in {manifest.directory} can run here", "build one for onnxruntime")


class Segmenter:
    """Image(s) in, class map(s) out at the image's own size; optionally class probabilities."""

    def __init__(self, path: str | Path, *, artifact: str | None = None, threads: int | None = None,
                 providers: list[str] | None = None):
        self.manifest, chosen = _open_manifest(Path(path))
        self.artifact = artifact or chosen or choose_artifact(self.manifest)
        entry = self.manifest.artifact(self.artifact)
        reason = cannot_run_here(entry)
        if reason:
            raise SegdeployError(f"artifact {self.artifact} cannot run here: {reason}")
        self.manifest.verify(self.artifact)
        self.preprocess = self.manifest.preprocess
        self.spec = GraphSpec.of(self.manifest)  # fused graphs: uint8 NHWC in and/or class map out
        self.input_name = self.spec.input_name
        self.input_hw = self.spec.input_hw
        self.batch_dynamic = self.spec.batch_dynamic
        self.num_classes = self.manifest.model.num_classes
        self.classes = self.manifest.classes  # names, palette, ignore_index
        self.last_latency_ms: float | None = None
        self._buffer: np.ndarray | None = None
        self._runner = make_runner(self.manifest, self.artifact, threads=threads, providers=providers).activate()

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        if self._runner is not None:
            self._runner.deactivate()
            self._runner = None

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    # -- inference -------------------------------------------------------------------------------
    def __call__(self, image: np.ndarray, *, bgr: bool = False, probabilities: bool = False):
        """HxWx3 uint8 image → HxW class map (uint8 when the classes fit, else int32) [, CxHxW probabilities].

        uint16 frames are scaled to 8 bits (>> 8); float, empty and non-3-channel frames are refused
        (`segdeploy.images.frame_to_rgb8`)."""
        return self.predict_batch([image], bgr=bgr, probabilities=probabilities)[0]

    def predict_batch(self, images: Sequence[np.ndarray], *, bgr: bool = False, probabilities: bool = False) -> list:
        if self._runner is None:
            raise SegdeployError("this Segmenter is closed")
        if probabilities and self.spec.labels:
            raise SegdeployError(
                f"artifact {self.artifact} outputs class maps only (exported with --fuse-argmax): no probabilities",
                "use a deploy directory exported without --fuse-argmax for probabilities",
            )
        if not images:
            return []
        # every frame checked (and uint16 scaled) before any inference: a bad frame fails the call up front
        images = [frame_to_rgb8(image, f"frame {index}" if len(images) > 1 else "frame") for index, image in enumerate(images)]
        if len(images) > 1 and not self.batch_dynamic:
            return [r for image in images for r in self.predict_batch([image], bgr=bgr, probabilities=probabilities)]
        start = time.perf_counter()
        batch, geometries = self._prepare(images, bgr)
        output = next(iter(self._runner.infer({self.input_name: batch}).values()))
        if not is_class_map(output) and output.shape[1] != self.num_classes:
            raise SegdeployError(f"the artifact outputs {output.shape[1]} channels, the manifest says {self.num_classes} classes")
        maps = class_map_batch(output)  # logits → argmax over classes; a fused argmax's class map as is
        results = [self._finish(m, o, g, probabilities) for m, o, g in zip(maps, output, geometries)]
        self.last_latency_ms = (time.perf_counter() - start) * 1000
        return results

    def _prepare(self, images: Sequence[np.ndarray], bgr: bool):
        shape = self.spec.shape_for(len(images))
        if self._buffer is None or self._buffer.shape != shape:
            # reused across calls of the same batch size: float32 NCHW, or the uint8 NHWC canvas of a fused graph
            self._buffer = np.empty(shape, dtype=self.spec.numpy_dtype)
        geometries = []
        for index, image in enumerate(images):
            rgb = np.ascontiguousarray(image[..., ::-1]) if bgr else image
            if self.spec.fused_preprocess:  # the graph normalises: resize only
                self._buffer[index], geometry = self.preprocess.resize_image(rgb, self.input_hw)
            else:
                self._buffer[index], geometry = self.preprocess(rgb, self.input_hw)
            geometries.append(geometry)
        return self._buffer, geometries

    def _finish(self, class_map: np.ndarray, output: np.ndarray, geometry, probabilities: bool):
        """One image: its class map at the image's size (uint8 when the classes fit) [, probabilities]."""
        class_map = Preprocess.restore(class_map, geometry).astype(np.uint8 if self.num_classes <= 256 else np.int32)
        if not probabilities:
            return class_map
        return class_map, _probabilities_at(output, geometry)


def _probabilities_at(logits: np.ndarray, geometry) -> np.ndarray:
    """Softmax over classes, cropped to the image content and resized (bilinear) to the image size."""
    import torch
    import torch.nn.functional as F

    ch, cw = geometry.content_hw
    scores = torch.from_numpy(np.ascontiguousarray(logits[:, :ch, :cw], dtype=np.float32))[None]
    probs = torch.softmax(scores, dim=1)
    if (ch, cw) != tuple(geometry.original_hw):
        probs = F.interpolate(probs, size=tuple(geometry.original_hw), mode="bilinear", align_corners=False)
    return probs[0].numpy()
