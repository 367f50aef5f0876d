"""DilatedNet: front end + context module (Yu & Koltun, ICLR 2016).

Front end (paper §4): VGG16 with pool4 and pool5 removed, conv5 dilated by 2, fc6 a
7×7 conv dilated by 4 (4096 channels), fc7 a 1×1 conv, a 1×1 class scorer: output
stride 8. Context module (§3): on the C class maps, 3×3 convs with dilations
1, 1, 2, 4, 8, 16, 1 each followed by ReLU, then a 1×1 conv, identity-initialised
("basic": C channels throughout; "large": 2C, 2C, 4C, 8C, 16C, 32C, 32C, then C). The
result is upsampled bilinearly to the input size.

Departures, stated: convolutions are padded (the paper uses valid convolutions and
reflection-pads the input), so logits come out at any input size without cropping.
"""

from __future__ import annotations

import torch
from torch import nn

from segdeploy.models.backbones import vgg16_stages
from segdeploy.models.layers import check_common, resize_to, scaled, vgg_fc_head
from segdeploy.models.registry import ModelSpec, register

CONTEXT_DILATIONS = (1, 1, 2, 4, 8, 16, 1)
LARGE_MULTIPLIERS = (2, 2, 4, 8, 16, 32, 32)


def _identity_init(conv: nn.Conv2d) -> None:
    """Paper's identity initialisation: each layer passes its input through unchanged."""
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    centre = conv.kernel_size[0] // 2
    with torch.no_grad():
        for c in range(min(conv.in_channels, conv.out_channels)):
            conv.weight[c, c, centre, centre] = 1.0


class ContextModule(nn.Module):
    def __init__(self, num_classes: int, large: bool = False):
        super().__init__()
        channels = [num_classes * m for m in LARGE_MULTIPLIERS] if large else [num_classes] * len(CONTEXT_DILATIONS)
        layers, cin = [], num_classes
        for cout, d in zip(channels, CONTEXT_DILATIONS):
            conv = nn.Conv2d(cin, cout, 3, padding=d, dilation=d)
            _identity_init(conv)
            layers += [conv, nn.ReLU(inplace=True)]
            cin = cout
        final = nn.Conv2d(cin, num_classes, 1)
        _identity_init(final)
        self.layers = nn.Sequential(*layers, final)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DilatedNet(nn.Module):
    def __init__(self, num_classes: int, in_channels=3, width=1.0, context="basic", dropout=0.5):
        super().__init__()
        if context not in ("basic", "large", "none"):
            raise ValueError(f"context must be 'basic', 'large' or 'none', got {context!r}")
        self.stages = vgg16_stages(in_channels, width, dilations=(1, 1, 1, 1, 2))
        self.pool = nn.MaxPool2d(2, 2)
        fc = scaled(4096, width)
        self.front_head = vgg_fc_head(scaled(512, width), fc, num_classes, kernel=7, padding=12, dilation=4,
                                      dropout=dropout)
        self.context = ContextModule(num_classes, context == "large") if context != "none" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for i, stage in enumerate(self.stages):
            y = stage(y)
            if i < 3:  # pool1-pool3 only: pool4 and pool5 are removed (output stride 8)
                y = self.pool(y)
        return resize_to(self.context(self.front_head(y)), x)


def dilatednet(*, num_classes: int = 21, in_channels: int = 3, width: float = 1.0, context: str = "basic") -> DilatedNet:
    """Yu & Koltun's front end + context module (`context` basic, large or none)."""
    check_common(num_classes, in_channels, width)
    return DilatedNet(num_classes, in_channels, width, context)


register(
    ModelSpec(
        name="dilatednet",
        family="DilatedNet",
        builder=dilatednet,
        default_input=(1, 3, 512, 512),
        dynamic_hw=True,
        description="DilatedNet (Yu & Koltun 2016), VGG16 front end (dilated conv5/fc6) + basic multi-scale context module",
    )
)
