"""The shared preprocessing: normalisation, resize policies, geometry and its inverse."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segdeploy.errors import UsageError
from segdeploy.preprocess import IMAGENET_MEAN, IMAGENET_STD, Geometry, Preprocess


def _image(h=60, w=100, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_normalisation_by_hand_rgb_and_bgr():
    image = np.zeros((96, 160, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 255, 0, 128
    pre = Preprocess(mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0))
    x, geometry = pre(image, (96, 160))
    assert x.shape == (3, 96, 160) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0], [(255 - 10) / 2, (0 - 20) / 4, (128 - 30) / 5])
    assert geometry == Geometry(original_hw=(96, 160), content_hw=(96, 160))
    x_bgr, _ = Preprocess(mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0), channel_order="BGR")(image, (96, 160))
    np.testing.assert_allclose(x_bgr[:, 0, 0], [(128 - 10) / 2, (0 - 20) / 4, (255 - 30) / 5])


def test_scale_convention_matches_0_255_units():
    image = _image(96, 160)
    a, _ = Preprocess()(image, (96, 160))
    b, _ = Preprocess(scale=1 / 255, mean=tuple(m / 255 for m in IMAGENET_MEAN), std=tuple(s / 255 for s in IMAGENET_STD))(
        image, (96, 160)
    )
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    expected = (image[5, 7].astype(np.float64) - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(a[:, 5, 7], expected, rtol=1e-5)


def test_stretch_keeps_rows_and_columns_apart():
    # top half red, right half of the bottom blue: an H/W swap or transpose would show
    image = np.zeros((120, 200, 3), np.uint8)
    image[:60, :, 0] = 255
    image[60:, 100:, 2] = 255
    pre = Preprocess(mean=(0, 0, 0), std=(1, 1, 1))
    x, geometry = pre(image, (48, 80))
    assert x.shape == (3, 48, 80)
    assert geometry.content_hw == (48, 80) and geometry.original_hw == (120, 200)
    assert x[0, 5, 40] == 255 and x[2, 5, 40] == 0
    assert x[2, 40, 70] == 255 and x[2, 40, 10] == 0 and x[0, 40, 10] == 0


def test_stretch_resize_is_pil_bilinear():
    image = _image(180, 240, seed=3)
    x, _ = Preprocess(mean=(0, 0, 0), std=(1, 1, 1))(image, (96, 128))
    expected = np.asarray(Image.fromarray(image).resize((128, 96), Image.BILINEAR)).transpose(2, 0, 1)
    np.testing.assert_array_equal(x, expected.astype(np.float32))


def test_letterbox_keeps_aspect_and_pads_with_mean():
    image = np.full((100, 200, 3), 200, np.uint8)
    pre = Preprocess(resize="letterbox")
    x, geometry = pre(image, (96, 160))
    # ratio = min(96/100, 160/200) = 0.8 -> 80 x 160 content, 16 padded rows at the bottom
    assert geometry == Geometry(original_hw=(100, 200), content_hw=(80, 160))
    pad = x[:, 80:, :]
    assert np.abs(pad).max() < 0.5 / min(IMAGENET_STD)  # mean colour, rounded to uint8
    np.testing.assert_allclose(x[:, :80, :], ((200 - np.array(IMAGENET_MEAN)) / IMAGENET_STD)[:, None, None] * np.ones((1, 80, 160)), rtol=1e-5)


def test_letterbox_tall_image_pads_right():
    _, geometry = Preprocess(resize="letterbox")(_image(200, 100), (96, 160))
    assert geometry.content_hw == (96, 48)


def test_restore_integer_upscale_repeats_pixels():
    class_map = np.random.default_rng(0).integers(0, 11, (24, 40))
    restored = Preprocess.restore(class_map, Geometry(original_hw=(72, 80), content_hw=(24, 40)))
    np.testing.assert_array_equal(restored, np.repeat(np.repeat(class_map, 3, axis=0), 2, axis=1))
    assert restored.dtype == class_map.dtype


@pytest.mark.parametrize(("map_hw", "original_hw"), [((96, 128), (180, 240)), ((48, 80), (97, 33)), ((240, 320), (360, 480))])
def test_restore_takes_a_nearest_source_pixel(map_hw, original_hw):
    # encode each source pixel's (row, col) in its value; every output pixel must come from
    # a source pixel whose centre is within half a source pixel (ties allowed) of its own
    (h, w), (oh, ow) = map_hw, original_hw
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    restored = Preprocess.restore(rows * 1000 + cols, Geometry(original_hw=original_hw, content_hw=map_hw))
    assert restored.shape == (oh, ow)
    src_r, src_c = restored // 1000, restored % 1000
    centre_r = (np.arange(oh)[:, None] + 0.5) * h / oh
    centre_c = (np.arange(ow)[None, :] + 0.5) * w / ow
    assert (np.abs(src_r + 0.5 - centre_r) <= 0.5 + 1e-9).all()
    assert (np.abs(src_c + 0.5 - centre_c) <= 0.5 + 1e-9).all()


def test_restore_large_class_ids_like_small_ones():
    class_map = np.random.default_rng(1).integers(0, 11, (30, 50))
    geometry = Geometry(original_hw=(45, 61), content_hw=(30, 50))
    np.testing.assert_array_equal(Preprocess.restore(class_map + 1000, geometry), Preprocess.restore(class_map, geometry) + 1000)


def test_restore_crops_letterbox_padding():
    image = _image(100, 200)
    _, geometry = Preprocess(resize="letterbox")(image, (96, 160))
    class_map = np.full((96, 160), 99, np.int64)
    class_map[:80, :80], class_map[:80, 80:] = 1, 2  # content: left half 1, right half 2
    restored = Preprocess.restore(class_map, geometry)
    assert restored.shape == (100, 200)
    assert set(np.unique(restored)) == {1, 2}
    assert (restored[:, :100] == 1).all() and (restored[:, 100:] == 2).all()


def test_round_trip_through_json():
    pre = Preprocess(mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0), scale=0.5, channel_order="BGR", resize="letterbox")
    assert Preprocess.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    assert Preprocess.from_dict({}) == Preprocess()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"std": (1.0, 0.0, 1.0)}, "positive"), ({"channel_order": "RGBA"}, "RGB or BGR"), ({"resize": "crop"}, "resize policy"),
     ({"mean": (1.0, 2.0)}, "three values")],  # fmt: skip
)
def test_invalid_settings_raise(kwargs, message):
    with pytest.raises(UsageError, match=message):
        Preprocess(**kwargs)


def test_wrong_image_type_raises():
    with pytest.raises(UsageError, match="HxWx3 uint8"):
        Preprocess()(np.zeros((10, 10), np.uint8), (16, 16))
    with pytest.raises(UsageError, match="HxWx3 uint8"):
        Preprocess()(np.zeros((10, 10, 3), np.float32), (16, 16))

