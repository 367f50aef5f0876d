"""`segdeploy models`: the registry as a table (or --json)."""

from __future__ import annotations

from segdeploy.cli.console import emit, stdout, user_errors
from segdeploy.cli.options import JsonOption


def models_command(as_json: JsonOption = False) -> None:
    """List the architectures in the registry."""
    from segdeploy.models import list_specs
    from segdeploy.render import models_table

    with user_errors():
        rows = [
            {
                "name": s.name,
                "family": s.family,
                "default_input": "x".join(map(str, s.default_input)),
                "parameters": s.parameter_count(),
                "dynamic_hw": s.dynamic_hw,
                "size_multiple": s.size_multiple,
                "description": s.description,
            }
            for s in list_specs()
        ]
        emit(rows, as_json, lambda: stdout.print(models_table(rows)))
