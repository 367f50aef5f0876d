"""Human renderings of command results (tables, summaries); kept out of cli.py to keep it thin."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table


def models_table(rows: list[dict]) -> Table:
    table = Table(title="segdeploy models", show_lines=False)
    table.add_column("name", no_wrap=True)
    table.add_column("family", no_wrap=True)
    table.add_column("default input", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("dynamic H/W", no_wrap=True)
    table.add_column("description", overflow="fold")
    for row in rows:
        table.add_row(
            row["name"],
            row["family"],
            row["default_input"],
            f"{row['parameters'] / 1e6:.1f}M",
            "yes" if row["dynamic_hw"] else "no",
            row["description"],
        )
    return table


def export_summary(result, timings: dict[str, float]) -> dict:
    """The export's result as a dict (for --json) with a human `text` rendering."""
    parity = result.parity
    entry = result.manifest.artifact("onnx-fp32")
    data = {
        "deploy_dir": str(result.directory),
        "onnx": str(result.onnx_path),
        "manifest": str(result.directory / "manifest.json"),
        "sha256": entry["sha256"],
        "opset": entry["opset"],
        "inputs": entry["inputs"],
        "outputs": entry["outputs"],
        "rewrites": result.rewrites,
        "parity": parity,
        "timings_s": timings,
    }
    checks = "; ".join(
        f"{'x'.join(map(str, c['shape']))}: agreement {c['argmax_agreement']:.4%}"
        + (" (class maps: no logit error)" if c.get("labels_only")
           else f", max abs err {c['max_abs_error']:.2e}, rel err {c['rel_error']:.2e}")
        for c in parity["checks"]
    )
    lines = [f"{result.onnx_path} (opset {entry['opset']}, {entry['bytes'] / 1e6:.1f} MB)"]
    if result.rewrites:
        lines.append("rewrites: " + "; ".join(result.rewrites))
    lines.append(f"parity vs PyTorch: {checks}")
    lines.append("time: " + ", ".join(f"{name} {sec:.1f}s" for name, sec in timings.items()))
    data["text"] = "[bold green]exported[/] " + escape("\n".join(lines))  # paths are text, never markup
    return data


def bench_rendering(result, console) -> None:
    """The bench table, the gate table (if any gates ran) and where the reports are."""
    from segdeploy.bench.reports import COLUMNS, table_rows

    report = result.report
    table = Table(title=f"segdeploy bench: {escape(str(report['model']['name']))} on {report['data']['images']} images")
    for column in COLUMNS:
        table.add_column(column, no_wrap=column in ("artifact",), justify="left" if column in COLUMNS[:3] else "right")
    for row in table_rows(report):
        table.add_row(*row)
    console.print(table)
    if result.gates:
        gates = Table(title="gates")
        for column in ("gate", "artifact", "result", "verdict"):
            gates.add_column(column)
        for gate in result.gates:
            gates.add_row(gate.gate, gate.target, gate.detail, "[green]pass[/]" if gate.passed else "[bold red]FAIL[/]")
        console.print(gates)
    console.print(f"reports: {', '.join(str(p) for p in result.files)}", highlight=False, markup=False)
