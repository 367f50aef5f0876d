"""Model registry and architectures. Importing this package registers every architecture."""

from segdeploy.models import (  # noqa: F401  (importing registers)
    aspp,
    deeplab_v1v2,
    deeplabv3,
    dilatednet,
    fcdensenet,
    fcn,
    pspnet,
    segnet,
    torchvision_models,
    unet,
)
from segdeploy.models.registry import REGISTRY, ModelSpec, get_spec, list_specs, register

__all__ = ["REGISTRY", "ModelSpec", "get_spec", "list_specs", "register"]
