"""The modified aligned Xception of DeepLab v3+ (Chen et al., ECCV 2018, §3.3).

Paper choices kept: entry flow (3×3 conv 32 stride 2, 3×3 conv 64, then blocks of
128, 256 and 728 channels), 16 middle-flow blocks of 728, exit flow (a block of
728/1024/1024, then separable convs of 1536, 1536, 2048); every max pooling replaced
by a stride-2 depthwise-separable convolution (the last of its block); batch
normalization and ReLU after each 3×3 depthwise conv as well as after the pointwise
conv. Blocks have a residual connection (1×1 conv + BN where shape changes). Beyond
the requested output stride (16 or 8), strides become dilation (atrous convolution).
"""

from __future__ import annotations

import torch
from torch import nn

from segdeploy.models.layers import conv_bn_relu, scaled


class SeparableConv(nn.Module):
    """Depthwise 3×3 (+BN+ReLU) then pointwise 1×1 (+BN+ReLU)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.depthwise = nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride=stride, padding=dilation, dilation=dilation, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
        )
        self.pointwise = conv_bn_relu(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """Three separable convs, the last possibly strided, plus a residual shortcut."""

    def __init__(self, cin: int, channels, stride: int = 1, dilation: int = 1):
        super().__init__()
        convs, c = [], cin
        for i, cout in enumerate(channels):
            convs.append(SeparableConv(c, cout, stride if i == len(channels) - 1 else 1, dilation))
            c = cout
        self.convs = nn.Sequential(*convs)
        self.shortcut = None
        if stride != 1 or cin != c:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, c, 1, stride=stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.convs(x) + skip


class AlignedXception(nn.Module):
    """`forward` returns (stride-4 low-level feature, final feature)."""

    def __init__(self, *, in_channels: int = 3, width: float = 1.0, output_stride: int = 16, middle_blocks: int = 16):
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 16 or 8, got {output_stride}")
        w = lambda c: scaled(c, width)  # noqa: E731
        self.stem = nn.Sequential(conv_bn_relu(in_channels, w(32), stride=2), conv_bn_relu(w(32), w(64)))
        self.block1 = XceptionBlock(w(64), [w(128)] * 3, stride=2)  # stride 4: the low-level feature
        self.block2 = XceptionBlock(w(128), [w(256)] * 3, stride=2)  # stride 8
        entry_stride, rate = (2, 1) if output_stride == 16 else (1, 2)
        self.block3 = XceptionBlock(w(256), [w(728)] * 3, stride=entry_stride)
        self.middle = nn.Sequential(*(XceptionBlock(w(728), [w(728)] * 3, dilation=rate) for _ in range(middle_blocks)))
        # The exit block's stride would exceed the output stride: it becomes dilation.
        self.exit_block = XceptionBlock(w(728), [w(728), w(1024), w(1024)], dilation=rate)
        exit_rate = rate * 2
        self.exit_convs = nn.Sequential(
            SeparableConv(w(1024), w(1536), dilation=exit_rate),
            SeparableConv(w(1536), w(1536), dilation=exit_rate),
            SeparableConv(w(1536), w(2048), dilation=exit_rate),
        )
        self.low_level_channels = w(128)
        self.out_channels = w(2048)

    def forward(self, x: torch.Tensor):
        low = self.block1(self.stem(x))
        x = self.middle(self.block3(self.block2(low)))
        return low, self.exit_convs(self.exit_block(x))
