"""torchvision's segmentation models, built without downloading anything.

`weights=None, weights_backbone=None`: pretrained weights come only from a local
`--weights` checkpoint. The auxiliary classifier is left out (`aux_loss=False`); its
keys are ignored when a checkpoint that has them is loaded.
"""

from __future__ import annotations

from torch import nn

from segdeploy.models.registry import ModelSpec, register

_TORCHVISION = {
    "fcn_resnet50": ("FCN", "FCN-ResNet50 (torchvision), output stride 8"),
    "fcn_resnet101": ("FCN", "FCN-ResNet101 (torchvision), output stride 8"),
    "deeplabv3_resnet50": ("DeepLab", "DeepLabV3-ResNet50 (torchvision), output stride 8"),
    "deeplabv3_resnet101": ("DeepLab", "DeepLabV3-ResNet101 (torchvision), output stride 8"),
    "deeplabv3_mobilenet_v3_large": ("DeepLab", "DeepLabV3-MobileNetV3-Large (torchvision)"),
    "lraspp_mobilenet_v3_large": ("LR-ASPP", "LR-ASPP MobileNetV3-Large (torchvision)"),
}


def _make_builder(name: str):
    def build(*, num_classes: int = 21) -> nn.Module:
        from torchvision.models import segmentation

        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        factory = getattr(segmentation, name)
        kwargs = dict(weights=None, weights_backbone=None, num_classes=num_classes)
        if not name.startswith("lraspp"):
            kwargs["aux_loss"] = False
        return factory(**kwargs)

    build.__name__ = f"build_{name}"
    build.__doc__ = f"torchvision `{name}` with random weights and `num_classes` outputs."
    return build


for _name, (_family, _desc) in _TORCHVISION.items():
    register(
        ModelSpec(
            name=_name,
            family=_family,
            builder=_make_builder(_name),
            default_input=(1, 3, 520, 520),
            dynamic_hw=True,
            description=_desc,
        )
    )
