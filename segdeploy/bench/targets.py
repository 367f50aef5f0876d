"""What `bench` measures: the PyTorch reference plus the deploy directory's runnable artifacts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from segdeploy.backends.select import cannot_run_here, make_runner
from segdeploy.errors import SegdeployError, UsageError
from segdeploy.manifest import Manifest

REFERENCE = "pytorch"


@dataclass
class Target:
    """One thing to bench: a name, how it runs, and a factory for its runner (a context manager)."""

    name: str
    backend: str
    precision: str
    open: Callable[[], object]  # -> Runner-like: `with r:`, `r.infer({name: array}) -> {name: array}`
    target: str = ""  # the runtime family a precision graph was made for (e.g. tensorrt)


@dataclass
class Skipped:
    name: str
    reason: str


def select_targets(
    manifest: Manifest, names: list[str] | None, backends: list[str] | None, threads: int | None
) -> tuple[Target, list[Target], list[Skipped]]:
    """The PyTorch reference, the artifacts to bench, and those that cannot run here (with why)."""
    artifacts = manifest.artifacts
    if not artifacts:
        raise SegdeployError(f"{manifest.directory} has no artifacts", "run `segdeploy export` and `segdeploy build` first")
    unknown = [n for n in names or [] if n not in artifacts]
    if unknown:
        raise UsageError(f"no artifact {', '.join(unknown)} in {manifest.directory}; artifacts: {', '.join(artifacts)}")
    chosen = [n for n in artifacts if (not names or n in names)]
    chosen = [n for n in chosen if not backends or artifacts[n].get("backend") in backends]
    if not chosen:
        raise UsageError(f"no artifact of backend {', '.join(backends or [])} in {manifest.directory}")
    targets, skipped = [], []
    for name in chosen:
        manifest.verify(name)  # a modified artifact is an error, never a silent skip
        entry = artifacts[name]
        reason = cannot_run_here(entry)
        if reason and names and name in names:
            raise SegdeployError(f"artifact {name} cannot run here: {reason}")
        if reason:
            skipped.append(Skipped(name, reason))
            continue
        targets.append(_artifact_target(manifest, name, entry, threads))
    return reference_target(manifest, threads), targets, skipped


def _artifact_target(manifest: Manifest, name: str, entry: dict, threads: int | None) -> Target:
    factory = lambda: make_runner(manifest, name, threads=threads)  # noqa: E731
    return Target(name, entry.get("backend", "?"), entry.get("precision", "?"), factory, entry.get("target", ""))


def reference_target(manifest: Manifest, threads: int | None) -> Target:
    """PyTorch eager, rebuilt from what the manifest recorded (source, kwargs, weights)."""
    return Target(REFERENCE, "torch", "fp32", lambda: TorchRunner(manifest, threads))


class TorchRunner:
    """The original model in PyTorch eager (the reference every artifact is compared with)."""

    name = "torch"

    def __init__(self, manifest: Manifest, threads: int | None):
        self.manifest, self.threads, self.model = manifest, threads, None
        self.input_name = manifest.data["input"]["name"]
        self.output_name = manifest.data["output"]["name"]

    def __enter__(self) -> "TorchRunner":
        import torch

        from segdeploy.export.wrapper import LogitsModel
        from segdeploy.models.loading import load_model, weights_fingerprint

        if self.threads:
            torch.set_num_threads(self.threads)
        record = self.manifest.data["model"]
        weights = record.get("weights")
        loaded = load_model(record["source"], model_kwargs=record.get("model_kwargs") or {},
                            num_classes=record.get("num_classes_arg"),
                            weights=weights)
        recorded = record.get("weights_fingerprint")
        if recorded and weights_fingerprint(loaded.module) != recorded:
            raise SegdeployError(
                "cannot rebuild the PyTorch reference: its weights differ from those exported "
                "(checkpoint changed, or random initialisation under another torch version)",
                "re-export with --weights, or bench with the same checkpoint",
            )
        self.model = LogitsModel(loaded.module, upsample=bool(record.get("upsampled_output"))).eval()
        return self

    def __exit__(self, *_) -> None:
        self.model = None

    def infer(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            return {self.output_name: self.model(torch.from_numpy(batch[self.input_name])).numpy()}
