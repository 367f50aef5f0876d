"""Models for the INT8 placement tests (factories for `segdeploy export`): third-party ones with random
weights and no downloads, and one with nothing to quantize.

`tests/placement_models.py:smp_model` with --model-kwargs '{"arch": "Unet", "encoder": "mit_b0"}'.
"""

from __future__ import annotations

import torch
from torch import nn


def smp_model(num_classes: int = 5, arch: str = "Unet", encoder: str = "resnet18", **kwargs) -> nn.Module:
    """A segmentation_models_pytorch architecture × encoder (encoder_weights=None: nothing downloads)."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    return getattr(smp, arch)(encoder_name=encoder, encoder_weights=None, classes=num_classes, **kwargs)


class _Logits(nn.Module):
    """transformers' SegFormer returns an output object at 1/4 resolution; the logits tensor is what deploys."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def segformer(num_classes: int = 5, hidden: int = 16) -> nn.Module:
    """A small transformers SegFormer (MiT encoder, all-MLP head) built from a config, never from_pretrained."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    config = SegformerConfig(num_labels=num_classes, hidden_sizes=[hidden, 2 * hidden, 5 * hidden, 8 * hidden],
                             depths=[1, 1, 1, 1], num_attention_heads=[1, 2, 5, 8], decoder_hidden_size=4 * hidden)
    return _Logits(SegformerForSemanticSegmentation(config).eval())


class NoWeights(nn.Module):
    """Pooling and arithmetic only: nothing INT8 can speed up (the "nothing quantizable" case)."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) * 2.0 - x


class Gated(nn.Module):
    """Conv, a sigmoid gate and an upsampling between convolutions: tensors no weighted layer reads or writes
    (onnxruntime's own placement quantizes them; the TensorRT placement does not)."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.gate = nn.Conv2d(8, 8, 1)
        self.classifier = nn.Conv2d(8, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.stem(x))
        gated = features * torch.sigmoid(self.gate(features)) * 1.5
        return self.classifier(nn.functional.interpolate(gated, scale_factor=2.0, mode="bilinear"))
