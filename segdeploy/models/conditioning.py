"""Random weights that make a parity proof meaningful.

PyTorch's default initialisation shrinks activations layer after layer, so a deep,
untrained model outputs little more than its classifier's bias: every pixel gets the
same class, and "argmax agreement" passes whatever the exported graph computes.
`condition(model, sample)` gives random weights with signal instead: BatchNorm
statistics and affine terms are randomised, and every convolution is rescaled, in
forward order, so that its output channels are centred (where it has a bias) and have
unit standard deviation on `sample` (a data-dependent initialisation in the spirit of
LSUV, Mishkin & Matas 2016). Used by the zoo's tests and `scripts/check_zoo_fullsize.py`.
"""

from __future__ import annotations

import torch
from torch import nn

CONVS = (nn.Conv2d, nn.ConvTranspose2d)


@torch.no_grad()
def randomise_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
            if module.affine:
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def _normalise(module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
    if module.bias is not None:  # centred channels: no class wins everywhere by its offset
        mean = output.mean(dim=(0, 2, 3))
        module.bias.sub_(mean)
        output = output - mean.view(1, -1, 1, 1)
    std = float(output.std())
    if std > 1e-6:
        module.weight.div_(std)
        if module.bias is not None:
            module.bias.div_(std)
        output = output / std
    return output


@torch.no_grad()
def condition(model: nn.Module, sample: torch.Tensor, seed: int = 0) -> nn.Module:
    """Condition `model`'s weights in place on `sample` (see the module docstring); returns it in eval mode."""
    randomise_batchnorm(model, torch.Generator().manual_seed(seed))
    model.eval()
    handles = [m.register_forward_hook(_normalise) for m in model.modules() if isinstance(m, CONVS)]
    try:
        model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return model
