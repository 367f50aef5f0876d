"""Zoo test support: tiny variants, non-square sizes (imported by the zoo tests and conftest)."""

from __future__ import annotations

import inspect

import torch

from segdeploy.models import list_specs

TINY = 0.0625  # width multiplier of the test variants (64 channels → 4)
NUM_CLASSES = 5

# The test machines are small and shared: one intra-op thread avoids oversubscription.
torch.set_num_threads(1)


def zoo_names() -> list[str]:
    """Every registered architecture whose builder takes a width multiplier (the zoo)."""
    return [s.name for s in list_specs() if "width" in inspect.signature(s.builder).parameters]


def input_size(multiple: int) -> tuple[int, int]:
    """Non-square; not divisible by 32 (nor by 2 after a few pools) where the model allows."""
    return {1: (100, 150), 16: (80, 144)}.get(multiple, (96, 160))
