"""The one batch reader: preprocessing as recorded, whole batches, limits, synthetic batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segdeploy.data import open_dataset
from segdeploy.errors import SegdeployError
from segdeploy.evaluation.batches import BatchReader, synthetic_batches
from segdeploy.graph_spec import GraphSpec
from segdeploy.preprocess import Preprocess

H, W = 30, 40


def _dataset(root, n=5):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        Image.fromarray(np.full((H, W, 3), 20 * i, np.uint8)).save(root / "images" / f"frame_{i}.png")
        Image.fromarray(np.full((H, W), i % 2, np.uint8)).save(root / "labels" / f"frame_{i}.png")
    (root / "classes.json").write_text(json.dumps({"classes": ["a", "b"]}))
    return open_dataset(root)


def test_batches_letterbox_labels_and_partial_last_batch(tmp_path):
    dataset = _dataset(tmp_path / "set")
    batches = list(BatchReader(dataset, Preprocess(resize="letterbox"), (32, 64), 2))
    assert [b.inputs.shape for b in batches] == [(2, 3, 32, 64), (2, 3, 32, 64), (1, 3, 32, 64)]
    assert [b.canvases.shape for b in batches][0] == (2, 32, 64, 3) and batches[0].canvases.dtype == np.uint8
    assert batches[0].inputs.dtype == np.float32
    assert batches[2].stems == ["frame_4"] and batches[2].labels[0].shape == (H, W)
    # 30x40 into 32x64 keeping aspect: ratio min(32/30, 64/40) = 1.0667 -> 32 x 43
    assert batches[0].geometries[0].content_hw == (32, 43)
    # the inputs are the canvases normalised with the ImageNet mean/std, computed here independently
    pixel = batches[1].canvases[1, 5, 5].astype(np.float64)
    want = (pixel - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]
    np.testing.assert_allclose(batches[1].inputs[1, :, 5, 5], want, rtol=1e-5)
    assert batches[1].canvases[1, 5, 5, 0] == 60  # frame_3 is grey 60


def test_limit_and_whole_batches(tmp_path):
    dataset = _dataset(tmp_path / "set")
    assert sum(b.size for b in BatchReader(dataset, Preprocess(), (32, 64), 4, limit=3)) == 3
    whole = BatchReader(dataset, Preprocess(), (32, 64), 2, whole_batches=True)
    assert len(whole) == 2 and whole.images == 4
    with pytest.raises(SegdeployError, match="batches of 4 images but only 3 evaluation images"):
        BatchReader(dataset, Preprocess(), (32, 64), 4, limit=3, whole_batches=True, what="evaluation images")
    with pytest.raises(SegdeployError, match="batch size"):
        BatchReader(dataset, Preprocess(), (32, 64), 0)


def test_image_files_read_in_the_order_given(tmp_path):
    dataset = _dataset(tmp_path / "set")
    paths = [tmp_path / "set" / "images" / f"frame_{i}.png" for i in (3, 0)]
    batch = BatchReader(paths, Preprocess(), (H, W), 2)[0]
    assert batch.stems == ["frame_3", "frame_0"] and batch.labels == [None, None]
    assert batch.canvases[0, 0, 0, 0] == 60 and batch.canvases[1, 0, 0, 0] == 0
    assert len(dataset) == 5


@pytest.mark.parametrize("fused", [False, True])
def test_synthetic_batches_take_the_graph_input_kind(fused):
    spec = GraphSpec("input", (2, 24, 32, 3) if fused else (2, 3, 24, 32), "NHWC" if fused else "NCHW",
                     "uint8" if fused else "float32", "logits", "logits", "float32")
    first, second = synthetic_batches(spec, count=2)
    feed = spec.feed(first)["input"]
    assert feed.shape == spec.input_shape and feed.dtype == (np.uint8 if fused else np.float32)
    assert not np.array_equal(feed, spec.feed(second)["input"]) and first.geometries is None
    again = synthetic_batches(spec, count=1)[0]
    assert np.array_equal(spec.feed(again)["input"], feed)  # seeded
