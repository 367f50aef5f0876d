"""Third-party compatibility matrix: what segdeploy exports and builds, model by model.

    python scripts/compat_matrix.py [--only SUBSTRING …] [--merge] [--out compat/] [--update-readme README.md]
    python scripts/compat_matrix.py --render --update-readme README.md     # table from compat/matrix.json

Rows: every architecture of the installed segmentation_models_pytorch, each with three
encoders (a ResNet, a timm one, ``mit_b0`` where the architecture accepts it); torchvision's
segmentation models and segdeploy's own zoo (registry names); transformers' SegFormer,
BEiT, DPT and MobileViT and a timm ViT (`scripts/compat_models.py`). Random weights, no
downloads, small non-square inputs (1×3×64×96, or the smallest size a model accepts).

Columns, each made by segdeploy's own library (`export_model`, `build_artifacts`) exactly
as the CLI makes them: export at opset 11 with the parity proof (static, then dynamic
batch/height/width), FP16 and INT8 graphs for onnxruntime, and for TensorRT the FP32/FP16/
INT8 graphs with their TensorRT-RTX engines (built on the CPU). INT8 calibrates on 8 of the
shipped `calib/` images. Every cell is pass, fail with a short reason, or n/a with why.
Writes `matrix.json` (every figure and full reason) and `matrix.md` (the table).
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FACTORIES = REPO / "scripts" / "compat_models.py"
CLASSES = 4
SHAPE = (1, 3, 64, 96)
COLUMNS = ("export", "dynamic", "ort-fp16", "ort-int8", "trt-fp32", "trt-fp16", "trt-int8")
HEADERS = ("export", "dynamic H/W", "ORT FP16", "ORT INT8", "TRT FP32", "TRT FP16", "TRT INT8")
ZOO_WIDTH = 0.125


@dataclass
class Entry:
    id: str
    source: str
    model_kwargs: dict = field(default_factory=dict)
    num_classes: int | None = CLASSES
    shape: tuple = SHAPE
    static_only: str | None = None  # why dynamic H/W is not applicable, when known up front


def smp_entries() -> list[Entry]:
    """Every architecture the installed segmentation_models_pytorch offers × three encoders."""
    import segmentation_models_pytorch as smp

    entries = []
    for arch, cls in smp.MODEL_ARCHITECTURES_MAPPING.items():
        encoders = _smp_encoders(arch)
        shape = (1, 3, 128, 192) if arch == "pan" else SHAPE  # PAN's pyramid needs ≥ 128 px
        for encoder, extra in encoders.items():
            kwargs = {"encoder_name": encoder, "encoder_weights": None, "classes": CLASSES, **extra}
            entries.append(Entry(f"smp/{cls.__name__}/{encoder}", f"segmentation_models_pytorch:{cls.__name__}",
                                 kwargs, None, shape))
    return entries


def _smp_encoders(arch: str) -> dict[str, dict]:
    """Encoder → extra keyword arguments: a ResNet, a timm encoder, mit_b0 where accepted."""
    if arch == "dpt":  # timm encoders only; ViTs fit their position grid to 64×96 when asked (and a small decoder)
        small = {"decoder_intermediate_channels": [32, 64, 128, 128], "decoder_fusion_channels": 32}
        return {"tu-vit_tiny_patch16_224": {**small, "dynamic_img_size": True},
                "tu-deit_tiny_distilled_patch16_224": {**small, "dynamic_img_size": True},
                "tu-mobilenetv3_small_100": small}
    if arch in ("unetplusplus", "linknet"):  # these refuse mit_b0
        return dict.fromkeys(["resnet18", "tu-mobilenetv3_small_100", "tu-efficientnet_b0"], {})
    return dict.fromkeys(["resnet18", "tu-mobilenetv3_small_100", "mit_b0"], {})


def registry_entries() -> list[Entry]:
    """torchvision's models (registry builders without a width) and the zoo (tiny width)."""
    from segdeploy.models import list_specs

    entries = []
    for spec in list_specs():
        zoo = "width" in inspect.signature(spec.builder).parameters
        m = spec.size_multiple
        shape = (1, 3, -(-SHAPE[2] // m) * m, -(-SHAPE[3] // m) * m)
        entries.append(Entry(f"{'zoo' if zoo else 'torchvision'}/{spec.name}", spec.name,
                             {"width": ZOO_WIDTH} if zoo else {}, CLASSES, shape,
                             None if spec.dynamic_hw else "registry: static height/width only"))
    return entries


def transformer_entries() -> list[Entry]:
    file = str(FACTORIES)
    return [
        Entry("transformers/SegFormer", f"{file}:hf_segformer"),
        Entry("transformers/BEiT", f"{file}:hf_beit"),
        Entry("transformers/DPT", f"{file}:hf_dpt", shape=(1, 3, 64, 64)),
        Entry("transformers/MobileViT", f"{file}:hf_mobilevit"),
        Entry("timm/ViT (SETR-naive head)", f"{file}:timm_vit"),
    ]


def all_entries() -> list[Entry]:
    return smp_entries() + registry_entries() + transformer_entries()


# -- running ---------------------------------------------------------------------------------


def _cell(status: str, reason: str = "", **figures) -> dict:
    return {"status": status, "reason": reason, **figures}


def _attempt(action) -> dict:
    """Run one step; a SegdeployError is a fail with its message, anything else a fail with its type."""
    from segdeploy.errors import SegdeployError

    started = time.perf_counter()
    try:
        cell = action()
    except SegdeployError as exc:
        cell = _cell("fail", exc.message)
    except Exception as exc:  # a bug (ours or a library's) is recorded, and the matrix goes on
        traceback.print_exc()
        cell = _cell("fail", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
    cell["seconds"] = round(time.perf_counter() - started, 1)
    return cell


def _export(entry: Entry, out: Path, dynamic: bool) -> dict:
    from segdeploy.export import ExportRequest, export_model

    request = ExportRequest(source=entry.source, out_dir=out, input_shape=entry.shape, model_kwargs=entry.model_kwargs,
                            num_classes=entry.num_classes, dynamic={"batch", "height", "width"} if dynamic else set())
    result = export_model(request)
    return _cell("pass", rel_error=result.parity["max_rel_error"], agreement=result.parity["min_argmax_agreement"],
                 rewrites=result.rewrites)


def _build(deploy: Path, precision: str, backend: str) -> dict:
    from segdeploy.build import BuildOptions, build_artifacts

    result = build_artifacts(deploy, [precision], backend, BuildOptions(calib_size=8), warn=lambda _: None)
    made = {a["name"]: a for a in result.artifacts}
    graph = next(a for a in result.artifacts if a.get("kind") == "onnx")
    # FP32 is the export itself: its "parity" is the export's proof against PyTorch, not a
    # precision graph against FP32, so the table shows no percentage for it.
    agreement = None if precision == "fp32" else (graph.get("parity") or {}).get("argmax_agreement")
    engine = made.get(f"trt-{precision}")
    return _cell("pass", agreement=agreement, graph=graph["file"],
                 engine_seconds=engine.get("build_seconds") if engine else None)


def _dynamic_cell(entry: Entry, work: Path) -> dict:
    if entry.static_only:
        return _cell("n/a", entry.static_only)
    cell = _attempt(lambda: _export(entry, work / "dynamic", True))
    if cell["status"] == "fail" and "the model itself cannot run at input" in cell["reason"]:
        cell.update(status="n/a", reason="the model runs at its export size only (in PyTorch itself)")
    shutil.rmtree(work / "dynamic", ignore_errors=True)
    return cell


def run_entry(entry: Entry, work: Path, tensorrt: bool, say) -> dict:
    """Every cell of one row; later cells need the static export and are skipped without it."""
    cells = {"export": _attempt(lambda: _export(entry, work / "static", False))}
    say(entry.id, "export", cells["export"])
    cells["dynamic"] = _dynamic_cell(entry, work)
    say(entry.id, "dynamic", cells["dynamic"])
    for column in COLUMNS[2:]:
        backend, precision = ("tensorrt" if column.startswith("trt") else "onnxruntime"), column.split("-")[1]
        if cells["export"]["status"] != "pass":
            cells[column] = _cell("skipped", "no export")
        elif backend == "tensorrt" and not tensorrt:
            cells[column] = _cell("skipped", "TensorRT(-RTX) not installed")
        else:
            cells[column] = _attempt(lambda: _build(work / "static", precision, backend))
        say(entry.id, column, cells[column])
    return {"entry": asdict(entry), "cells": cells}


def run_matrix(entries: list[Entry], tensorrt: bool, say) -> list[dict]:
    rows = []
    for entry in entries:
        with tempfile.TemporaryDirectory(prefix="segdeploy-compat-") as work:
            rows.append(run_entry(entry, Path(work), tensorrt, say))
    return rows


def _say(entry_id: str, column: str, cell: dict) -> None:
    reason = f": {cell['reason'][:160]}" if cell["reason"] else ""
    print(f"{entry_id:48s} {column:9s} {cell['status']}{reason} ({cell.get('seconds', 0)}s)", file=sys.stderr, flush=True)


# -- rendering -------------------------------------------------------------------------------


def short_reason(reason: str, limit: int = 190) -> str:
    """One line, paths shortened, graph node names elided (so one cause across models shares
    a number), at most `limit` characters; the JSON keeps the whole message."""
    text = re.sub(r"\(/[^()\s]*\)", "(…)", " ".join(reason.split()).replace(str(REPO) + "/", ""))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_markdown(rows: list[dict]) -> str:
    """The table: ✓ (with the argmax agreement of precision graphs), ✗ n / – n with numbered
    reasons listed below it (identical reasons share a number)."""
    reasons: dict[str, int] = {}
    lines = ["| model | " + " | ".join(HEADERS) + " |", "|---" * (len(HEADERS) + 1) + "|"]
    for row in rows:
        marks = [_mark(row["cells"][column], reasons) for column in COLUMNS]
        shape = "×".join(str(d) for d in row["entry"]["shape"][2:])
        lines.append(f"| {row['entry']['id']} ({shape}) | " + " | ".join(marks) + " |")
    lines.append("")
    lines.extend(f"{number}. {reason}" for reason, number in reasons.items())
    return "\n".join(lines) + "\n"


def _mark(cell: dict, reasons: dict[str, int]) -> str:
    if cell["status"] == "pass":
        agreement = cell.get("agreement")
        return "✓" if agreement is None or "rel_error" in cell else f"✓ {agreement:.1%}"
    number = reasons.setdefault(short_reason(cell["reason"]), len(reasons) + 1)
    return f"{'✗' if cell['status'] == 'fail' else '–'} {number}"


def merge_rows(old: list[dict], new: list[dict], order: list[str]) -> list[dict]:
    """`old` with the rows of the same entries replaced by `new`, in the matrix's `order`;
    rows of entries the matrix no longer has are dropped."""
    by_id = {row["entry"]["id"]: row for row in old} | {row["entry"]["id"]: row for row in new}
    return [by_id[entry] for entry in order if entry in by_id]


def summary(rows: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for row in rows:
        for cell in row["cells"].values():
            counts[cell["status"]] = counts.get(cell["status"], 0) + 1
    return counts


START, END = "<!-- compat-matrix:start -->", "<!-- compat-matrix:end -->"


def update_readme(readme: Path, table: str) -> None:
    """Replace the text between the compat-matrix markers in `readme` with `table`."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} … {END} markers")
    head, rest = text.split(START, 1)
    readme.write_text(head + START + "\n" + table + rest[rest.index(END):])


def _has_tensorrt() -> bool:
    from segdeploy.backends.tensorrt.flavour import load_tensorrt
    from segdeploy.errors import SegdeployError

    try:
        load_tensorrt()
    except SegdeployError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], help="run the entries whose id contains this (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO / "compat", help="folder for matrix.json and matrix.md")
    parser.add_argument("--list", action="store_true", help="list the entries and exit")
    parser.add_argument("--render", action="store_true",
                        help="run nothing: re-render OUT/matrix.md (and --update-readme) from OUT/matrix.json")
    parser.add_argument("--merge", action="store_true",
                        help="replace only the rows run now in an existing OUT/matrix.json (re-run a subset)")
    parser.add_argument("--update-readme", type=Path, help="write the table between the README's compat-matrix markers")
    args = parser.parse_args(argv)
    entries = [e for e in all_entries() if not args.only or any(s in e.id for s in args.only)]
    if args.list or not entries:
        print("\n".join(e.id for e in entries) or "no entry matches --only")
        return 0 if entries else 2
    if args.render:
        rows = json.loads((args.out / "matrix.json").read_text())["rows"]
    else:
        rows = run_matrix(entries, tensorrt=_has_tensorrt(), say=_say)
    if args.merge and not args.render and (args.out / "matrix.json").is_file():
        rows = merge_rows(json.loads((args.out / "matrix.json").read_text())["rows"], rows, [e.id for e in all_entries()])
    args.out.mkdir(parents=True, exist_ok=True)
    table = render_markdown(rows)
    (args.out / "matrix.json").write_text(json.dumps({"summary": summary(rows), "rows": rows}, indent=1, ensure_ascii=False) + "\n")
    (args.out / "matrix.md").write_text(table)
    if args.update_readme:
        update_readme(args.update_readme, table)
    print(f"{summary(rows)} → {args.out / 'matrix.md'}, {args.out / 'matrix.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
