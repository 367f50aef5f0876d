"""Degenerate model outputs: logits no graph can be compared with.

The parity proof measures the graph's error relative to the range of PyTorch's logits and
compares their argmax. Neither means anything when the model's own output is degenerate:

* non-finite — NaN or ±inf anywhere (a diverged checkpoint, a bad normalisation);
* underflowing — every logit is zero or denormal (below float32's smallest normal number,
  1.2e-38), as an untrained deep model can give: activations shrink layer after layer until
  they vanish (a fresh MobileViT-style network reaches ~1e-43), and a runtime that flushes
  denormals to zero is then "wrong" by 100 %;
* constant — all logits equal, to within float32 rounding of their magnitude: the argmax
  is a tie everywhere and any constant graph would pass.

Such outputs are reported as what they are, found in PyTorch before any graph is involved,
instead of as a parity failure that blames the graph (or a pass that proves nothing).
"""

from __future__ import annotations

import numpy as np

from segdeploy.errors import ParityError

# Logits closer together than this many float32 ulps of their magnitude are "all equal":
# rounding alone moves them that much.
EQUAL_ULPS = 16


def degenerate_reason(logits: np.ndarray) -> tuple[str, str] | None:
    """(what is degenerate about `logits`, what to do), or None when they can be compared."""
    if not np.issubdtype(logits.dtype, np.floating) or logits.size == 0:
        return None  # class maps (fused argmax) are compared by agreement only
    finite = np.isfinite(logits)
    if not finite.all():
        nan = int(np.isnan(logits).sum())
        return (f"{nan} NaN and {int((~finite).sum()) - nan} infinite values among its {logits.size} logits",
                "check the weights (a diverged checkpoint?) and the input normalisation (--mean/--std/--scale)")
    peak = float(np.abs(logits).max())
    if peak < np.finfo(np.float32).tiny:
        return (f"all its logits are zero or denormal (largest magnitude {peak:.3g}): they underflow float32",
                "an untrained model's activations can shrink to nothing: train it or load weights (--weights)")
    if float(logits.max() - logits.min()) <= EQUAL_ULPS * np.finfo(np.float32).eps * peak:
        return (f"all its logits are equal ({float(logits.flat[0]):.6g}) to within float32 rounding: its output "
                "does not depend on the input", "train the model or load weights (--weights)")
    return None


def check_not_degenerate(logits: np.ndarray, shape) -> None:
    """Raise ParityError saying what is degenerate about the model's own output at `shape`."""
    found = degenerate_reason(logits)
    if found is not None:
        what, todo = found
        raise ParityError(
            f"the model's own output in PyTorch at input {'x'.join(str(int(d)) for d in shape)} is degenerate — "
            f"{what}; the exported graph cannot be compared with it",
            todo,
        )
