"""PSPNet (Zhao et al., CVPR 2017).

Paper choices kept: a dilated ResNet (layer3/layer4 dilated by 2/4, output stride 8);
the pyramid pooling module pools the final feature into 1×1, 2×2, 3×3 and 6×6 bins
(adaptive average pooling), reduces each to 1/4 of the feature's channels with a 1×1
conv (+BN+ReLU), upsamples each bilinearly back to the feature size, concatenates them
with the feature, and a 3×3 conv (+BN+ReLU, dropout 0.1) and a 1×1 classifier follow;
the scores are upsampled bilinearly to the input size.

Departures, stated: the standard 7×7 ResNet stem (the paper's deep 3×3 stem is a later
refinement) and no auxiliary loss head (training only). The 3×3 and 6×6 bins do not
divide most feature sizes; `segdeploy export` rewrites them into exact averaging-matrix
products (PyTorch's bin boundaries), which also makes dynamic height/width exact.
"""

from __future__ import annotations

import torch
from torch import nn

from segdeploy.models.backbones import DilatedResNet
from segdeploy.models.layers import check_common, conv_bn_relu, resize_to, scaled
from segdeploy.models.registry import ModelSpec, register


class PyramidPooling(nn.Module):
    def __init__(self, cin: int, bins=(1, 2, 3, 6)):
        super().__init__()
        reduced = max(1, cin // len(bins))
        self.stages = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(b), conv_bn_relu(cin, reduced, 1)) for b in bins)
        self.out_channels = cin + reduced * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x] + [resize_to(stage(x), x) for stage in self.stages], dim=1)


class PSPNet(nn.Module):
    def __init__(self, num_classes: int, in_channels=3, width=1.0, depth=50, bins=(1, 2, 3, 6), dropout=0.1):
        super().__init__()
        self.backbone = DilatedResNet(depth, in_channels=in_channels, width=width, output_stride=8)
        self.ppm = PyramidPooling(self.backbone.out_channels, bins)
        self.head = nn.Sequential(conv_bn_relu(self.ppm.out_channels, scaled(512, width)), nn.Dropout2d(dropout), nn.Conv2d(scaled(512, width), num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, features = self.backbone(x)
        return resize_to(self.head(self.ppm(features)), x)


def pspnet(*, num_classes: int = 21, in_channels: int = 3, width: float = 1.0, depth: int = 50, bins=(1, 2, 3, 6)) -> PSPNet:
    """PSPNet on a dilated ResNet-`depth` (50 or 101) with pyramid `bins`."""
    check_common(num_classes, in_channels, width)
    return PSPNet(num_classes, in_channels, width, depth, tuple(bins))


register(
    ModelSpec(
        name="pspnet",
        family="PSPNet",
        builder=pspnet,
        default_input=(1, 3, 473, 473),
        dynamic_hw=True,
        description="PSPNet (Zhao 2017), dilated ResNet-50, pyramid pooling bins 1/2/3/6 (exact rewrite for export)",
    )
)
