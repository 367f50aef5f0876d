"""Small building blocks shared by the zoo's architectures."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def scaled(channels: int, width: float, minimum: int = 4) -> int:
    """`channels` × `width`, rounded, never below `minimum` (tiny test variants stay valid)."""
    return max(minimum, int(round(channels * width)))


def check_common(num_classes: int, in_channels: int, width: float) -> None:
    """Validate the keyword arguments every zoo builder takes (ValueError → UsageError in the registry)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """Conv (padded to keep the size at stride 1) + BatchNorm + ReLU."""
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def resize_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of `x` to `reference`'s height and width (shape[-2:] is H, W: in that order)."""
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


def bilinear_kernel(channels: int, kernel: int) -> torch.Tensor:
    """Weights of a per-channel bilinear upsampling ConvTranspose2d (FCN's initialisation)."""
    factor = (kernel + 1) // 2
    center = factor - 1 if kernel % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(kernel, dtype=torch.float32) - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel, kernel)
    for c in range(channels):
        weight[c, c] = ramp[:, None] * ramp[None, :]
    return weight


def bilinear_upsampler(channels: int, factor: int, *, learnable: bool = True) -> nn.ConvTranspose2d:
    """×`factor` transposed conv (kernel 2f, stride f, padding f/2) initialised to bilinear."""
    layer = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    with torch.no_grad():
        if layer.weight.device.type != "meta":
            layer.weight.copy_(bilinear_kernel(channels, 2 * factor))
    layer.weight.requires_grad_(learnable)
    return layer


def vgg_fc_head(cin: int, fc: int, num_classes: int, *, kernel: int, padding: int, dilation: int = 1,
                dropout: float = 0.5) -> nn.Sequential:
    """VGG16's fc6/fc7 as convolutions (conv k×k → ReLU → dropout → 1×1 → ReLU → dropout) + a 1×1 classifier.

    Shared by FCN (7×7 fc6), DeepLab v1 LargeFOV (3×3 at dilation 12) and DilatedNet's front end
    (7×7 at dilation 4); they differ only in fc6's kernel, padding and dilation.
    """
    return nn.Sequential(
        nn.Conv2d(cin, fc, kernel, padding=padding, dilation=dilation),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout),
        nn.Conv2d(fc, fc, 1),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout),
        nn.Conv2d(fc, num_classes, 1),
    )
