"""matplotlib for every PNG segdeploy writes: imported lazily, Agg backend (no display), atomic saves."""

from __future__ import annotations

from pathlib import Path

from segdeploy.atomic import atomic_path
from segdeploy.errors import SegdeployError, printable


def pyplot():
    """matplotlib.pyplot on the Agg backend; a clear error when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SegdeployError("plots need matplotlib", "pip install matplotlib, or pass --no-plots") from None
    return plt


def literal(text) -> str:
    """A user's name (file stem, class) as plain plot text: undecodable bytes escaped, `$` not mathtext."""
    return printable(str(text)).replace("$", r"\$")


def save_figure(plt, figure, path: Path) -> Path:
    """Write `figure` as a PNG atomically and free it."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
