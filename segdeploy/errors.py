"""Error types.

`SegdeployError` is a *user* error: bad input, a model that cannot be exported, a
file that is missing. The CLI turns it into one line on stderr and exit status 1.
Anything else that escapes is our bug and keeps its traceback.
"""

from __future__ import annotations


class SegdeployError(Exception):
    """A problem with what the user asked for; the message says what and what to do."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(SegdeployError):
    """Malformed option value or contradictory options (exit 2, like Typer's own usage errors)."""

    exit_code = 2


class ExportError(SegdeployError):
    """The model could not be exported or failed its parity proof."""


class ParityError(ExportError):
    """The exported graph does not reproduce PyTorch's outputs within the thresholds."""
