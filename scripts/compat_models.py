"""Factories for third-party segmentation models, written the way a user would write them.

`segdeploy export scripts/compat_models.py:hf_segformer --num-classes 4 …` builds each one
from a configuration object with random weights (nothing is downloaded): tiny configs, so
the compatibility matrix (`scripts/compat_matrix.py`) and the tests run in seconds. The
third-party libraries are imported inside each factory: importing this file needs none.
"""

from __future__ import annotations

from torch import nn


def hf_segformer(num_classes: int = 4) -> nn.Module:
    """transformers' SegFormer (MiT encoder, all-MLP head; logits at 1/4 resolution)."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1], hidden_sizes=[16, 32, 48, 64],
                             num_attention_heads=[1, 2, 2, 4], decoder_hidden_size=64, num_labels=num_classes)
    return SegformerForSemanticSegmentation(config)


def hf_dpt(num_classes: int = 4) -> nn.Module:
    """transformers' DPT (ViT encoder, reassemble + fusion neck). Square inputs only: its
    semantic-segmentation head reshapes the tokens to √L × √L."""
    from transformers import DPTConfig, DPTForSemanticSegmentation

    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                       image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[16, 32, 32, 64], fusion_hidden_size=32, num_labels=num_classes,
                       use_auxiliary_head=False)
    return DPTForSemanticSegmentation(config)


def hf_beit(num_classes: int = 4) -> nn.Module:
    """transformers' BEiT (ViT with relative position bias, UperNet-style head)."""
    from transformers import BeitConfig, BeitForSemanticSegmentation

    config = BeitConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                        image_size=64, patch_size=16, out_indices=[0, 1, 2, 3], pool_scales=[1, 2, 3, 6],
                        num_labels=num_classes, use_auxiliary_head=False, use_relative_position_bias=True,
                        auxiliary_channels=32)
    return BeitForSemanticSegmentation(config)


def hf_mobilevit(num_classes: int = 4) -> nn.Module:
    """transformers' MobileViT with its DeepLabV3 head. Freshly initialised, its logits
    underflow to zero (a degenerate output the parity proof reports as such)."""
    from transformers import MobileViTConfig, MobileViTForSemanticSegmentation

    config = MobileViTConfig(num_labels=num_classes, image_size=64, hidden_sizes=[32, 48, 64],
                             neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64], aspp_out_channels=32)
    return MobileViTForSemanticSegmentation(config)


class TimmViTSeg(nn.Module):
    """A timm ViT (fused attention: F.scaled_dot_product_attention) with a linear per-patch
    head, SETR-naive style: tokens → 1/16 map → class logits (segdeploy upsamples them)."""

    def __init__(self, num_classes: int = 4, name: str = "vit_tiny_patch16_224"):
        super().__init__()
        import timm

        self.encoder = timm.create_model(name, pretrained=False, num_classes=0, img_size=(64, 96),
                                         dynamic_img_size=True, depth=2)
        self.head = nn.Conv2d(self.encoder.embed_dim, num_classes, 1)

    def forward(self, x):
        tokens = self.encoder.forward_features(x)[:, self.encoder.num_prefix_tokens:]
        n, _, h, w = x.shape
        grid = tokens.transpose(1, 2).reshape(n, -1, h // 16, w // 16)
        return self.head(grid)


def timm_vit(num_classes: int = 4) -> nn.Module:
    return TimmViTSeg(num_classes)
