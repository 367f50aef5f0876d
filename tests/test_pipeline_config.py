"""Pipeline configs: wrong types, unknown keys, unsafe names, YAML bombs and foreign folders are refused
in one line before any work starts, and nothing is written or overwritten."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from segdeploy.pipeline import parse_config
from tests.helpers import DEMO_MODEL_YAML, fails, snapshot

GOOD_MODEL = DEMO_MODEL_YAML


def refused(tmp_path: Path, text: str, *contains: str, name: str = "pipe.yaml", raw: bytes | None = None) -> str:
    """Write the config, run `segdeploy pipeline` on it: one line, exit 2 (or 1), and no `out` folder made."""
    config = tmp_path / name
    config.write_bytes(raw if raw is not None else textwrap.dedent(text).encode())
    before = snapshot(tmp_path)
    line = fails("pipeline", config, contains=contains)
    assert snapshot(tmp_path) == before, "a refused config must not create or change anything"
    return line


@pytest.mark.parametrize("text, message", [
    (GOOD_MODEL.replace("num_classes: 6", "num_classes: 6\n    fuse_argmax: \"false\""),
     "models[0].fuse_argmax: expected true or false, got the string 'false'"),
    ("calib_size: eight\n" + GOOD_MODEL, "calib_size: expected a whole number >= 1, got the string 'eight'"),
    ("calib_size: true\n" + GOOD_MODEL, "calib_size: expected a whole number >= 1, got the boolean true"),
    (GOOD_MODEL.replace("model_kwargs: {width: 0.125}", "model_kwargs: width"),
     "models[0].model_kwargs: expected a mapping of keyword arguments"),
    ("bench: [1, 2]\n" + GOOD_MODEL, "bench: expected a mapping of settings, got a list"),
    (GOOD_MODEL.replace("input_shape: 1x3x96x128", "input_shape: 64"),
     "models[0].input_shape: expected NxCxHxW such as 1x3x96x128, got the number 64"),
    (GOOD_MODEL.replace("input_shape: 1x3x96x128", "input_shape: 1x3x0x128"), "malformed input_shape"),
    ('precisions: "fp16,int8"\n' + GOOD_MODEL, "precisions[0]: expected one of fp32, fp16, bf16, int8, got the string 'fp16,int8'"),
    (GOOD_MODEL + "    dynamic: batch,width\n", "models[0].dynamic[0]: expected one of batch, height, width, all"),
    ("precison: [fp16]\n" + GOOD_MODEL, "unknown key(s) 'precison'"),
    (GOOD_MODEL + "    colour: red\n", "models[0]: unknown key(s) 'colour'"),
    ("bench: {iterations: 5, warmpu: 2}\n" + GOOD_MODEL, "bench: unknown key(s) 'warmpu'"),
    ("bench: {min_agreement: 150}\n" + GOOD_MODEL, "bench.min_agreement: expected a number >= 0 and <= 100"),
    ("bench: {iterations: 0}\n" + GOOD_MODEL, "bench.iterations: expected a whole number >= 1"),
    ("bench: {max_miou_drop: .nan}\n" + GOOD_MODEL, "bench.max_miou_drop: expected a number >= 0, got the number nan"),
    (GOOD_MODEL + "    preprocess: {std: [0, 1, 1]}\n", "models[0].preprocess.std[0]: expected a number > 0"),
    (GOOD_MODEL + "    preprocess: {mean: [.nan, 1, 1]}\n", "models[0].preprocess.mean[0]: expected a number"),
    (GOOD_MODEL.replace("weights: ", "weights: /nonexistent"), "models[0].weights: file not found"),
    (GOOD_MODEL.replace("source: unet", "source: unet9000"), "models[0].source: unknown model 'unet9000'"),
    (GOOD_MODEL.replace("source: unet", "source: missing.py:build"), "models[0].source: file not found"),
    ("calib: /nonexistent\n" + GOOD_MODEL, "calib: folder not found"),
    ("out: null\n" + GOOD_MODEL, "out: expected a path, got nothing (null)"),
    ("", "needs a non-empty `models:` list"),
    ("models: {name: x}", "needs a non-empty `models:` list"),
    ("models: [3]", "models[0]: expected a mapping of settings, got the number 3"),
    ('reduce_range: "no"\n' + GOOD_MODEL, "reduce_range: expected true or false, got the string 'no'"),
    ("bias_correction_threshold: 0\n" + GOOD_MODEL, "bias_correction_threshold: expected a number > 0, got the number 0"),
    ("bias_correction_threshold: -.inf\n" + GOOD_MODEL, "bias_correction_threshold: expected a number > 0"),
], ids=["bool-as-string", "int-as-word", "int-as-bool", "kwargs-string", "bench-list", "shape-int", "shape-zero",
        "precisions-commas", "dynamic-commas", "unknown-top", "unknown-model", "unknown-bench", "agreement-150",
        "iterations-0", "nan-gate", "std-zero", "mean-nan", "weights-missing", "unknown-source", "factory-missing",
        "calib-missing", "out-null", "empty-file", "models-mapping", "model-number", "reduce-range-string",
        "threshold-zero", "threshold-minus-inf"])
def test_wrong_types_and_keys_are_refused_before_any_work(tmp_path, text, message):
    refused(tmp_path, text, message)


@pytest.mark.parametrize("name", ["../../victim", "/tmp/victim", "..", "a/b", "victim\\..", "", " "])
def test_model_names_cannot_leave_out(tmp_path, name):
    """The issue's case: `name: ../../victim` replaced a user's model.onnx and bench.json, exit 0."""
    victim = tmp_path / "victim"
    (victim / "bench").mkdir(parents=True)
    (victim / "model.onnx").write_bytes(b"the user's model")
    (victim / "bench" / "bench.json").write_text("{}")
    work = tmp_path / "work"
    work.mkdir()
    text = "out: runs\n" + GOOD_MODEL.replace("name: demo", f"name: {json.dumps(name)}")
    refused(work, text, "models[0].name")
    assert (victim / "model.onnx").read_bytes() == b"the user's model"


def test_alias_bomb_is_refused_in_well_under_a_second(tmp_path):
    from segdeploy.config_files import read_document

    levels = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for index, name in enumerate("bcdefghi"):
        previous = "abcdefghi"[index]
        levels.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    text = "\n".join(levels) + "\nmodels: [{source: unet, name: *i}]\n"
    (tmp_path / "bomb.yaml").write_text(text)
    start = time.perf_counter()
    with pytest.raises(Exception, match="expands to more than 100000 values"):
        read_document(tmp_path / "bomb.yaml")
    assert time.perf_counter() - start < 0.5
    refused(tmp_path, text, "expands to more than 100000 values", name="bomb2.yaml")


def test_many_aliases_are_refused_while_parsing(tmp_path):
    text = "a: &a x\nlist: [" + ", ".join(["*a"] * 150) + "]\n" + GOOD_MODEL
    refused(tmp_path, text, "more than 100 aliases")


@pytest.mark.parametrize("text, raw, message", [
    ("calib_size: 8\ncalib_size: 9\n" + GOOD_MODEL, None, "key 'calib_size' is repeated"),
    (None, b"models: [{source: unet, name: d\xff}]\n", "is not UTF-8 text"),
    (None, b"#" * (1 << 20) + b"\nmodels: [{source: unet}]\n", "is larger than 1 MiB"),
    ("models: !!python/object/apply:os.system [echo pwned]\n", None, "is not valid YAML"),
    (None, b"models: " + b"[" * 20000 + b"]" * 20000 + b"\n", "nested too deeply"),
    (GOOD_MODEL + "---\n" + GOOD_MODEL, None, "is not valid YAML"),
    ("models: [unclosed\n", None, "is not valid YAML: "),
], ids=["duplicate-key", "not-utf8", "too-large", "python-tag", "deep-nesting", "two-documents", "syntax"])
def test_unsafe_or_broken_yaml_is_refused(tmp_path, text, raw, message):
    line = refused(tmp_path, text, message, raw=raw)
    assert len(line) < 400


def test_json_configs_refuse_duplicate_keys_too(tmp_path):
    refused(tmp_path, '{"calib_size": 8, "calib_size": 9, "models": [{"source": "unet"}]}', "key 'calib_size' is repeated",
            name="pipe.json")


def test_config_path_that_is_a_folder(tmp_path):
    (tmp_path / "pipe.yaml").mkdir()
    fails("pipeline", tmp_path / "pipe.yaml", contains="is not a file")


def test_one_string_is_a_one_element_list_never_letters(tmp_path):
    config = parse_config({"precisions": "fp16", "backends": "onnxruntime",
                           "models": [{"source": "unet", "dynamic": "batch"}]}, tmp_path)
    assert config.precisions == ["fp16"] and config.backends == ["onnxruntime"] and config.models[0].dynamic == ["batch"]


def test_yaml_anchors_and_merge_keys_still_work(tmp_path):
    from segdeploy.pipeline_config import load_config

    (tmp_path / "pipe.yaml").write_text(textwrap.dedent("""
        base: &base {source: unet, num_classes: 6, model_kwargs: {width: 0.125}}
        models:
          - {<<: *base, name: a}
          - {<<: *base, name: b, num_classes: 4}
    """).replace("base: &base", "x-base: &base"))
    with pytest.raises(Exception, match="unknown key"):  # the anchor's own key is not a setting…
        load_config(tmp_path / "pipe.yaml")
    (tmp_path / "pipe.yaml").write_text(textwrap.dedent("""
        models:
          - &a {source: unet, num_classes: 6, name: a}
          - {<<: *a, name: b, num_classes: 4}
    """))
    config = load_config(tmp_path / "pipe.yaml")  # … but anchors, aliases and merges are fine
    assert [(m.name, m.num_classes) for m in config.models] == [("a", 6), ("b", 4)]


# -- where the pipeline writes ------------------------------------------------------------------


def _config(tmp_path: Path, out: str = "runs") -> Path:
    path = tmp_path / "pipe.yaml"
    path.write_text(f"out: {out}\n" + GOOD_MODEL)
    return path


def test_out_that_is_a_file(tmp_path):
    (tmp_path / "runs").write_text("a file")
    config = _config(tmp_path)
    before = snapshot(tmp_path)
    fails("pipeline", config, contains="exists and is not a folder")
    assert snapshot(tmp_path) == before


def test_model_folder_that_is_a_symlink(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "runs").mkdir()
    os.symlink(elsewhere, tmp_path / "runs" / "demo")
    config = _config(tmp_path)
    before = snapshot(tmp_path)
    fails("pipeline", config, contains="is a symbolic link")
    assert snapshot(tmp_path) == before and not any(elsewhere.iterdir())


def test_model_folder_with_a_users_files(tmp_path):
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    (tmp_path / "runs" / "demo" / "notes.txt").write_text("mine")
    config = _config(tmp_path)
    before = snapshot(tmp_path)
    fails("pipeline", config, contains="is not empty and is not a deploy directory")
    assert snapshot(tmp_path) == before


def test_model_folder_with_an_export_not_made_by_a_pipeline(demo_export, tmp_path):
    import shutil

    shutil.copytree(demo_export, tmp_path / "runs" / "demo")
    config = _config(tmp_path)
    before = snapshot(tmp_path)
    fails("pipeline", config, contains="holds an export not made by a pipeline")
    assert snapshot(tmp_path) == before


def test_every_bench_setting_reaches_bench():
    """The schema's bench keys are what `run_bench` takes (options or gates): none accepted, then dropped."""
    from segdeploy.bench.benchmark import BenchOptions
    from segdeploy.bench.gates import GateOptions
    from segdeploy.pipeline_config import GATE_KEYS, _bench_keys, _Check

    keys = set(_bench_keys(_Check(Path("."), "test")))
    assert set(GATE_KEYS) <= keys and set(GATE_KEYS) <= set(GateOptions.__dataclass_fields__)
    assert keys - set(GATE_KEYS) <= set(BenchOptions.__dataclass_fields__)
