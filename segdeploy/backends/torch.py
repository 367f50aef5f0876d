"""PyTorch reference runner: the eager model behind the same runner protocol.

`TorchRunner` is also how the evaluation engine runs a PyTorch model
(`evaluation.engine.runner_predictor(TorchRunner(model))`): there is one way to run one.
"""

from __future__ import annotations

import numpy as np

from segdeploy.backends.base import Runner
from segdeploy.errors import SegdeployError


class TorchRunner(Runner):
    """Runs an `nn.Module` that maps one NCHW input to logits (or anything `pick_logits` reads)."""

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

        from segdeploy.models.outputs import pick_logits

        with torch.inference_mode():
            out = pick_logits(self.module(torch.from_numpy(np.ascontiguousarray(batch[self.input_name]))))
        return {self.output_name: out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)}


def reference_module(manifest, unsafe_load: bool = False):
    """The exported model as PyTorch eager (one logits output), refusing weights that differ from the export's.

    A checkpoint exported with --unsafe-load (pickled objects) is unpickled again only with
    `unsafe_load` (bench --unsafe-load): trusting a file once is not trusting it forever."""
    from segdeploy.models.loading import load_model, weights_fingerprint
    from segdeploy.models.outputs import LogitsModel

    record = manifest.model
    if record.unsafe_load and not unsafe_load:
        raise SegdeployError(
            f"{manifest.directory} was exported with --unsafe-load: rebuilding its PyTorch reference unpickles "
            f"{record.weights} again",
            "pass --unsafe-load to bench if you still trust that file",
        )
    loaded = load_model(record.source, model_kwargs=record.model_kwargs, num_classes=record.num_classes_arg,
                        weights=record.weights, weights_key=record.weights_key, unsafe_load=unsafe_load)
    if record.weights_fingerprint and weights_fingerprint(loaded.module) != record.weights_fingerprint:
        raise SegdeployError(
            "cannot rebuild the PyTorch reference: its weights differ from those exported "
            "(checkpoint changed, or random initialisation under another torch version)",
            "re-export with --weights, or bench with the same checkpoint",
        )
    return LogitsModel(loaded.module, upsample=record.upsampled_output).eval()
