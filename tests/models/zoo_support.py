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


def tiny_kwargs(name: str) -> dict:
    """Keyword arguments that make a registry architecture tiny: the zoo's width multiplier (the U-Net
    at 0.125), torchvision's models as they are."""
    if name not in zoo_names():
        return {}
    return {"width": 0.125 if name == "unet" else TINY}


def tiny_shape(name: str, base_hw: tuple[int, int] = (64, 96)) -> tuple[int, int, int, int]:
    """A small non-square input for `name`, rounded up to its size multiple."""
    from segdeploy.models import get_spec

    multiple = get_spec(name).size_multiple
    h, w = (max(multiple, -(-d // multiple) * multiple) for d in base_hw)
    return (1, 3, h, w + multiple if h == w else w)


def input_size(multiple: int) -> tuple[int, int]:
    """Non-square; not divisible by 32 (nor by 2 after a few pools) where the model allows."""
    return {1: (100, 150), 16: (80, 144)}.get(multiple, (96, 160))


def check_graph_against_model(name: str, weights, onnx_path, shapes) -> None:
    """Not trusting the export's own parity report: run the graph here on fresh inputs of each
    NCHW shape and compare it with the model (the zoo's strict thresholds: rel error ≤ 1e-4,
    argmax agreement ≥ 99.9 %), and check that the class maps vary (several classes win)."""
    import numpy as np
    import onnxruntime as ort

    from segdeploy.models import get_spec

    model = get_spec(name).build(num_classes=NUM_CLASSES, width=TINY).eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for index, shape in enumerate(shapes):
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(11 + index))
        with torch.no_grad():
            want = model(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        assert got.shape == want.shape == (shape[0], NUM_CLASSES, *shape[2:])
        assert np.abs(got - want).max() <= 1e-4 * (want.max() - want.min())
        assert (got.argmax(1) == want.argmax(1)).mean() >= 0.999
        assert len(np.unique(want.argmax(1))) >= 2
