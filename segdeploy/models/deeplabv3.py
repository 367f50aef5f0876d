"""DeepLab v3 (Chen et al., 2017, "Rethinking Atrous Convolution for Semantic Image
Segmentation") and DeepLab v3+ (Chen et al., ECCV 2018, encoder-decoder).

v3: ResNet-50/101 at output stride 16 or 8 (layer3/layer4 dilated instead of strided),
multi-grid (1, 2, 4) on the three units of block 4 (layer4), ASPP of one 1×1 conv,
three 3×3 convs at rates 6/12/18 (12/24/36 at output stride 8) and image-level
pooling, each with BatchNorm + ReLU, concatenated and projected by a 1×1 conv (+BN+ReLU),
then a 1×1 classifier and bilinear upsampling to the input size.

v3+: the same ASPP on the modified aligned Xception (see `xception.py`) or on ResNet-50;
decoder: the stride-4 low-level feature projected by 1×1 conv (+BN+ReLU) to 48 channels,
concatenated with the ASPP output bilinearly upsampled to the low-level feature's
height × width, two 3×3 convs of 256 (+BN+ReLU), a 1×1 classifier, and bilinear
upsampling to the input's height × width. Sizes are always taken as `shape[-2:]`
(H, W in that order; a W, H swap is caught by the non-square tests).

Departures, stated: v3+'s ASPP and decoder use standard 3×3 convs (the paper also
offers depthwise-separable ones there); the ResNet is torchvision-style (stride on
the 3×3 conv); no multi-scale / flipped inference.
"""

from __future__ import annotations

import torch
from torch import nn

from segdeploy.models.aspp import ASPP
from segdeploy.models.backbones import DilatedResNet
from segdeploy.models.layers import check_common, conv_bn_relu, resize_to, scaled
from segdeploy.models.registry import ModelSpec, register
from segdeploy.models.xception import AlignedXception


def _aspp_rates(output_stride: int) -> tuple[int, int, int]:
    return (6, 12, 18) if output_stride == 16 else (12, 24, 36)


class DeepLabV3(nn.Module):
    def __init__(self, num_classes: int, in_channels=3, width=1.0, depth=101, output_stride=16, multi_grid=(1, 2, 4)):
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 16 or 8, got {output_stride}")
        self.backbone = DilatedResNet(depth, in_channels=in_channels, width=width, output_stride=output_stride, multi_grid=multi_grid)
        self.aspp = ASPP(self.backbone.out_channels, scaled(256, width), _aspp_rates(output_stride), num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, features = self.backbone(x)
        return resize_to(self.aspp(features), x)


class DeepLabV3Plus(nn.Module):
    def __init__(self, num_classes: int, in_channels=3, width=1.0, backbone="xception", output_stride=16):
        super().__init__()
        if backbone == "xception":
            self.backbone = AlignedXception(in_channels=in_channels, width=width, output_stride=output_stride)
        elif backbone == "resnet50":
            self.backbone = DilatedResNet(50, in_channels=in_channels, width=width, output_stride=output_stride, multi_grid=(1, 2, 4))
        else:
            raise ValueError(f"backbone must be 'xception' or 'resnet50', got {backbone!r}")
        channels = scaled(256, width)
        self.aspp = ASPP(self.backbone.out_channels, channels, _aspp_rates(output_stride))
        self.low_level = conv_bn_relu(self.backbone.low_level_channels, scaled(48, width), 1)
        self.decoder = nn.Sequential(conv_bn_relu(channels + scaled(48, width), channels), conv_bn_relu(channels, channels))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, features = self.backbone(x)
        low = self.low_level(low)
        merged = torch.cat([resize_to(self.aspp(features), low), low], dim=1)
        return resize_to(self.classifier(self.decoder(merged)), x)


def deeplabv3(*, num_classes: int = 21, in_channels: int = 3, width: float = 1.0, depth: int = 101, output_stride: int = 16, multi_grid=(1, 2, 4)) -> DeepLabV3:
    """DeepLab v3 on a dilated ResNet-`depth` (50 or 101) at `output_stride` 16 or 8."""
    check_common(num_classes, in_channels, width)
    return DeepLabV3(num_classes, in_channels, width, depth, output_stride, tuple(multi_grid))


def deeplabv3plus(*, num_classes: int = 21, in_channels: int = 3, width: float = 1.0, backbone: str = "xception", output_stride: int = 16) -> DeepLabV3Plus:
    """DeepLab v3+ with the aligned Xception (`backbone="xception"`) or ResNet-50."""
    check_common(num_classes, in_channels, width)
    return DeepLabV3Plus(num_classes, in_channels, width, backbone, output_stride)


def deeplabv3plus_resnet50(*, num_classes: int = 21, in_channels: int = 3, width: float = 1.0, output_stride: int = 16) -> DeepLabV3Plus:
    """DeepLab v3+ with the ResNet-50 backbone (low-level feature: layer1)."""
    return deeplabv3plus(num_classes=num_classes, in_channels=in_channels, width=width, backbone="resnet50", output_stride=output_stride)


for _name, _builder, _desc in (
    ("deeplabv3", deeplabv3, "DeepLab v3 (Chen 2017), dilated ResNet-101 (or 50), OS 16/8, multi-grid 1/2/4, ASPP + image pooling"),
    ("deeplabv3plus", deeplabv3plus, "DeepLab v3+ (Chen 2018), aligned Xception-65, ASPP, decoder with 48-ch low-level projection"),
    ("deeplabv3plus_resnet50", deeplabv3plus_resnet50, "DeepLab v3+ (Chen 2018), ResNet-50 backbone, ASPP, decoder"),
):
    register(
        ModelSpec(name=_name, family="DeepLab", builder=_builder, default_input=(1, 3, 512, 512), dynamic_hw=True, description=_desc)
    )
