"""Every message of the CLI goes through here: progress, warnings and errors on stderr, results on
stdout (human, rendered by `segdeploy.render`, or --json)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any, Callable, Iterator

import typer
from rich.console import Console
from rich.markup import escape

from segdeploy.errors import SegdeployError

stdout = Console(soft_wrap=True)
if not stdout.is_terminal:
    stdout.width = 200  # logs and pipes: keep wide tables on one line instead of 80 columns
stderr = Console(stderr=True, soft_wrap=True)


def debug_enabled() -> bool:
    return os.environ.get("SEGDEPLOY_DEBUG", "") not in ("", "0")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a SegdeployError into one line on stderr and its exit code; bugs keep their traceback."""
    try:
        yield
    except SegdeployError as exc:
        if debug_enabled():
            raise
        # escaped: a message may hold brackets that are not markup, e.g. `pip install "segdeploy[openvino]"`
        stderr.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False)
        raise typer.Exit(exc.exit_code) from None


class Steps:
    """Shows the step in progress as a transient spinner on an interactive stderr; records timings.

    Nothing is printed when stderr is not a terminal (CI logs, pipes) or under --json, so
    a failure there shows exactly one line: the error.
    """

    def __init__(self, quiet: bool = False):
        self.live = not quiet and stderr.is_terminal
        self.timings: dict[str, float] = {}
        self._name: str | None = None
        self._start = 0.0
        self._status = None

    def __call__(self, name: str) -> None:
        self._finish()
        self._name, self._start = name, time.perf_counter()
        if self._status is not None:
            self._status.update(f"{name} …")

    def _finish(self) -> None:
        if self._name:
            self.timings[self._name] = round(time.perf_counter() - self._start, 2)
        self._name = None

    def __enter__(self) -> "Steps":
        if self.live:
            self._status = stderr.status("starting …")
            self._status.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._finish()
        if self._status is not None:
            self._status.__exit__(*exc)


def quiet_library_warnings() -> None:
    """torch/onnx emit deprecation and tracer warnings users cannot act on; SEGDEPLOY_DEBUG shows them."""
    if not debug_enabled():
        import warnings

        warnings.simplefilter("ignore")


def warn(message: str) -> None:
    """A warning the library reports (its `warn` callback): one line on stderr."""
    stderr.print(f"[yellow]warning:[/] {message}", highlight=False)


def emit(data: Any, as_json: bool, render: Callable[[], None]) -> None:
    """Print a command's result: the JSON document, or the human rendering."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        render()
