"""The model registry: a plain dict from name to `ModelSpec`.

Architectures register themselves with `register(...)` at import time of their module;
`segdeploy.models` imports every architecture module, so importing it fills the registry.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from segdeploy.errors import SegdeployError, UsageError


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one architecture."""

    name: str
    family: str
    builder: Callable[..., nn.Module]
    default_input: tuple[int, int, int, int]  # N, C, H, W
    dynamic_hw: bool  # exports with dynamic height/width and stays exact
    description: str = ""
    size_multiple: int = 1  # H and W must be multiples of this (e.g. 16 for U-Net)

    def build(self, **kwargs) -> nn.Module:
        accepted = inspect.signature(self.builder).parameters
        has_var_kw = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
        unknown = [k for k in kwargs if k not in accepted and not has_var_kw]
        if unknown:
            valid = ", ".join(k for k, p in accepted.items() if p.kind is p.KEYWORD_ONLY)
            raise UsageError(f"model {self.name!r} takes no option(s) {', '.join(unknown)}; it takes: {valid}")
        try:
            return self.builder(**kwargs)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"cannot build {self.name!r}: {exc}") from None

    def parameter_count(self, num_classes: int = 21) -> int:
        """Parameter count, computed on the meta device (no memory, no weights)."""
        with torch.device("meta"):
            model = self.build(num_classes=num_classes)
        return sum(p.numel() for p in model.parameters())


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in REGISTRY:
        raise RuntimeError(f"model {spec.name!r} registered twice")
    REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        valid = ", ".join(sorted(REGISTRY))
        raise SegdeployError(f"unknown model {name!r}; valid names: {valid}", "see `segdeploy models`") from None


def list_specs() -> list[ModelSpec]:
    return [REGISTRY[name] for name in sorted(REGISTRY)]
