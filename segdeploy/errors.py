"""Error types.

`SegdeployError` is a *user* error: bad input, a model that cannot be exported, a
file that is missing. The CLI turns it into one line on stderr and exit status 1.
Anything else that escapes is our bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os


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


# -- operating-system errors -------------------------------------------------------------------

_OS_HINTS = {
    errno.ENOSPC: "free some space on that disk, or write somewhere else",
    errno.EDQUOT: "free some space (disk quota exceeded), or write somewhere else",
    errno.EROFS: "that file system is read-only: write somewhere else",
    errno.EACCES: "check the permissions, or choose another path",
    errno.EPERM: "check the permissions, or choose another path",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
    errno.EISDIR: "that is a folder: give a file",
    errno.ENAMETOOLONG: "use a shorter file or folder name",
    errno.ENOENT: "check that the path exists",
    errno.EEXIST: "remove it or choose another path",
    errno.ELOOP: "the path has a symbolic-link loop: fix or remove the link",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
}


def os_error(exc: OSError) -> SegdeployError:
    """An operating-system error as a one-line user error naming the path(s) and what to do."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    where = " → ".join(printable(os.fsdecode(p) if isinstance(p, bytes) else str(p)) for p in paths)
    if reason[1:2].islower():  # "No space left on device" → "no space left on device: PATH"
        reason = reason[0].lower() + reason[1:]
    return SegdeployError(f"{reason}: {where}" if where else reason, _OS_HINTS.get(exc.errno))


def printable(text: str) -> str:
    """`text` safe to print on one line: undecodable file-name bytes and control characters escaped."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
