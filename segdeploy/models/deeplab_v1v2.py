"""DeepLab v1 (Chen et al., ICLR 2015) and DeepLab v2 (Chen et al., TPAMI 2017).

DeepLab v1, "DeepLab-LargeFOV": VGG16 with 3×3 stride-2 max pools after conv1–conv3,
pool4 and pool5 at stride 1 (3×3, padding 1) so the output stride is 8, conv5 dilated
by 2, pool5 followed by a 3×3 stride-1 average pool, fc6 a 3×3 conv dilated by 12 with
1024 channels, fc7 a 1×1 conv of 1024, dropout, fc8 the class scorer; scores are
bilinearly upsampled ×8 (to the input size).

DeepLab v2: ResNet-101 with conv4 (layer3) dilated by 2 and conv5 (layer4) by 4
(output stride 8), then ASPP: four parallel 3×3 class-scoring convs at rates
6/12/18/24 whose outputs are *summed* (the released ResNet-101 model's form), then
bilinear upsampling to the input size.

The fully connected CRF both papers apply afterwards is post-processing, not part of
the network, and is out of scope: the exported graph ends at the upsampled scores.
Departures, stated: torchvision-style ResNet (stride on the 3×3 conv, 1×1 stem pool
without ceil mode) and no multi-scale input fusion (MSC).
"""

from __future__ import annotations

import torch
from torch import nn

from segdeploy.models.backbones import DilatedResNet, vgg16_stages
from segdeploy.models.layers import check_common, resize_to, scaled, vgg_fc_head
from segdeploy.models.registry import ModelSpec, register


class DeepLabV1(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, dropout: float = 0.5):
        super().__init__()
        self.stages = vgg16_stages(in_channels, width, dilations=(1, 1, 1, 1, 2))
        self.pools = nn.ModuleList(nn.MaxPool2d(3, stride=s, padding=1) for s in (2, 2, 2, 1, 1))
        self.pool5a = nn.AvgPool2d(3, stride=1, padding=1)
        fc = scaled(1024, width)
        self.head = vgg_fc_head(scaled(512, width), fc, num_classes, kernel=3, padding=12, dilation=12, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for stage, pool in zip(self.stages, self.pools):
            y = pool(stage(y))
        return resize_to(self.head(self.pool5a(y)), x)


class SummedASPP(nn.Module):
    """DeepLab v2's ASPP: parallel dilated 3×3 class scorers, outputs summed."""

    def __init__(self, cin: int, num_classes: int, rates=(6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(cin, num_classes, 3, padding=r, dilation=r) for r in rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class DeepLabV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, depth: int = 101, rates=(6, 12, 18, 24)):
        super().__init__()
        self.backbone = DilatedResNet(depth, in_channels=in_channels, width=width, output_stride=8)
        self.aspp = SummedASPP(self.backbone.out_channels, num_classes, rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, features = self.backbone(x)
        return resize_to(self.aspp(features), x)


def deeplabv1(*, num_classes: int = 21, in_channels: int = 3, width: float = 1.0, dropout: float = 0.5) -> DeepLabV1:
    """DeepLab v1 LargeFOV on VGG16; `width` scales every layer (1.0 = the paper's)."""
    check_common(num_classes, in_channels, width)
    return DeepLabV1(num_classes, in_channels, width, dropout)


def deeplabv2(*, num_classes: int = 21, in_channels: int = 3, width: float = 1.0, depth: int = 101, rates=(6, 12, 18, 24)) -> DeepLabV2:
    """DeepLab v2 (ASPP-L) on a dilated ResNet-`depth` (101 in the paper, 50 allowed)."""
    check_common(num_classes, in_channels, width)
    return DeepLabV2(num_classes, in_channels, width, depth, tuple(rates))


register(
    ModelSpec(
        name="deeplabv1",
        family="DeepLab",
        builder=deeplabv1,
        default_input=(1, 3, 512, 512),
        dynamic_hw=True,
        description="DeepLab v1 LargeFOV (Chen 2015), VGG16, dilated conv5 (2) and fc6 (12), output stride 8; no CRF",
    )
)
register(
    ModelSpec(
        name="deeplabv2",
        family="DeepLab",
        builder=deeplabv2,
        default_input=(1, 3, 512, 512),
        dynamic_hw=True,
        description="DeepLab v2 (Chen 2017), dilated ResNet-101, ASPP rates 6/12/18/24 summed; no CRF",
    )
)
