"""Images of every mode Pillow opens read as the picture they hold (or refused in one line), labels as
integers, numpy frames checked before inference — and the proof on the trained demo model that 16-bit
copies of calib/ images calibrate, bench and run exactly like the 8-bit originals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdeploy.data import read_label
from segdeploy.errors import SegdeployError
from segdeploy.images import frame_to_rgb8, read_rgb
from tests.helpers import CALIB, fails, invoke, snapshot, val_stems, write_png16

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
GRAY = RGB[..., 0]


# -- the file reader, mode by mode ---------------------------------------------------------------


def test_read_rgb(tmp_path):
    Image.fromarray(np.full((7, 9), 77, np.uint8)).save(tmp_path / "grey.png")
    rgb = read_rgb(tmp_path / "grey.png")
    assert rgb.shape == (7, 9, 3) and rgb.dtype == np.uint8 and (rgb == 77).all()
    with pytest.raises(SegdeployError, match="not found"):
        read_rgb(tmp_path / "missing.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(SegdeployError, match="cannot read image"):
        read_rgb(tmp_path / "bad.jpg")


def _gray16_png(path):
    Image.fromarray(GRAY.astype(np.uint16) * 257).save(path)  # mode I;16: what was read as all-white


def _gray16_pgm(path):  # big-endian 16-bit, opened by Pillow as mode I
    path.write_bytes(b"P5\n7 5\n65535\n" + (GRAY.astype(">u2") * 257).tobytes())


def _gray16_tiff(path):
    Image.fromarray(GRAY.astype(np.uint16) * 257).save(path)


def _rgb16_png(path):
    write_png16(path, RGB.astype(np.uint16) * 257)


@pytest.mark.parametrize("write, suffix, expected", [
    (_gray16_png, ".png", np.repeat(GRAY[..., None], 3, 2)),
    (_gray16_pgm, ".pgm", np.repeat(GRAY[..., None], 3, 2)),
    (_gray16_tiff, ".tif", np.repeat(GRAY[..., None], 3, 2)),
    (_rgb16_png, ".png", RGB),
    (lambda p: Image.fromarray(RGB).convert("CMYK").save(p), ".tif", RGB),
    (lambda p: Image.fromarray(GRAY).convert("LA").save(p), ".png", np.repeat(GRAY[..., None], 3, 2)),
    (lambda p: Image.fromarray(np.dstack([RGB, np.zeros_like(GRAY)])).save(p), ".png", RGB),  # alpha 0: colour kept
], ids=["I;16-png", "I-pgm16", "I;16-tiff", "rgb16-png", "cmyk", "LA", "rgba-transparent"])
def test_every_mode_reads_as_its_8bit_picture(tmp_path, write, suffix, expected):
    path = tmp_path / f"image{suffix}"
    write(path)
    rgb = read_rgb(path)
    assert rgb.dtype == np.uint8 and rgb.shape == expected.shape
    np.testing.assert_array_equal(rgb, expected)


def test_palette_with_transparency_keeps_its_colours(tmp_path):
    image = Image.fromarray((GRAY % 3).astype(np.uint8), mode="P")
    image.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200] + [0] * 759)
    image.save(tmp_path / "p.png", transparency=0)
    palette = np.array([[200, 10, 10], [10, 200, 10], [10, 10, 200]], np.uint8)
    np.testing.assert_array_equal(read_rgb(tmp_path / "p.png"), palette[GRAY % 3])


def test_bilevel_is_black_and_white(tmp_path):
    Image.fromarray(GRAY > 128).save(tmp_path / "b.png")
    rgb = read_rgb(tmp_path / "b.png")
    np.testing.assert_array_equal(rgb[..., 1], np.where(GRAY > 128, 255, 0))


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(np.kron(RGB, np.ones((8, 8, 1), np.uint8)))  # blocks survive JPEG
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image.save(tmp_path / "r.jpg", exif=exif, quality=95)
    rgb = read_rgb(tmp_path / "r.jpg")
    assert rgb.shape == (56, 40, 3)
    assert np.abs(rgb.astype(int) - np.rot90(np.asarray(Image.open(tmp_path / "r.jpg")), -1)).max() == 0


@pytest.mark.parametrize("write, message", [
    (lambda p: Image.fromarray(GRAY.astype(np.float32) / 255).save(p), "32-bit float image (mode F)"),
    (lambda p: Image.fromarray(GRAY.astype(np.int32) * 100_000).save(p), "32-bit integer image (mode I)"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n not really"), "not an image file"),
    (lambda p: p.write_bytes(b""), "not an image file"),
    (lambda p: p.mkdir(), "is a folder, not a file"),
], ids=["float", "int32", "fake-png", "empty-file", "folder"])
def test_unreadable_modes_are_refused_naming_file_and_mode(tmp_path, write, message):
    path = tmp_path / "bad.tif"
    write(path)
    with pytest.raises(SegdeployError, match="bad.tif") as info:
        read_rgb(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_truncated_jpeg_is_one_line(tmp_path):
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:700])
    with pytest.raises(SegdeployError, match=r"cannot decode image .*cut\.jpg"):
        read_rgb(tmp_path / "cut.jpg")


# -- labels: class indices, never colours ---------------------------------------------------------


def test_16bit_label_is_read_as_integers(tmp_path):
    values = np.array([[0, 5, 300], [65535, 2, 1]], np.uint16)
    Image.fromarray(values).save(tmp_path / "l16.png")
    assert read_label(tmp_path / "l16.png").tolist() == values.astype(np.int64).tolist()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "F"])
def test_colour_alpha_and_float_labels_are_refused(tmp_path, mode):
    image = Image.fromarray(RGB).convert(mode) if mode != "F" else Image.fromarray(GRAY.astype(np.float32))
    path = tmp_path / ("label.tif" if mode == "F" else "label.png")
    image.save(path)
    with pytest.raises(SegdeployError, match=f"is a {mode} image, not a class-index map") as info:
        read_label(path)
    assert "map colour-coded labels to indices" in str(info.value)


def test_colour_coded_labels_fail_bench_in_one_line(demo_export, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(CALIB / "images", data / "images", ignore=lambda d, names: names[4:])
    (data / "labels").mkdir()
    for image in (data / "images").iterdir():
        Image.open(image).save(data / "labels" / f"{image.stem}.png")  # the photo itself: RGB
    shutil.copy(CALIB / "classes.json", data)
    before = snapshot(data, demo_export)
    fails("bench", demo_export, "--data", data, "--no-plots", "--iterations", "1", "--report-dir", tmp_path / "r",
          contains=("is a RGB image, not a class-index map", "colour-coded"))
    assert snapshot(data, demo_export) == before and not (tmp_path / "r").exists()


# -- numpy frames in the Segmenter ---------------------------------------------------------------


@pytest.mark.parametrize("frame, message", [
    (np.zeros((0, 0, 3), np.uint8), "is empty (0x0 pixels)"),
    (np.zeros((12, 16), np.uint8), "expected H×W×3"),
    (np.zeros((12, 16, 4), np.uint8), "expected H×W×3"),
    (np.zeros((12, 16, 3), np.float32), "float frames have no defined range"),
    (np.zeros((12, 16, 3), np.int16), "expected uint8"),
    ([[0, 0, 0]], "not a numpy array"),
], ids=["empty", "gray", "rgba", "float", "int16", "list"])
def test_bad_frames_are_refused_before_inference(demo_export, frame, message):
    from segdeploy.runtime import Segmenter

    with Segmenter(demo_export) as seg:
        calls = []
        infer = seg._runner.infer
        seg._runner.infer = lambda feed: calls.append(1) or infer(feed)
        with pytest.raises(SegdeployError) as info:
            seg.predict_batch([np.zeros((12, 16, 3), np.uint8), frame])  # the good first frame must not run either
        assert message in str(info.value) and "frame 1" in str(info.value) and calls == []


def test_uint16_frame_segments_like_its_8bit_original(demo_export):
    from segdeploy.runtime import Segmenter

    frame = read_rgb(CALIB / "images" / f"{val_stems(1)[0]}.jpg")
    with Segmenter(demo_export) as seg:
        eight = seg(frame)
        assert len(np.unique(eight)) >= 3  # a trained model on a street scene: several classes
        np.testing.assert_array_equal(seg(frame.astype(np.uint16) * 257), eight)
    assert frame_to_rgb8(frame.astype(np.uint16) * 256 + 255).tolist() == frame.tolist()  # the high byte, not rounded


# -- the proof on the trained model: 16-bit copies give the 8-bit results -------------------------


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict[str, Path]:
    """Eight calib/ val scenes as datasets: RGB 8/16-bit PNG and grayscale 8-bit (L) / 16-bit (I;16) PNG,
    labels 8-bit for the 8-bit sets and 16-bit PNG for the 16-bit ones."""
    root = tmp_path_factory.mktemp("twins")
    sets = {name: root / name for name in ("rgb8", "rgb16", "gray8", "gray16")}
    for folder in sets.values():
        (folder / "images").mkdir(parents=True)
        (folder / "labels").mkdir()
        shutil.copy(CALIB / "classes.json", folder)
    for stem in val_stems(8):
        rgb = np.asarray(Image.open(CALIB / "images" / f"{stem}.jpg").convert("RGB"))
        gray = np.asarray(Image.fromarray(rgb).convert("L"))
        label = np.asarray(Image.open(CALIB / "labels" / f"{stem}.png"))
        Image.fromarray(rgb).save(sets["rgb8"] / "images" / f"{stem}.png")
        write_png16(sets["rgb16"] / "images" / f"{stem}.png", rgb.astype(np.uint16) * 257)
        Image.fromarray(gray).save(sets["gray8"] / "images" / f"{stem}.png")
        Image.fromarray(gray.astype(np.uint16) * 257).save(sets["gray16"] / "images" / f"{stem}.png")
        for name in sets:
            bits16 = name.endswith("16")
            Image.fromarray(label.astype(np.uint16) if bits16 else label).save(sets[name] / "labels" / f"{stem}.png")
    assert Image.open(sets["gray16"] / "images" / f"{stem}.png").mode == "I;16"
    return sets


def _bench(deploy: Path, data: Path, report: Path) -> dict:
    from segdeploy.bench.benchmark import BenchOptions, run_bench

    options = BenchOptions(data=data, iterations=1, warmup=0, rounds=1, plots=False, report_dir=report)
    return {name: target["accuracy"] for name, target in run_bench(deploy, options).report["targets"].items()}


def test_16bit_grayscale_benches_exactly_like_8bit(demo_export, twins, tmp_path):
    """The issue's case: I;16 PNGs were clipped to white (mIoU 18.5 for a model scoring 72.2 in 8 bit)."""
    eight, sixteen = (_bench(demo_export, twins[name], tmp_path / name) for name in ("gray8", "gray16"))
    print({name: round(acc["miou"], 2) for name, acc in eight.items()})
    assert eight["pytorch"]["miou"] > 40  # the trained model still sees the scenes in gray: not a degenerate map
    for target in ("pytorch", "onnx-fp32"):
        assert sixteen[target]["miou"] == eight[target]["miou"], target
        assert sixteen[target]["per_class_iou"] == eight[target]["per_class_iou"], target


def test_16bit_images_calibrate_exactly_like_8bit(demo_copy, twins, tmp_path):
    from segdeploy.manifest import Manifest
    from segdeploy.precision.calibration import reader_for, select_images

    manifest = Manifest.load(demo_copy)
    batches = {name: reader_for(manifest, select_images(twins[name], 8)).feed(0)["input"] for name in twins}
    np.testing.assert_array_equal(batches["gray16"], batches["gray8"])
    np.testing.assert_array_equal(batches["rgb16"], batches["rgb8"])
    assert not np.array_equal(batches["gray16"], np.full_like(batches["gray16"], batches["gray16"].max()))
    ranges = {}
    for name in ("gray8", "gray16"):
        copy = tmp_path / name
        shutil.copytree(demo_copy, copy)
        code = exit_code_of("build", copy, "-p", "int8", "--calib", twins[name], "--calib-size", "8")
        assert code == 0
        entry = Manifest.load(copy).artifact("onnx-int8-ort")
        ranges[name] = (json.loads((copy / entry.calibration.cache).read_text()), entry.parity.argmax_agreement)
    assert ranges["gray16"] == ranges["gray8"]


def test_16bit_images_run_exactly_like_8bit(demo_export, twins, tmp_path):
    outputs = {}
    for name in ("rgb8", "rgb16", "gray8", "gray16"):
        assert exit_code_of("run", demo_export, twins[name] / "images", "-o", tmp_path / name) == 0
        outputs[name] = {p.name: np.asarray(Image.open(p)) for p in sorted((tmp_path / name).glob("*_labels.png"))}
    for colour in ("rgb", "gray"):
        eight, sixteen = outputs[f"{colour}8"], outputs[f"{colour}16"]
        assert len(eight) == 8 and eight.keys() == sixteen.keys()
        for key in eight:
            np.testing.assert_array_equal(sixteen[key], eight[key])


def exit_code_of(*args) -> int:
    code, _, stderr = invoke(*args)
    assert "Traceback" not in stderr, stderr
    return code
