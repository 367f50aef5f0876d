"""Model registry and architectures. Importing this package registers every architecture."""

from segdeploy.models import torchvision_models, unet  # noqa: F401  (registers)
from segdeploy.models.registry import REGISTRY, ModelSpec, get_spec, list_specs, register

__all__ = ["REGISTRY", "ModelSpec", "get_spec", "list_specs", "register"]
