"""U-Net (Ronneberger et al., 2015).

Paper choices kept: a contracting path of two 3×3 conv + ReLU per level and 2×2 max
pooling, channels doubling per level (64 → 1024 at width 1.0); an expanding path of
2×2 up-convolutions (transposed convs) halving the channels, concatenation with the
skip feature, two 3×3 convs; a final 1×1 conv to the classes; dropout at the end of the
contracting path (the paper's only dropout; identity at inference).

Departures, stated: convolutions are *padded* (the paper's are valid, with cropping),
so any input whose height and width are divisible by 16 gives logits at the input's
size; BatchNorm after each conv (standard in modern re-implementations, folded away by
export/TensorRT) can be turned off with ``batch_norm=False``.
"""

from __future__ import annotations

import torch
from torch import nn

from segdeploy.models.layers import check_common
from segdeploy.models.registry import ModelSpec, register


def _double_conv(cin: int, cout: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in in (cin, cout):
        layers.append(nn.Conv2d(c_in, cout, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, batch_norm: bool = True, dropout: float = 0.5):
        super().__init__()
        chans = [max(4, int(round(c * width))) for c in (64, 128, 256, 512, 1024)]
        self.down = nn.ModuleList()
        cin = in_channels
        for c in chans:
            self.down.append(_double_conv(cin, c, batch_norm))
            cin = c
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout2d(dropout)
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for c_skip, c_deep in zip(reversed(chans[:-1]), reversed(chans[1:])):
            self.up.append(nn.ConvTranspose2d(c_deep, c_skip, 2, stride=2))
            self.up_conv.append(_double_conv(2 * c_skip, c_skip, batch_norm))
        self.classifier = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = self.dropout(skips.pop())
        for up, conv in zip(self.up, self.up_conv):
            x = conv(torch.cat([skips.pop(), up(x)], dim=1))
        return self.classifier(x)


def unet(*, num_classes: int = 21, in_channels: int = 3, width: float = 1.0, batch_norm: bool = True, dropout: float = 0.5) -> UNet:
    """U-Net with `width` scaling every level's channels (1.0 = the paper's 64…1024)."""
    check_common(num_classes, in_channels, width)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return UNet(num_classes, in_channels, width, batch_norm, dropout)


register(
    ModelSpec(
        name="unet",
        family="U-Net",
        builder=unet,
        default_input=(1, 3, 512, 512),
        dynamic_hw=True,
        description="U-Net (Ronneberger 2015), padded convs, transposed-conv upsampling, concat skips",
        size_multiple=16,
    )
)
