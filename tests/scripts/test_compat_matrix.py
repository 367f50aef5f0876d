"""The third-party compatibility matrix (scripts/compat_matrix.py).

A fast subset runs by default — smp's PSPNet (adaptive pooling nested in ``interpolate``),
smp's U-Net on a timm encoder, the zoo's SegNet (pooling indices, unpooling) — through the
script itself, every cell through segdeploy's library. The whole matrix is a slow test that
must not lose any cell the recorded matrix (compat/matrix.json, shown in the README) passes.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "compat_matrix.py"
RECORDED = REPO / "compat" / "matrix.json"
needs_smp = pytest.mark.skipif(importlib.util.find_spec("segmentation_models_pytorch") is None,
                               reason="segmentation_models_pytorch not installed")


def _load_script():
    spec = importlib.util.spec_from_file_location("compat_matrix", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["compat_matrix"] = module
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path, *only: str, timeout: int) -> dict:
    args = [sys.executable, str(SCRIPT), "--out", str(tmp_path / "out")] + [a for o in only for a in ("--only", o)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out" / "matrix.md").is_file()
    return json.loads((tmp_path / "out" / "matrix.json").read_text())


FAST = ["smp/PSPNet/resnet18", "smp/Unet/tu-mobilenetv3_small_100", "zoo/segnet"]


@needs_smp
def test_fast_subset_passes_every_cell(tmp_path):
    result = _run(tmp_path, *FAST, timeout=1200)
    rows = {row["entry"]["id"]: row["cells"] for row in result["rows"]}
    assert sorted(rows) == sorted(FAST)
    trt = importlib.util.find_spec("tensorrt_rtx") or importlib.util.find_spec("tensorrt")
    for entry, cells in rows.items():
        for column, cell in cells.items():
            expected = "skipped" if column.startswith("trt") and not trt else "pass"
            assert cell["status"] == expected, f"{entry} {column}: {cell['reason']}"
    psp = rows["smp/PSPNet/resnet18"]["export"]["rewrites"]
    assert any("decoder.psp.blocks" in r and "adaptive_avg_pool2d" in r for r in psp), psp
    markdown = (tmp_path / "out" / "matrix.md").read_text()
    assert markdown.count("\n| smp/") == 2 and "| zoo/segnet (64×96) | ✓ | ✓ |" in markdown


def test_a_failing_model_is_recorded_with_its_reason(tmp_path):
    """An operator no rewrite covers: the export cell fails naming it, the rest are skipped."""
    matrix = _load_script()
    model = tmp_path / "warp.py"
    model.write_text(
        "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
        "class Warp(nn.Module):\n"
        "    def __init__(self, num_classes=4):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, num_classes, 1)\n"
        "    def forward(self, x):\n"
        "        grid = torch.zeros(x.shape[0], x.shape[2], x.shape[3], 2)\n"
        "        return F.grid_sample(self.conv(x), grid, align_corners=False)\n"
    )
    entry = matrix.Entry("user/Warp", f"{model}:Warp", shape=(1, 3, 16, 24))
    said = []
    row = matrix.run_entry(entry, tmp_path / "work", tensorrt=False, say=lambda *a: said.append(a))
    export = row["cells"]["export"]
    assert export["status"] == "fail" and "grid_sampler" in export["reason"] and "model (Warp)" in export["reason"]
    assert {row["cells"][c]["status"] for c in matrix.COLUMNS[2:]} == {"skipped"}
    assert len(said) == len(matrix.COLUMNS)
    table = matrix.render_markdown([row])
    assert "| user/Warp (16×24) | ✗ 1 |" in table and "\n1. cannot export operator grid_sampler" in table


def test_identical_reasons_share_a_number_and_readme_markers_are_replaced(tmp_path):
    matrix = _load_script()
    fail = {"status": "fail", "reason": "same\nreason"}
    cells = {c: fail for c in matrix.COLUMNS} | {"export": {"status": "pass", "reason": "", "rel_error": 0.0}}
    table = matrix.render_markdown([{"entry": {"id": "a", "shape": [1, 3, 8, 16]}, "cells": cells}])
    assert "| a (8×16) | ✓ | ✗ 1 | ✗ 1 |" in table and table.count("1. same reason") == 1
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{matrix.START}\nold table\n{matrix.END}\noutro\n")
    matrix.update_readme(readme, table)
    text = readme.read_text()
    assert "old table" not in text and table in text and text.startswith("intro") and text.endswith(f"{matrix.END}\noutro\n")


def test_merge_replaces_only_the_rows_run_again():
    matrix = _load_script()
    row = lambda entry, status: {"entry": {"id": entry}, "cells": {"export": {"status": status}}}  # noqa: E731
    old = [row("a", "fail"), row("gone", "pass"), row("b", "pass")]
    merged = matrix.merge_rows(old, [row("c", "pass"), row("a", "pass")], ["a", "b", "c"])
    assert [(r["entry"]["id"], r["cells"]["export"]["status"]) for r in merged] == [("a", "pass"), ("b", "pass"), ("c", "pass")]


def test_reasons_are_shortened_without_losing_what_failed():
    matrix = _load_script()
    reason = ("TensorRT-RTX 1.7.1.116 could not build an engine from model.int8-trt.onnx: Error Code 4: API Usage Error "
              "(Quantized constant (/model/encoder/block1.0/attn/Constant_3_output_0_quantized) is only allowed before DQ)")
    short = matrix.short_reason(reason)
    assert "Quantized constant (…) is only allowed before DQ" in short and len(short) <= 190


@pytest.mark.slow
@needs_smp
def test_whole_matrix_keeps_every_recorded_pass(tmp_path):
    """Runs everything (about an hour on 2 cores). Fails if a cell the recorded matrix passes
    fails now; cells that newly pass are listed, to be recorded with --update-readme."""
    result = _run(tmp_path, timeout=4 * 3600)
    recorded = {row["entry"]["id"]: row["cells"] for row in json.loads(RECORDED.read_text())["rows"]}
    now = {row["entry"]["id"]: row["cells"] for row in result["rows"]}
    assert set(now) >= set(recorded), f"entries gone: {sorted(set(recorded) - set(now))}"
    lost = [f"{e} {c}: {now[e][c]['reason']}" for e, cells in recorded.items() for c, cell in cells.items()
            if cell["status"] == "pass" and now[e][c]["status"] != "pass"]
    gained = [f"{e} {c}" for e, cells in now.items() for c, cell in cells.items()
              if cell["status"] == "pass" and recorded.get(e, {}).get(c, {}).get("status") != "pass"]
    print("newly passing (record them):", gained or "none")
    assert not lost, "\n".join(lost)
