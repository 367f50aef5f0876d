"""TensorRT API conformance without a GPU: the TensorRT backend type-checks against the TensorRT 10 API.

basedpyright reads every TensorRT call in segdeploy/backends/tensorrt/ through `Flavour.api`,
which it sees as the `tensorrt` module of `tensorrt-stubs` (TensorRT 10.13). A misspelt or
removed method, attribute or enum member fails this test even though no engine runs here.
APIs that TensorRT 10 lacks (TensorRT-RTX's compute-capability targets and engine validity,
TensorRT < 8.4's workspace attribute) are looked up by name, which is what feature detection
means, so the checker accepts them without any ignore comment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STUBS = REPO / ".venv" / "typestubs"
CHECKER = Path(sys.executable).with_name("basedpyright")

pytestmark = pytest.mark.skipif(not (STUBS / "tensorrt").is_dir() or not CHECKER.is_file(),
                                reason="the TensorRT stubs or basedpyright are missing: run `bash scripts/setup.sh dev`")


CHECKS = {"typeCheckingMode": "standard", "pythonVersion": "3.10", "reportMissingModuleSource": "none"}  # as in pyproject.toml
MISSPELLINGS = [  # (file, a real call in it, the same call misspelt)
    ("builder.py", "builder.create_builder_config()", "builder.create_builder_confg()"),
    ("runner.py", "self.context.set_tensor_address(", "self.context.set_tensor_adress("),
    ("builder.py", "trt.ProfilingVerbosity.DETAILED", "trt.ProfilingVerbosity.DETAIL"),
]


def _check(config: Path) -> dict:
    result = subprocess.run([str(CHECKER), "--pythonpath", sys.executable, "--outputjson", "--project", str(config)],
                            cwd=config.parent, capture_output=True, text=True, timeout=300)
    return json.loads(result.stdout)


@pytest.mark.parametrize("stubs", [STUBS, STUBS.with_name("typestubs-10.8")], ids=["10.13", "10.8"])
def test_tensorrt_backend_conforms_to_the_tensorrt_10_api(stubs, tmp_path):
    """10.13 through pyproject.toml's configuration; 10.8 (the oldest stubs, nearest JetPack 6's 10.3) likewise."""
    if not (stubs / "tensorrt").is_dir():
        pytest.skip(f"{stubs} is missing: run `bash scripts/setup.sh dev`")
    config = REPO / "pyproject.toml"
    if stubs != STUBS:
        config = tmp_path / "pyrightconfig.json"
        config.write_text(json.dumps({"include": [str(REPO / "segdeploy/backends/tensorrt")], "stubPath": str(stubs),
                                      "extraPaths": [str(REPO)], **CHECKS}), encoding="utf-8")
    report = _check(config)
    errors = [f"{d['file']}:{d['range']['start']['line'] + 1}: {d['message']}" for d in report["generalDiagnostics"]
              if d["severity"] == "error"]
    assert not errors, "\n".join(errors)
    assert report["summary"]["filesAnalyzed"] >= len(list((REPO / "segdeploy/backends/tensorrt").glob("*.py")))


def test_a_misspelt_tensorrt_call_fails_the_check(tmp_path):
    copies = []
    for index, (file, right, wrong) in enumerate(MISSPELLINGS):
        source = (REPO / "segdeploy" / "backends" / "tensorrt" / file).read_text(encoding="utf-8")
        assert right in source  # the call this test misspells is still there
        copy = tmp_path / f"case{index}_{file}"
        copy.write_text(source.replace(right, wrong, 1), encoding="utf-8")
        copies.append(copy)
    config = {"include": [str(c) for c in copies], "stubPath": str(STUBS), "extraPaths": [str(REPO)], **CHECKS}
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(config), encoding="utf-8")
    report = _check(tmp_path / "pyrightconfig.json")
    for copy, (_, _, wrong) in zip(copies, MISSPELLINGS):
        found = [d["message"] for d in report["generalDiagnostics"] if d["severity"] == "error" and d["file"] == str(copy)]
        assert len(found) == 1 and wrong.split(".")[-1].rstrip("()(") in found[0], found
