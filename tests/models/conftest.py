"""Zoo fixtures: weights that make the parity proof meaningful (`segdeploy.models.conditioning`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segdeploy.models.conditioning import condition
from zoo_support import NUM_CLASSES, TINY, input_size


@pytest.fixture(scope="session")
def conditioned_weights(tmp_path_factory):
    """name → path of a state_dict of the tiny variant with conditioned weights (cached)."""
    from segdeploy.models import get_spec

    cache: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in cache:
            spec = get_spec(name)
            with torch.random.fork_rng():  # the same weights whatever ran before in this worker
                torch.manual_seed(0)
                model = spec.build(num_classes=NUM_CLASSES, width=TINY)
            h, w = input_size(spec.size_multiple)
            condition(model, torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(1)))
            path = tmp_path_factory.mktemp("weights") / f"{name}.pth"
            torch.save(model.state_dict(), path)
            cache[name] = path
        return cache[name]

    return make
