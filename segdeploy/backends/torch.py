"""PyTorch reference runner: the eager model behind the same runner protocol."""

from __future__ import annotations

import numpy as np

from segdeploy.backends.base import Runner


class TorchRunner(Runner):
    """Runs an `nn.Module` that maps one NCHW input to logits (or a dict holding 'out')."""

    name = "pytorch"

    def __init__(self, module, *, input_name: str = "input", output_name: str = "logits", threads: int | None = None):
        super().__init__()
        self.module, self.input_name, self.output_name, self.threads = module, input_name, output_name, threads

    def _activate(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        self.module.eval()

    def _deactivate(self) -> None:
        """Nothing to free: the module belongs to the caller."""

    def _infer(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from segdeploy.export.wrapper import pick_logits

        with torch.inference_mode():
            out = pick_logits(self.module(torch.from_numpy(np.ascontiguousarray(batch[self.input_name]))))
        return {self.output_name: out.numpy()}
