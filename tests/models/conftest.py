"""Zoo test support: tiny variants, non-square sizes, weights that make parity meaningful."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

from segdeploy.models import list_specs

TINY = 0.0625  # width multiplier of the test variants (64 channels → 4)
NUM_CLASSES = 5

# The test machines are small and shared: one intra-op thread avoids oversubscription.
torch.set_num_threads(1)


def zoo_names() -> list[str]:
    """Every registered architecture whose builder takes a width multiplier (the zoo)."""
    return [s.name for s in list_specs() if "width" in inspect.signature(s.builder).parameters]


def test_size(multiple: int) -> tuple[int, int]:
    """Non-square; not divisible by 32 (nor by 2 after a few pools) where the model allows."""
    return {1: (100, 150), 16: (80, 144)}.get(multiple, (96, 160))


test_size.__test__ = False  # a helper, not a test


@torch.no_grad()
def condition(model: nn.Module, sample: torch.Tensor, seed: int = 0) -> nn.Module:
    """Random weights with signal: randomised BatchNorm statistics, and every conv rescaled
    (in forward order) so that its output has zero-mean channels (where it has a bias) and unit std on `sample`.

    PyTorch's default init shrinks activations layer after layer, so a deep random model
    outputs little more than its classifier bias: every pixel takes the same class and
    argmax agreement cannot fail. Conditioned weights give logits that vary over the image.
    """
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
            module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
        elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module.bias is not None:
            module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)

    def normalise(module, _inputs, output):
        if module.bias is not None:  # centre each channel, so no class wins everywhere by its offset
            mean = output.mean(dim=(0, 2, 3))
            module.bias.sub_(mean)
            output = output - mean.view(1, -1, 1, 1)
        std = float(output.std())
        if std > 1e-6:
            module.weight.div_(std)
            if module.bias is not None:
                module.bias.div_(std)
            return output / std
        return output

    model.eval()
    handles = [m.register_forward_hook(normalise) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return model


@pytest.fixture(scope="session")
def conditioned_weights(tmp_path_factory):
    """name → path of a state_dict of the tiny variant with conditioned weights (cached)."""
    from segdeploy.models import get_spec

    cache: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in cache:
            spec = get_spec(name)
            model = spec.build(num_classes=NUM_CLASSES, width=TINY)
            h, w = test_size(spec.size_multiple)
            condition(model, torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(1)))
            path = tmp_path_factory.mktemp("weights") / f"{name}.pth"
            torch.save(model.state_dict(), path)
            cache[name] = path
        return cache[name]

    return make
