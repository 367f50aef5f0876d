"""The package imports one way: cli → commands → export | precision | bench | runtime → the rest.

Every module's imports are parsed (ast, so lazy imports inside functions count too) and
mapped to the package's top-level units (a folder or a top-level module). A unit may import
only units of its own tier or below, and the graph of units must have no cycle (no two
units import each other, directly or around a loop). See docs/design.md, "Layers".
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "segdeploy"

# Highest tier first. Every top-level unit of the package must be listed (a new one fails the test).
TIERS = {
    "cli": 4,
    "build": 3, "pipeline": 3, "pipeline_config": 3, "segment": 3,  # commands: what one CLI command runs, across the tier below
    "export": 2, "precision": 2, "bench": 2, "runtime": 2, "train": 2,
    "backends": 1, "models": 1, "data": 1, "metrics": 1, "evaluation": 1, "manifest": 1, "graph_spec": 1,
    "preprocess": 1, "classes": 1, "timing": 1, "plotting": 1, "render": 1, "visualize": 1,
    "images": 1, "config_files": 1,
    "atomic": 0, "errors": 0, "version": 0, "faults": 0,
    "__init__": 4, "__main__": 4,  # the package's face: `segdeploy.Segmenter` (lazy) and `python -m segdeploy`
}


def _unit(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _is_unit(name: str) -> bool:
    return (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()


def _imported_units(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    units = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "segdeploy":  # `from segdeploy import x`: a unit if x is a module, else the package
                names = [f"segdeploy.{a.name}" if _is_unit(a.name) else "segdeploy.__init__" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "segdeploy" and len(parts) > 1:
                units.add(parts[1])
    return units


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(path)
        graph.setdefault(unit, set()).update(u for u in _imported_units(path) if u != unit)
    return graph


def test_every_unit_has_a_tier():
    assert sorted(set(_graph()) - set(TIERS)) == []


def test_no_unit_imports_a_higher_tier():
    upward = sorted(f"{unit} (tier {TIERS[unit]}) imports {other} (tier {TIERS[other]})"
                    for unit, others in _graph().items() for other in others if TIERS[other] > TIERS[unit])
    assert upward == []


def test_no_import_cycles_between_units():
    graph = _graph()
    cycles = []

    def visit(unit, trail):
        for other in sorted(graph.get(unit, ())):
            if other in trail:
                cycles.append(" → ".join(trail[trail.index(other):] + [other]))
            elif len(trail) < len(graph):
                visit(other, trail + [other])

    for unit in sorted(graph):
        visit(unit, [unit])
    assert sorted(set(cycles)) == []


def test_the_checker_sees_lazy_imports(tmp_path):
    """The parser counts an import inside a function (the lazy ones segdeploy uses everywhere)."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from segdeploy.bench.latency import summarize\n    import segdeploy.cli.app\n")
    assert _imported_units(module) == {"bench", "cli"}


def test_cli_and_help_load_no_heavy_library():
    """`import segdeploy.cli` and every command's --help run without torch, onnxruntime, onnx, TensorRT or OpenVINO."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from segdeploy.cli import app\n"
        "for args in [['--help'], ['export', '--help'], ['build', '--help'], ['bench', '--help'], ['run', '--help'],\n"
        "             ['pipeline', '--help'], ['models', '--help'], ['inspect', 'precision', '--help']]:\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        "heavy = ('torch', 'torchvision', 'onnxruntime', 'onnx', 'tensorrt', 'tensorrt_rtx', 'matplotlib', 'onnxsim',\n"
        "         'openvino')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
