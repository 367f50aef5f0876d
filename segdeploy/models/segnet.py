"""SegNet (Badrinarayanan, Kendall & Cipolla, TPAMI 2017).

Paper choices kept: the encoder is VGG16's 13 convs (3×3, BatchNorm, ReLU) with five
2×2 stride-2 max pools that *remember their argmax indices*; the decoder mirrors it,
each stage upsampling with max-unpooling at the stored indices (no learned
upsampling, no skip features) followed by 3×3 conv + BN + ReLU layers; the last
decoder feature goes to a per-pixel classifier (here a 1×1 conv, softmax left to the
loss/argmax).

Unpooling uses the encoder feature's size as `output_size`, so odd sizes work (any
height/width ≥ 32). For export, `segdeploy` rewrites max-pooling-with-indices and
max-unpooling into exact TensorRT-parsable operators (see `segdeploy.export.rewrites`).

Unpooling is discontinuous in its input: when two values of a pooling window differ by
less than float rounding, any other runtime (onnxruntime, TensorRT, even PyTorch in
float64) may pick the other one and move that value by a pixel. With random weights at
full width this shows as a large *max* error at a few pixels while argmax agreement
stays high; trained models, whose ties are mostly exact zeros, are affected far less.
"""

from __future__ import annotations

import torch
from torch import nn

from segdeploy.models.backbones import VGG16_STAGES, vgg_stage
from segdeploy.models.layers import check_common, scaled
from segdeploy.models.registry import ModelSpec, register


class SegNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        stages = [[scaled(c, width) for c in channels] for channels in VGG16_STAGES]
        self.encoder = nn.ModuleList()
        cin = in_channels
        for channels in stages:
            self.encoder.append(vgg_stage(cin, channels, batch_norm=True))
            cin = channels[-1]
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.decoder = nn.ModuleList()
        # Decoder stage i mirrors encoder stage i: same widths, the last conv maps to the
        # channels of the stage above (the first stage's output keeps its own width).
        for i in reversed(range(5)):
            channels = stages[i]
            target = stages[i - 1][-1] if i > 0 else channels[0]
            self.decoder.append(vgg_stage(channels[-1], channels[:-1] + [target], batch_norm=True))
        self.classifier = nn.Conv2d(stages[0][0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        memory = []
        for stage in self.encoder:
            x = stage(x)
            size = x.shape[-2:]
            x, indices = self.pool(x)
            memory.append((indices, size))
        for stage in self.decoder:
            indices, size = memory.pop()
            x = stage(self.unpool(x, indices, output_size=size))
        return self.classifier(x)


def segnet(*, num_classes: int = 21, in_channels: int = 3, width: float = 1.0) -> SegNet:
    """SegNet with a VGG16-BN encoder; `width` scales every layer (1.0 = the paper's)."""
    check_common(num_classes, in_channels, width)
    return SegNet(num_classes, in_channels, width)


register(
    ModelSpec(
        name="segnet",
        family="SegNet",
        builder=segnet,
        default_input=(1, 3, 360, 480),
        dynamic_hw=True,
        description="SegNet (Badrinarayanan 2017), VGG16-BN encoder, decoder unpools with the encoder's max-pool indices",
        size_multiple=1,
    )
)
