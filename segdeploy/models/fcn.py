"""FCN-32s, FCN-16s, FCN-8s (Long, Shelhamer & Darrell, CVPR 2015).

Paper choices kept: VGG16 "convolutionalized" — its 13 convs and five 2×2 max pools,
fc6 as a 7×7 conv and fc7 as a 1×1 conv (4096 channels at width 1.0, ReLU + dropout),
a 1×1 class scorer; FCN-16s adds a 1×1 scorer on pool4 fused by summation with the
×2-upsampled coarse score, FCN-8s also fuses a pool3 scorer; upsampling by transposed
convolutions initialised to bilinear interpolation (the ×2 ones learnable, as in the
paper's fusion layers), skip scorers initialised to zero.

Departures, stated: the paper pads the input by 100 pixels and crops the scores back;
here convolutions are padded ("same"), fc6 included, so any input whose height and
width are multiples of 32 gives logits at the input size without cropping. The
"at-once" variant's fixed pool3/pool4 scaling (1e-4, 1e-2) is left out.
"""

from __future__ import annotations

import torch
from torch import nn

from segdeploy.models.backbones import vgg16_stages
from segdeploy.models.layers import bilinear_upsampler, check_common, scaled, vgg_fc_head
from segdeploy.models.registry import ModelSpec, register


class FCN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, stride: int = 32, dropout: float = 0.5):
        super().__init__()
        if stride not in (8, 16, 32):
            raise ValueError(f"FCN stride must be 32, 16 or 8, got {stride}")
        self.stride = stride
        self.stages = vgg16_stages(in_channels, width)
        self.pool = nn.MaxPool2d(2, 2)
        fc = scaled(4096, width)
        c5 = scaled(512, width)
        self.fc = vgg_fc_head(c5, fc, num_classes, kernel=7, padding=3, dropout=dropout)
        if stride <= 16:
            self.score_pool4 = self._zero_scorer(c5, num_classes)
            self.up_pool5 = bilinear_upsampler(num_classes, 2)
        if stride == 8:
            self.score_pool3 = self._zero_scorer(scaled(256, width), num_classes)
            self.up_pool4 = bilinear_upsampler(num_classes, 2)
        self.up_final = bilinear_upsampler(num_classes, stride, learnable=False)

    @staticmethod
    def _zero_scorer(cin: int, num_classes: int) -> nn.Conv2d:
        scorer = nn.Conv2d(cin, num_classes, 1)
        nn.init.zeros_(scorer.weight)
        nn.init.zeros_(scorer.bias)
        return scorer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pools = []
        for stage in self.stages:
            x = self.pool(stage(x))
            pools.append(x)
        score = self.fc(pools[4])
        if self.stride <= 16:
            score = self.up_pool5(score) + self.score_pool4(pools[3])
        if self.stride == 8:
            score = self.up_pool4(score) + self.score_pool3(pools[2])
        return self.up_final(score)


def _builder(stride: int):
    def build(*, num_classes: int = 21, in_channels: int = 3, width: float = 1.0, dropout: float = 0.5) -> FCN:
        check_common(num_classes, in_channels, width)
        return FCN(num_classes, in_channels, width, stride, dropout)

    build.__name__ = f"fcn{stride}s"
    build.__doc__ = f"FCN-{stride}s on VGG16; `width` scales every layer's channels (1.0 = the paper's)."
    return build


fcn32s, fcn16s, fcn8s = _builder(32), _builder(16), _builder(8)

for _stride, _build in ((32, fcn32s), (16, fcn16s), (8, fcn8s)):
    fusion = {32: "no skip fusion", 16: "pool4 score fusion", 8: "pool3 + pool4 score fusion"}[_stride]
    register(
        ModelSpec(
            name=f"fcn{_stride}s",
            family="FCN",
            builder=_build,
            default_input=(1, 3, 512, 512),
            dynamic_hw=True,
            description=f"FCN-{_stride}s (Long 2015), VGG16 convolutionalized, {fusion}, bilinear-initialised deconvs",
            size_multiple=32,
        )
    )
