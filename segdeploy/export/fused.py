"""Pre- and post-processing fused into the exported graph (`--fuse-preprocess`, `--fuse-argmax`).

The fusion is a PyTorch module around the one-output logits wrapper, traced by the same
exporter, so the parity proof runs exactly this module in PyTorch against the graph.

* fused preprocess: the graph takes the resized canvas, N×H×W×3 uint8 in **RGB** order
  (what `Preprocess.resize_image` produces; resizing stays with the caller) and does what
  `Preprocess.normalize` does: cast to float32, flip to BGR if the model was exported with
  ``--bgr``, ``(pixel * scale - mean) / std`` in the same float32 operation order, NHWC → NCHW.
* fused argmax: the graph outputs N×H×W int32 class indices (ONNX ArgMax gives int64, which
  TensorRT cannot output, hence the cast).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from segdeploy.errors import UsageError
from segdeploy.preprocess import Preprocess

LABELS_NAME = "labels"


@dataclass(frozen=True)
class Fusion:
    preprocess: bool = False
    argmax: bool = False

    @property
    def any(self) -> bool:
        return self.preprocess or self.argmax

    def to_dict(self) -> dict:
        return {"preprocess": self.preprocess, "argmax": self.argmax}


class FusedModel(nn.Module):
    """uint8 NHWC canvas (optional) → logits model → int32 class map (optional)."""

    def __init__(self, model: nn.Module, preprocess: Preprocess | None, argmax: bool):
        super().__init__()
        self.model = model
        self.fuse_preprocess = preprocess is not None
        self.argmax = argmax
        spec = preprocess or Preprocess()
        self.bgr = spec.channel_order == "BGR"
        self.scale = float(spec.scale)
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fuse_preprocess:
            x = self.normalize(x)
        out = self.model(x)
        if self.argmax:
            out = out.argmax(dim=1).to(torch.int32)
        return out

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        # Cast before transposing: TensorRT accepts uint8 only as network I/O feeding a Cast.
        x = x.to(torch.float32).permute(0, 3, 1, 2)
        if self.bgr:
            x = x.flip([1])
        if self.scale != 1.0:  # x * 1.0 is exact; leave the no-op out of the graph
            x = x * self.scale
        return (x - self.mean) / self.std


def fuse(wrapper: nn.Module, fusion: Fusion, preprocess: Preprocess, source_kind: str) -> nn.Module:
    """The module to export: `wrapper` itself when nothing is fused."""
    if not fusion.any:
        return wrapper
    fused = FusedModel(wrapper, preprocess if fusion.preprocess else None, fusion.argmax).eval()
    if source_kind == "torchscript":
        # A TorchScript model cannot be traced inside a Python module: script the fusion too.
        try:
            return torch.jit.script(fused)
        except Exception as exc:  # TorchScript compilation errors have many types
            raise UsageError(f"cannot fuse pre/post-processing around this TorchScript model: {str(exc)[:200]}",
                             "export without --fuse-preprocess/--fuse-argmax") from None
    return fused


def sample_input(shape: tuple[int, int, int, int], fusion: Fusion, generator: torch.Generator) -> torch.Tensor:
    """A tracing/parity input of NCHW `shape` in the graph's own form (uint8 NHWC when fused)."""
    n, c, h, w = shape
    if fusion.preprocess:
        return torch.randint(0, 256, (n, h, w, c), dtype=torch.uint8, generator=generator)
    return torch.randn(*shape, generator=generator)


def graph_shape(shape: tuple[int, ...], fusion: Fusion) -> tuple[int, ...]:
    """An NCHW model shape as the graph takes it."""
    n, c, h, w = shape
    return (n, h, w, c) if fusion.preprocess else tuple(shape)


def check_channels(shape: tuple[int, int, int, int], fusion: Fusion) -> None:
    if fusion.preprocess and shape[1] != 3:
        raise UsageError(f"--fuse-preprocess needs a 3-channel (RGB) input; --input-shape has {shape[1]} channels")
