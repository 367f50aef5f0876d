"""Atrous Spatial Pyramid Pooling, DeepLab v3 form (Chen et al., 2017, "Rethinking Atrous
Convolution"), usable on its own.

`ASPP(in_channels, out_channels=256, rates=(6, 12, 18))`: one 1×1 conv, three 3×3 convs
at the given rates, and image-level pooling (global average pool → 1×1 conv → bilinear
upsampling back to the feature size), each followed by BatchNorm + ReLU; the five
outputs are concatenated and projected by a 1×1 conv + BN + ReLU. At output stride 8
the paper doubles the rates (12/24/36): pass them. With `num_classes`, a final 1×1
classifier is appended.

The registry entry `aspp` wraps it in a small stem (three stride-2 conv + BN + ReLU
layers, output stride 8) and bilinear upsampling, so that the module itself can be
exported and benchmarked; use `ASPP` directly inside your own models.
"""

from __future__ import annotations

import torch
from torch import nn

from segdeploy.models.layers import check_common, conv_bn_relu, resize_to, scaled
from segdeploy.models.registry import ModelSpec, register


class ImagePooling(nn.Module):
    """Image-level features: global average pool, 1×1 conv + BN + ReLU, upsample back."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.project = conv_bn_relu(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self.project(self.pool(x)), x)


class ASPP(nn.Module):
    def __init__(self, in_channels: int, out_channels: int = 256, rates=(6, 12, 18), num_classes: int | None = None, dropout: float = 0.1):
        super().__init__()
        branches = [conv_bn_relu(in_channels, out_channels, 1)]
        branches += [conv_bn_relu(in_channels, out_channels, 3, dilation=r) for r in rates]
        branches.append(ImagePooling(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(conv_bn_relu(out_channels * len(branches), out_channels, 1), nn.Dropout(dropout))
        self.classifier = nn.Conv2d(out_channels, num_classes, 1) if num_classes else None
        self.out_channels = num_classes or out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(torch.cat([branch(x) for branch in self.branches], dim=1))
        return self.classifier(x) if self.classifier is not None else x


class ASPPNet(nn.Module):
    """A small stride-8 stem + ASPP with classifier: the registry's exportable `aspp`."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        c1, c2, c3 = scaled(32, width), scaled(64, width), scaled(128, width)
        self.stem = nn.Sequential(conv_bn_relu(in_channels, c1, stride=2), conv_bn_relu(c1, c2, stride=2), conv_bn_relu(c2, c3, stride=2))
        self.aspp = ASPP(c3, scaled(256, width), rates=(12, 24, 36), num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self.aspp(self.stem(x)), x)


def aspp(*, num_classes: int = 21, in_channels: int = 3, width: float = 1.0) -> ASPPNet:
    """The ASPP module (v3 form, with classifier) on a small stride-8 stem, rates 12/24/36."""
    check_common(num_classes, in_channels, width)
    return ASPPNet(num_classes, in_channels, width)


register(
    ModelSpec(
        name="aspp",
        family="DeepLab",
        builder=aspp,
        default_input=(1, 3, 512, 512),
        dynamic_hw=True,
        description="ASPP module (DeepLab v3 form: 1x1, three atrous 3x3, image pooling; BN+ReLU; concat+1x1) on a small stride-8 stem",
    )
)
