"""Everything else a careless user or an attacker tries: one line on stderr (printed as text, never as
markup), exit ≠ 0, no traceback, the user's files and the deploy directory unchanged."""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import CALIB, NET, fails, invoke, one_line_failure, run_cli, snapshot

DEMO = ["unet", "--model-kwargs", '{"width": 0.125}', "--num-classes", "6"]


def _classes(tmp_path: Path, data) -> Path:
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


# -- the error printer: text, never markup ---------------------------------------------------------


@pytest.mark.parametrize("name", ["d[/x]", "[red]oops[/red]", "[bold]x", "a\x1b[31mred", "tab\there"])
def test_paths_are_printed_literally(tmp_path, name):
    """The issue's case: `[/x]` in a path crashed the printer, `[red]` vanished."""
    path = tmp_path / name
    line = fails("build", path, "-p", "fp16", contains="deploy directory not found")
    expected = str(path).replace("\x1b", "\\x1b").replace("\t", "\\t")
    assert expected in line, (expected, line)
    assert "\x1b" not in line


def test_hints_with_brackets_are_printed_literally(tmp_path):
    classes = _classes(tmp_path, {"classes": list("abcdef"), "palette": [[1, 2, 3]] * 5 + [[1, 2, "x"]]})
    fails("export", *DEMO, "--input-shape", "1x3x64x64", "--classes", classes, "-o", tmp_path / "out",
          contains=("palette entry 5 is [1, 2, 'x']", "each colour is [r, g, b] with integers 0-255"))
    assert not (tmp_path / "out").exists()


def test_markup_in_a_successful_export_path_is_shown_as_is(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    out = tmp_path / "[red]x[/red] [/y]"
    code, stdout, stderr = invoke("export", f"{tmp_path / 'net.py'}:build", "--input-shape", "1x3x32x48", "-o", out)
    assert code == 0, stderr
    assert str(out / "model.onnx") in stdout


# -- classes.json ---------------------------------------------------------------------------------


@pytest.mark.parametrize("data, message", [
    ({"classes": list("abcdef"), "palette": [[300, 0, 0]] * 6}, "palette entry 0 is [300, 0, 0]"),
    ({"classes": list("abcdef"), "palette": [[0, 0, "x"]] * 6}, "palette entry 0 is [0, 0, 'x']"),
    ({"classes": list("abcdef"), "palette": [[0, 0, True]] * 6}, "palette entry 0 is [0, 0, True]"),
    ({"classes": list("abcdef"), "palette": "red"}, "palette must be a list"),
    ({"classes": list("abcdef"), "palette": [[0, 0, 0]] * 3}, "palette must be a list with one [r, g, b] per class"),
    ([1, 2, 3, 4, 5, 6], "non-empty list of class names"),
    (["road", "road", "sky", "car", "pole", "tree"], "class names must be unique; repeated: road"),
    (["road", "", "sky", "car", "pole", "tree"], "non-empty list of class names"),
    ({"classes": list("abcdef"), "ignore_index": "255"}, "ignore_index must be an integer, got '255'"),
    ({"names": list("abcdef")}, "non-empty list of class names"),
    ("{not json", "is not valid JSON"),
    (list("abc"), "lists 3 classes but the model outputs 6"),
], ids=["palette-300", "palette-x", "palette-bool", "palette-string", "palette-short", "list-of-numbers",
        "duplicate-names", "empty-name", "ignore-string", "wrong-key", "not-json", "wrong-count"])
def test_bad_classes_json_is_refused_at_export(tmp_path, data, message):
    """The issue's case: a palette value "x" or 300 was accepted at export and crashed `run`."""
    classes = _classes(tmp_path, data)
    before = snapshot(tmp_path)
    fails("export", *DEMO, "--input-shape", "1x3x64x64", "--classes", classes, "-o", tmp_path / "out", contains=message)
    assert snapshot(tmp_path) == before


# -- export options ---------------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    (["--input-shape", "1x1x96x128"], "the model cannot run at input 1x1x96x128"),
    (["--input-shape", "1x3x100000x100000"], "too large to export"),
    (["--input-shape", "1x3x0x128"], "malformed --input-shape"),
    (["--input-shape", "1x3x-96x128"], "malformed --input-shape"),
    (["--input-shape", "1x3x９６x128"], "malformed --input-shape"),
    (["--input-shape", "1x3x96x128", "--mean", "nan,1,2"], "must be finite numbers"),
    (["--input-shape", "1x3x96x128", "--mean", "1,2"], "mean and std need three values"),
    (["--input-shape", "1x3x96x128", "--scale", "0"], "scale must be positive"),
    (["--input-shape", "1x3x96x128", "--std", "1,0,1"], "std values must be positive"),
    (["--input-shape", "1x3x96x128", "--min-agreement", "1.5"], "--min-agreement is a fraction of pixels between 0 and 1"),
    (["--input-shape", "1x3x96x128", "--max-rel-error", "-1"], "--max-rel-error must be a positive number"),
    (["--input-shape", "1x3x96x128", "--model-kwargs", "[1, 2]"], "--model-kwargs must be a JSON object"),
    (["--input-shape", "1x3x96x128", "--weights", "."], "checkpoint . is a folder, not a file"),
], ids=["one-channel", "huge", "zero", "negative", "unicode-digits", "nan-mean", "two-means", "zero-scale",
        "zero-std", "agreement-1.5", "negative-rel-error", "kwargs-list", "weights-folder"])
def test_bad_export_options(tmp_path, options, message):
    """1-channel input for a 3-channel model (traceback before), --min-agreement 1.5 (blamed the graph)…"""
    fails("export", *DEMO, *options, "-o", tmp_path / "out", contains=message)
    assert not (tmp_path / "out").exists()


def test_export_into_a_users_folder_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    before = snapshot(tmp_path)
    fails("export", *DEMO, "--input-shape", "1x3x96x128", "-o", tmp_path / "mine", contains="is not empty and is not a deploy directory")
    assert snapshot(tmp_path) == before


def test_unsafe_load_export_is_benched_only_with_consent(tiny, tmp_path):
    """The issue's case: bench had no --unsafe-load, so such an export could never be benched."""
    deploy, net = tiny
    from segdeploy.models.loading import load_model

    state = load_model(f"{net}:build").module.state_dict()
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=0.1)}, tmp_path / "pickled.pth")
    out = tmp_path / "unsafe"
    fails("export", f"{net}:build", "--input-shape", "1x3x32x48", "--weights", tmp_path / "pickled.pth", "-o", out,
          contains="--unsafe-load")
    assert invoke("export", f"{net}:build", "--input-shape", "1x3x32x48", "--weights", tmp_path / "pickled.pth",
                  "--unsafe-load", "-o", out)[0] == 0
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(CALIB / "images" / "scene_0000.jpg", images)
    bench = ["bench", out, "--data", images, "--iterations", "1", "--warmup", "0", "--rounds", "1", "--no-plots"]
    before = snapshot(out)
    fails(*bench, contains=("was exported with --unsafe-load", "pass --unsafe-load to bench"))
    assert snapshot(out) == before
    code, _, stderr = invoke(*bench, "--unsafe-load")
    assert code == 0, stderr


# -- bench options ----------------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    (["--min-agreement", "150"], "--min-agreement must be a number 0-100"),
    (["--min-agreement", "-1"], "--min-agreement must be a number 0-100"),
    (["--max-miou-drop", "nan"], "--max-miou-drop must be a number >= 0"),
    (["--max-latency-ms", "0"], "--max-latency-ms must be a number"),
    (["--latency-stat", "p42"], "--latency-stat must be one of p50, p90, p99"),
    (["--data", "/nonexistent"], "dataset not found"),
    (["--artifact", "trt-int8"], "no artifact trt-int8"),
], ids=["agreement-150", "agreement-negative", "nan-drop", "zero-latency", "bad-stat", "no-data", "no-artifact"])
def test_bad_bench_options_fail_before_any_work(demo_export, tmp_path, options, message):
    before = snapshot(demo_export)
    fails("bench", demo_export, *options, "--report-dir", tmp_path / "r", contains=message)
    assert snapshot(demo_export) == before and not (tmp_path / "r").exists()


# -- deploy directories and inputs that are not what they should be ---------------------------------


def test_deploy_dir_that_is_a_file(tmp_path):
    (tmp_path / "deploy").write_text("hello")
    fails("build", tmp_path / "deploy", "-p", "fp16", contains="deploy directory not found")


def test_empty_folder_is_not_a_deploy_directory_and_stays_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    fails("build", tmp_path / "empty", "-p", "fp16", contains="is not a deploy directory")
    fails("bench", tmp_path / "empty", contains="is not a deploy directory")
    assert list((tmp_path / "empty").iterdir()) == []


def test_corrupt_graph_with_rerecorded_hash(demo_copy):
    """A truncated model.onnx whose sha256 was re-recorded: a protobuf traceback before."""
    graph = demo_copy / "model.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    manifest = json.loads((demo_copy / "manifest.json").read_text())
    from segdeploy.atomic import sha256_file

    manifest["artifacts"]["onnx-fp32"]["sha256"] = sha256_file(graph)
    (demo_copy / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(demo_copy)
    fails("build", demo_copy, "-p", "fp16", contains=("model.onnx is not a readable ONNX graph", "export it again"))
    fails("run", demo_copy, CALIB / "images" / "scene_0000.jpg", "-o", demo_copy.parent / "seg", contains="not a readable ONNX graph")
    assert snapshot(demo_copy) == before


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "no images"),
    (lambda d: (d / "notes.png").write_text("not a png"), "notes.png: not an image file"),
    (lambda d: (d / "cut.jpg").write_bytes((CALIB / "images" / "scene_0000.jpg").read_bytes()[:900]), "cut.jpg"),
    (lambda d: Image.fromarray(np.zeros((8, 8), np.float32)).save(d / "depth.tif") or (d / "depth.tif").rename(d / "depth.png"),
     "32-bit float image (mode F)"),
], ids=["zero-images", "text-as-png", "truncated-jpeg", "float-image"])
def test_bad_calibration_folders(demo_copy, tmp_path, setup, message):
    calib = tmp_path / "calib"
    calib.mkdir()
    setup(calib)
    before = snapshot(demo_copy, calib)
    fails("build", demo_copy, "-p", "int8", "--calib", calib, "--calib-size", "4", contains=message)
    assert snapshot(demo_copy, calib) == before


def test_calibration_skips_folders_named_like_images(demo_copy, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "folder.png").mkdir()
    for name in ("scene_0000.jpg", "scene_0001.jpg"):
        shutil.copy(CALIB / "images" / name, calib)
    code, _, stderr = invoke("build", demo_copy, "-p", "int8", "--calib", calib, "--calib-size", "2")
    assert code == 0, stderr


def test_unreadable_image_is_one_line(demo_copy, tmp_path, monkeypatch):
    import PIL.Image

    shutil.copy(CALIB / "images" / "scene_0000.jpg", tmp_path / "secret.jpg")
    real_open = PIL.Image.open

    def denied(path, *args, **kwargs):
        if Path(path).name == "secret.jpg":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", denied)
    fails("run", demo_copy, tmp_path / "secret.jpg", "-o", tmp_path / "out", contains=("permission denied", "secret.jpg"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_run_on_a_folder_without_images(demo_export, tmp_path):
    (tmp_path / "empty").mkdir()
    fails("run", demo_export, tmp_path / "empty", "-o", tmp_path / "out", contains="no images")
    assert not (tmp_path / "out").exists()


def test_run_on_text_named_like_an_image(demo_export, tmp_path):
    (tmp_path / "x.jpg").write_text("text")
    fails("run", demo_export, tmp_path / "x.jpg", "-o", tmp_path / "out", contains="x.jpg: not an image file")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_run_on_a_text_file(demo_export, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    fails("run", demo_export, tmp_path / "notes.txt", "-o", tmp_path / "out", contains="is neither an image")
    assert not (tmp_path / "out").exists()


# -- file names that are not UTF-8, and other odd names --------------------------------------------


@pytest.fixture
def odd_names(tmp_path) -> Path:
    """calib/ scenes saved as images/labels under names that are not UTF-8 (b'\\xff') or look like mathtext."""
    data = tmp_path / "odd"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    shutil.copy(CALIB / "classes.json", data)
    for index, raw in enumerate((b"a_\xff $\\frac{$ [red]", b"b_\xe9t\xe9", b"c_ok")):
        stem = os.fsdecode(raw)
        source = f"scene_{index:04d}"
        shutil.copy(CALIB / "images" / f"{source}.jpg", data / "images" / f"{stem}.jpg")
        shutil.copy(CALIB / "labels" / f"{source}.png", data / "labels" / f"{stem}.png")
    return data


def test_non_utf8_names_calibrate(demo_copy, odd_names):
    """The issue's case: the calibration cache fingerprint crashed on such a name."""
    code, _, stderr = invoke("build", demo_copy, "-p", "int8", "--calib", odd_names, "--calib-size", "3")
    assert code == 0, stderr


def test_non_utf8_names_bench_with_plots(demo_export, odd_names, tmp_path):
    """The issue's case: the example plot crashed after half the reports were written. Run as a user
    would (a subprocess with a UTF-8 terminal), since printing such a name is part of the risk."""
    proc = run_cli("bench", demo_export, "--data", odd_names, "--iterations", "1", "--warmup", "0", "--rounds", "1",
                   "--report-dir", tmp_path / "reports")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    names = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert names == ["bench.json", "bench.md", "examples.png", "junit.xml", "latency.png", "latency_vs_miou.png",
                     "per_class_iou.png"]
    (tmp_path / "reports" / "bench.md").read_text(encoding="utf-8")  # valid UTF-8
    assert json.loads((tmp_path / "reports" / "bench.json").read_text())["data"]["images"] == 3


def test_unicode_and_spaces_in_every_path(tmp_path):
    root = tmp_path / "dossier à espaces" / "модели"
    root.mkdir(parents=True)
    (root / "my net.py").write_text(NET)
    deploy = root / "déploiement 1"
    assert invoke("export", f"{root / 'my net.py'}:build", "--input-shape", "1x3x32x48", "-o", deploy)[0] == 0
    images = root / "images ✓"
    images.mkdir()
    for name in ("scene_0000.jpg", "scene_0001.jpg"):
        shutil.copy(CALIB / "images" / name, images / f"é {name}")
    code, _, stderr = invoke("build", deploy, "-p", "int8", "--calib", images, "--calib-size", "2")
    assert code == 0, stderr
    code, _, stderr = invoke("bench", deploy, "--data", images, "--iterations", "1", "--warmup", "0", "--rounds", "1")
    assert code == 0, stderr


def test_one_line_even_for_multiline_reasons(tmp_path):
    """A reason that carries newlines (a YAML parser's, a library's) is still printed on one line."""
    (tmp_path / "p.yaml").write_text("models:\n  - source: unet\n    name: [a,\n")
    code, stdout, stderr = invoke("pipeline", tmp_path / "p.yaml")
    one_line_failure(code, stdout, stderr, contains="is not valid YAML")
