"""FC-DenseNet 56 / 67 / 103, "The One Hundred Layers Tiramisu" (Jégou et al., 2017).

Paper choices kept: a first 3×3 conv of 48 channels; dense blocks whose layers are
BN, ReLU, 3×3 conv (growth rate k), dropout 0.2, each layer's output concatenated to
its input; transition down = BN, ReLU, 1×1 conv, dropout, 2×2 max pool; transition up =
3×3 transposed conv of stride 2 applied to the *new* feature maps of the previous
block only; skip concatenation with the matching down-path block output; final 1×1
conv to the classes. Layers per block: FC-DenseNet56 4 (k=12), FC-DenseNet67 5
(k=16), FC-DenseNet103 4, 5, 7, 10, 12 | 15 | 12, 10, 7, 5, 4 (k=16).

Departures, stated: the transposed convs use padding 1 / output padding 1 so they
double the size exactly (the paper crops to the skip's size), hence height and width
must be multiples of 32.
"""

from __future__ import annotations

import torch
from torch import nn

from segdeploy.models.layers import check_common, scaled
from segdeploy.models.registry import ModelSpec, register

VARIANTS = {
    56: ((4, 4, 4, 4, 4), 4, 12),
    67: ((5, 5, 5, 5, 5), 5, 16),
    103: ((4, 5, 7, 10, 12), 15, 16),
}


def _bn_relu_conv(cin: int, cout: int, kernel: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.Dropout2d(dropout))


class DenseBlock(nn.Module):
    """Returns (input ⊕ new features, new features)."""

    def __init__(self, cin: int, layers: int, growth: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(_bn_relu_conv(cin + i * growth, growth, 3, dropout) for i in range(layers))

    def forward(self, x: torch.Tensor):
        new = []
        for layer in self.layers:
            out = layer(x)
            new.append(out)
            x = torch.cat([x, out], dim=1)
        return x, torch.cat(new, dim=1)


class FCDenseNet(nn.Module):
    def __init__(self, num_classes: int, in_channels=3, width=1.0, depth=103, dropout=0.2):
        super().__init__()
        if depth not in VARIANTS:
            raise ValueError(f"FC-DenseNet depth must be one of {sorted(VARIANTS)}, got {depth}")
        down, bottleneck, growth = VARIANTS[depth]
        growth = scaled(growth, width, minimum=2)
        c = scaled(48, width)
        self.first = nn.Conv2d(in_channels, c, 3, padding=1)
        self.down_blocks, self.transitions_down, skips = nn.ModuleList(), nn.ModuleList(), []
        for n in down:
            self.down_blocks.append(DenseBlock(c, n, growth, dropout))
            c += n * growth
            skips.append(c)
            self.transitions_down.append(nn.Sequential(_bn_relu_conv(c, c, 1, dropout), nn.MaxPool2d(2)))
        self.bottleneck = DenseBlock(c, bottleneck, growth, dropout)
        self.transitions_up, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        new = bottleneck * growth
        for n, skip in zip(reversed(down), reversed(skips)):
            self.transitions_up.append(nn.ConvTranspose2d(new, new, 3, stride=2, padding=1, output_padding=1))
            self.up_blocks.append(DenseBlock(new + skip, n, growth, dropout))
            c, new = new + skip + n * growth, n * growth
        self.classifier = nn.Conv2d(c, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        skips = []
        for block, down in zip(self.down_blocks, self.transitions_down):
            x, _ = block(x)
            skips.append(x)
            x = down(x)
        _, new = self.bottleneck(x)
        for up, block in zip(self.transitions_up, self.up_blocks):
            x, new = block(torch.cat([up(new), skips.pop()], dim=1))
        return self.classifier(x)


def _builder(depth: int):
    def build(*, num_classes: int = 21, in_channels: int = 3, width: float = 1.0, dropout: float = 0.2) -> FCDenseNet:
        check_common(num_classes, in_channels, width)
        return FCDenseNet(num_classes, in_channels, width, depth, dropout)

    build.__name__ = f"fcdensenet{depth}"
    build.__doc__ = f"FC-DenseNet{depth}; `width` scales the growth rate and the first conv (1.0 = the paper's)."
    return build


for _depth in VARIANTS:
    _layers, _bottleneck, _growth = VARIANTS[_depth]
    register(
        ModelSpec(
            name=f"fcdensenet{_depth}",
            family="FC-DenseNet",
            builder=_builder(_depth),
            default_input=(1, 3, 224, 224),
            dynamic_hw=True,
            description=f"FC-DenseNet{_depth} Tiramisu (Jégou 2017), growth {_growth}, dense blocks {'/'.join(map(str, _layers))} | {_bottleneck}, skip concat",
            size_multiple=32,
        )
    )
