"""A tiny model that naive INT8 measurably breaks: one activation channel ~1000x the others.

Per-tensor activation scales are set by the largest value, so quantizing the tensor that
holds the outlier channel rounds the other channels to a few levels; the next layer, which
reads them, then predicts other classes. Keeping that one layer's input in float fixes it.
Exported in the tests with the `file.py:Factory` source form.
"""

import torch
from torch import nn

OUTLIER = 1000.0
SEED = 24  # a seed whose three classes each cover 25-40 % of the test images (a rare class makes mIoU noisy)


class OutlierNet(nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()
        generator = torch.Generator().manual_seed(SEED)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 8, 3, padding=1)
        self.classifier = nn.Conv2d(8, num_classes, 1)
        with torch.no_grad():
            for conv in (self.stem, self.mid, self.head, self.classifier):
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.5)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.1)
            # Channel 0 of `mid` scaled up and read scaled down by `head`: the float function is
            # unchanged (ReLU is positively homogeneous), only the activation range grows 1000x.
            self.mid.weight[0] *= OUTLIER
            self.mid.bias[0] *= OUTLIER
            self.head.weight[:, 0] /= OUTLIER

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.mid(x))
        x = torch.relu(self.head(x))
        return self.classifier(x)
