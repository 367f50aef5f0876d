"""Dataset readers on small fake trees: canonical, CamVid-style splits, VOC, Cityscapes, images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segdeploy.classes import default_palette
from segdeploy.data import detect_format, find_images, open_dataset
from segdeploy.errors import SegdeployError

H, W = 30, 40


def _write_pair(root, stem, label, suffix=".png", image_hw=None):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    hw = image_hw or label.shape
    image = np.random.default_rng(len(stem)).integers(0, 256, (*hw, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / "images" / f"{stem}{suffix}")
    Image.fromarray(label.astype(np.uint8)).save(root / "labels" / f"{stem}.png")


def _canonical(root, n=3, classes=("a", "b", "c"), ignore=255):
    for i in range(n):
        label = np.full((H, W), i % len(classes), np.uint8)
        label[0, :5] = ignore
        _write_pair(root, f"frame_{i}", label, suffix=".jpg" if i % 2 else ".png")
    (root / "classes.json").write_text(json.dumps({"classes": list(classes), "ignore_index": ignore}))
    return root


def test_canonical_reads_images_and_labels(tmp_path):
    dataset = open_dataset(_canonical(tmp_path / "set"))
    assert dataset.format == "canonical" and len(dataset) == 3 and dataset.has_labels
    assert dataset.classes.names == ("a", "b", "c") and dataset.classes.ignore_index == 255
    samples = list(dataset)
    assert [s.stem for s in samples] == ["frame_0", "frame_1", "frame_2"]
    stem, image, label = samples[2]
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert label.shape == (H, W) and label[5, 5] == 2 and label[0, 0] == 255


def test_camvid_style_split_folder_with_classes_in_parent(tmp_path):
    root = tmp_path / "camvid"
    _canonical(root / "val", n=2)
    (root / "val" / "classes.json").rename(root / "classes.json")
    dataset = open_dataset(root, split="val")
    assert len(dataset) == 2 and dataset.classes.num_classes == 3


def test_split_list_file(tmp_path):
    root = _canonical(tmp_path / "set", n=4)
    (root / "splits").mkdir()
    (root / "splits" / "val.txt").write_text("frame_3\nframe_1\n")
    assert [s.stem for s in open_dataset(root, split="val")] == ["frame_3", "frame_1"]
    with pytest.raises(SegdeployError, match="split list not found.*available splits: val"):
        open_dataset(root, split="test")
    (root / "splits" / "bad.txt").write_text("frame_9\n")
    with pytest.raises(SegdeployError, match="frame_9"):
        open_dataset(root, split="bad")


def test_image_without_label_is_an_error(tmp_path):
    root = _canonical(tmp_path / "set")
    (root / "labels" / "frame_1.png").unlink()
    with pytest.raises(SegdeployError, match=r"1 image\(s\).*no label.*frame_1"):
        open_dataset(root)


def test_no_images_is_an_error(tmp_path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "labels").mkdir()
    with pytest.raises(SegdeployError, match="no images"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(SegdeployError, match="not found"):
        open_dataset(tmp_path / "missing")


def test_label_value_outside_classes_is_an_error(tmp_path):
    root = _canonical(tmp_path / "set")
    label = np.zeros((H, W), np.uint8)
    label[3, 3] = 7
    Image.fromarray(label).save(root / "labels" / "frame_1.png")
    dataset = open_dataset(root)
    dataset[0]  # fine
    with pytest.raises(SegdeployError, match=r"frame_1.png has values \[7\] outside the 3 classes.*ignore index 255"):
        dataset[1]


def test_size_mismatch_is_an_error(tmp_path):
    root = _canonical(tmp_path / "set")
    Image.fromarray(np.zeros((H, W + 2), np.uint8)).save(root / "labels" / "frame_0.png")
    with pytest.raises(SegdeployError, match="frame_0.png is 42x30 but its image is 40x30"):
        open_dataset(root)[0]


def test_colour_label_is_an_error(tmp_path):
    root = _canonical(tmp_path / "set")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "labels" / "frame_0.png")
    with pytest.raises(SegdeployError, match="colour"):
        open_dataset(root)[0]


def test_missing_classes_json_is_an_error_unless_given(tmp_path):
    root = _canonical(tmp_path / "set")
    (root / "classes.json").unlink()
    with pytest.raises(SegdeployError, match="no classes.json"):
        open_dataset(root)
    (tmp_path / "c.json").write_text(json.dumps(["x", "y", "z"]))
    dataset = open_dataset(root, classes=tmp_path / "c.json")
    assert dataset.classes.names == ("x", "y", "z")
    with pytest.raises(SegdeployError, match="no ignore_index set"):
        dataset[0]  # the 255 pixels are now outside the classes


def test_voc_tree(tmp_path):
    root = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for stem, cls in (("2007_000032", 1), ("2007_000039", 15)):
        Image.fromarray(np.full((H, W, 3), 100, np.uint8)).save(root / "JPEGImages" / f"{stem}.jpg")
        label = np.zeros((H, W), np.uint8)
        label[5:20, 5:30] = cls
        label[4, 5:30] = 255  # object border
        png = Image.fromarray(label, mode="P")
        png.putpalette([v for c in default_palette(256) for v in c])
        png.save(root / "SegmentationClass" / f"{stem}.png")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000039\n")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n")
    assert detect_format(root) == "voc"
    dataset = open_dataset(root)  # default split: val
    assert len(dataset) == 1 and dataset.classes.num_classes == 21 and dataset.classes.ignore_index == 255
    stem, image, label = dataset[0]
    assert stem == "2007_000039" and image.shape == (H, W, 3)
    assert set(np.unique(label)) == {0, 15, 255}  # indices, not palette colours
    assert open_dataset(root, split="train")[0].label.max() == 255
    (root / "SegmentationClass" / "2007_000032.png").unlink()
    with pytest.raises(SegdeployError, match="2007_000032 has no label"):
        open_dataset(root, split="train")


def test_cityscapes_tree_maps_label_ids_to_train_ids(tmp_path):
    root = tmp_path / "cityscapes"
    images, labels = root / "leftImg8bit" / "val" / "bonn", root / "gtFine" / "val" / "bonn"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    ids = np.array([[0, 7, 8, 26], [33, 23, 1, 4]], np.uint8).repeat(5, 0).repeat(5, 1)
    Image.fromarray(np.zeros((*ids.shape, 3), np.uint8)).save(images / "bonn_000000_000019_leftImg8bit.png")
    Image.fromarray(ids).save(labels / "bonn_000000_000019_gtFine_labelIds.png")
    assert detect_format(root) == "cityscapes"
    dataset = open_dataset(root)
    assert dataset.classes.num_classes == 19 and dataset.classes.names[13] == "car"
    stem, _, label = dataset[0]
    assert stem == "bonn_000000_000019"
    # road 7 -> 0, sidewalk 8 -> 1, car 26 -> 13, bicycle 33 -> 18, sky 23 -> 10; void ids -> 255
    np.testing.assert_array_equal(label[::5, ::5], [[255, 0, 1, 13], [18, 10, 255, 255]])
    (labels / "bonn_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(SegdeployError, match="has no label"):
        open_dataset(root)


def test_image_only_folder(tmp_path):
    for i in range(3):
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / f"img{i}.jpg")
    (tmp_path / "notes.txt").write_text("ignored")
    dataset = open_dataset(tmp_path)
    assert dataset.format == "images" and not dataset.has_labels and dataset.classes is None
    assert [s.label for s in dataset] == [None, None, None]
    assert [p.name for p in find_images(tmp_path)] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    with pytest.raises(SegdeployError, match="split list not found"):
        open_dataset(tmp_path, split="val")
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "val.txt").write_text("img2\n")
    assert [s.stem for s in open_dataset(tmp_path, split="val")] == ["img2"]


def test_labels_false_reads_images_only(tmp_path):
    dataset = open_dataset(_canonical(tmp_path / "set"), labels=False)
    assert len(dataset) == 3 and not dataset.has_labels and dataset[0].label is None


def test_unknown_format(tmp_path):
    with pytest.raises(SegdeployError, match="unknown dataset format"):
        open_dataset(tmp_path, format="coco")
