"""The runner protocol shared by every backend."""

from __future__ import annotations

import abc

import numpy as np

from segdeploy.errors import SegdeployError


class Runner(abc.ABC):
    """Activate / infer / deactivate; use as a context manager."""

    name = "runner"

    def __init__(self) -> None:
        self.is_active = False

    def activate(self) -> "Runner":
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *_) -> None:
        self.deactivate()

    def infer(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named inputs in, named outputs out (host numpy arrays)."""
        if not self.is_active:
            raise SegdeployError(f"{self.name} is not active; use it as a context manager (`with runner:`)")
        return self._infer(batch)

    # -- implemented by each backend -------------------------------------------------------
    @abc.abstractmethod
    def _activate(self) -> None:
        """Load the model and allocate what inference needs."""

    @abc.abstractmethod
    def _deactivate(self) -> None:
        """Free everything `_activate` allocated."""

    @abc.abstractmethod
    def _infer(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch (the runner is active)."""
