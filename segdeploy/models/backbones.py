"""Backbones: VGG16 (as five conv stages) and a dilated ResNet-50/101 with multi-grid.

Both take a `width` multiplier so that tests can build tiny variants. The ResNet keeps
torchvision's attribute names (conv1, bn1, layer1…layer4, downsample), so an ImageNet
torchvision checkpoint loads into it (`--weights`, width 1.0); nothing is downloaded.
"""

from __future__ import annotations

from torch import nn

from segdeploy.models.layers import scaled

VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def vgg_stage(cin: int, channels, *, dilation: int = 1, batch_norm: bool = False) -> nn.Sequential:
    """3×3 convs (+BN) + ReLU of one VGG stage, no pooling."""
    layers: list[nn.Module] = []
    for cout in channels:
        layers.append(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
        cin = cout
    return nn.Sequential(*layers)


def vgg16_stages(in_channels: int, width: float, *, dilations=(1, 1, 1, 1, 1), batch_norm: bool = False) -> nn.ModuleList:
    """The 13 convs of VGG16 as five stages (pooling is left to the architecture)."""
    stages = nn.ModuleList()
    cin = in_channels
    for channels, dilation in zip(VGG16_STAGES, dilations):
        widths = [scaled(c, width) for c in channels]
        stages.append(vgg_stage(cin, widths, dilation=dilation, batch_norm=batch_norm))
        cin = widths[-1]
    return stages


class Bottleneck(nn.Module):
    """ResNet bottleneck (1×1, 3×3, 1×1; stride on the 3×3 as in torchvision's v1.5)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


RESNET_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class DilatedResNet(nn.Module):
    """ResNet-50/101 whose last stages trade stride for dilation (atrous convolution).

    `output_stride` 32 (classification), 16 (layer4 dilated ×2) or 8 (layer3 ×2,
    layer4 ×4). `multi_grid` multiplies layer4's per-unit rates (DeepLab v3's (1, 2, 4)).
    `forward` returns the stride-4 (layer1) and the final feature.
    """

    def __init__(self, depth: int = 50, *, in_channels: int = 3, width: float = 1.0, output_stride: int = 8, multi_grid=(1, 1, 1)):
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        stem = scaled(64, width)
        self.conv1 = nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.inplanes = stem
        # (stride, dilation) per stage: stride is traded for dilation beyond output_stride.
        plan = {32: ((1, 1), (2, 1), (2, 1), (2, 1)), 16: ((1, 1), (2, 1), (2, 1), (1, 2)), 8: ((1, 1), (2, 1), (1, 2), (1, 4))}
        blocks = RESNET_DEPTHS[depth]
        for index, (planes, count, (stride, dilation)) in enumerate(zip((64, 128, 256, 512), blocks, plan[output_stride])):
            grid = tuple(multi_grid) if index == 3 else (1,) * count
            rates = [dilation * grid[i % len(grid)] for i in range(count)]
            setattr(self, f"layer{index + 1}", self._make_layer(scaled(planes, width), rates, stride))
        self.out_channels = self.inplanes
        self.low_level_channels = scaled(64, width) * Bottleneck.expansion

    def _make_layer(self, planes: int, rates: list[int], stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = []
        for i, rate in enumerate(rates):
            layers.append(Bottleneck(self.inplanes, planes, stride if i == 0 else 1, rate, downsample if i == 0 else None))
            self.inplanes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        return low, self.layer4(self.layer3(self.layer2(low)))
