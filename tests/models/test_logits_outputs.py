"""`models/outputs.py`: any model output → the logits tensor (export, bench's reference, the PyTorch runner)."""

from __future__ import annotations

import pytest
import torch

from segdeploy.errors import ExportError
from segdeploy.models.outputs import LogitsModel, logits_key, pick_logits

LOGITS = torch.arange(24.0).reshape(1, 2, 3, 4)
OTHER = torch.zeros(1, 2, 3, 4)


def test_torchvision_dict_gives_out_not_aux():
    assert pick_logits({"aux": OTHER, "out": LOGITS}) is LOGITS


def test_transformers_output_gives_logits_not_loss_or_hidden_states():
    """transformers' output objects are dicts whose first entry is the loss when labels are given."""
    outputs = pytest.importorskip("transformers.modeling_outputs")
    output = outputs.SemanticSegmenterOutput(loss=torch.tensor(0.5), logits=LOGITS, hidden_states=(OTHER,))
    assert list(output.keys())[0] == "loss"
    assert pick_logits(output) is LOGITS
    assert logits_key(output) == "logits"


def test_other_dicts_tuples_and_tensors():
    assert pick_logits({"seg": LOGITS, "edge": OTHER}) is LOGITS
    assert pick_logits((LOGITS, OTHER)) is LOGITS
    assert pick_logits([{"out": LOGITS}]) is LOGITS
    assert pick_logits(LOGITS) is LOGITS


@pytest.mark.parametrize("output, what", [({}, "empty dict"), ((), "empty sequence"), ("x", "returned str")])
def test_outputs_without_logits_are_refused(output, what):
    with pytest.raises(ExportError, match=what):
        pick_logits(output)


def test_logits_model_upsamples_smaller_logits_to_the_input():
    class Quarter(torch.nn.Module):
        def forward(self, x):
            return {"logits": x[:, :2, ::4, ::4], "loss": None}

    x = torch.randn(1, 3, 16, 24)
    out = LogitsModel(Quarter(), upsample=True)(x)
    assert out.shape == (1, 2, 16, 24)
    assert torch.equal(LogitsModel(Quarter())(x), x[:, :2, ::4, ::4])
