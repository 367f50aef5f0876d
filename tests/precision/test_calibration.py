"""Calibration image selection and the reader that feeds onnxruntime's calibrators."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segdeploy.errors import SegdeployError, UsageError
from segdeploy.manifest import Manifest
from segdeploy.precision import calibration
from segdeploy.evaluation.batches import BatchReader
from segdeploy.graph_spec import GraphSpec
from segdeploy.precision.calibration import CalibrationReader, GraphFeeds, check_readable, reader_for, select_images
from segdeploy.preprocess import Preprocess

from tests.helpers import write_images


def test_selection_spreads_over_the_folder(tmp_path):
    folder = write_images(tmp_path / "c", 10)
    chosen = select_images(folder, 4, warn=pytest.fail)
    assert [p.name for p in chosen.images] == ["frame_000.png", "frame_003.png", "frame_006.png", "frame_009.png"]


def test_fewer_images_than_asked_warns_and_uses_all(tmp_path):
    folder = write_images(tmp_path / "c", 3)
    warnings = []
    chosen = select_images(folder, 50, warn=warnings.append)
    assert len(chosen.images) == 3 and chosen.short
    assert len(warnings) == 1 and "only 3 calibration images" in warnings[0] and "50" in warnings[0]


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegdeployError, match="no images"):
        select_images(tmp_path / "empty", 10)


def test_missing_default_folder_says_to_pass_calib(tmp_path, monkeypatch):
    monkeypatch.setattr(calibration, "default_calib_dir", lambda: tmp_path / "nowhere" / "calib")  # the name select_images reads
    with pytest.raises(SegdeployError, match="--calib DIR"):
        select_images(None, 10)


def test_default_folder_is_beside_the_package():
    import segdeploy

    from pathlib import Path

    assert calibration.default_calib_dir() == Path(segdeploy.__file__).resolve().parents[1] / "calib"


def test_bad_calib_size():
    with pytest.raises(UsageError):
        select_images(None, 0)


def test_unreadable_image_named_in_the_error(tmp_path):
    folder = write_images(tmp_path / "c", 2)
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    chosen = select_images(folder, 3, warn=lambda _: None)
    with pytest.raises(SegdeployError, match="broken.jpg"):
        check_readable(chosen.images)


def test_fingerprint_changes_with_image_bytes(tmp_path):
    folder = write_images(tmp_path / "c", 2)
    before = select_images(folder, 2).fingerprint()
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(folder / "frame_001.png")
    assert select_images(folder, 2).fingerprint() != before


def _reader(images, preprocess, name, batch, hw, on_batch=None):
    spec = GraphSpec(name, (batch, 3, *hw), "NCHW", "float32", "logits", "logits", "float32")
    return CalibrationReader(GraphFeeds(BatchReader(images, preprocess, hw, batch, whole_batches=True), spec), on_batch)


def test_reader_applies_the_manifest_preprocessing(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    pixels = np.zeros((96, 160, 3), np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 10, 200, 30
    Image.fromarray(pixels).save(folder / "a.png")
    pre = Preprocess(mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 5.0), channel_order="BGR")
    reader = _reader((folder / "a.png",), pre, "x", 1, (96, 160))
    batch = reader.get_next()
    assert set(batch) == {"x"} and batch["x"].shape == (1, 3, 96, 160) and batch["x"].dtype == np.float32
    # BGR order: channel 0 is blue (30): (30 - 1) / 2
    np.testing.assert_allclose(batch["x"][0, :, 50, 70], [(30 - 1) / 2, (200 - 2) / 4, (10 - 3) / 5], rtol=1e-6)
    assert reader.get_next() is None


def test_reader_batches_progress_and_ranges(tmp_path):
    folder = write_images(tmp_path / "c", 5)
    seen = []
    chosen = select_images(folder, 5)
    reader = _reader(chosen.images, Preprocess(), "input", 2, (32, 48), on_batch=lambda d, t: seen.append((d, t)))
    assert len(reader) == 2  # 5 images in batches of 2: the odd one is not used
    reader.set_range(1, 2)
    assert reader.get_next()["input"].shape == (2, 3, 32, 48)
    assert reader.get_next() is None
    assert seen == [(1, 2)]


def test_reader_for_uses_manifest_shape_and_name(deploy, calib_dir):
    manifest = Manifest.load(deploy("dynamic"))
    reader = reader_for(manifest, select_images(calib_dir, 3))
    batch = reader.get_next()
    assert batch["input"].shape == (1, 3, 96, 160)
