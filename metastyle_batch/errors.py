"""One error taxonomy: everything the library raises about a user's file or setting is a :class:`MetastyleError`.

``str(e)`` is always one line, ``"<file>: <reason>"`` (or just the reason when no file is involved), so every
shell (CLI, watch daemon, GIMP plug-in) can show it as is. ``exit_code`` is the CLI's exit status for it: 2 when the
user must change what they asked for (a missing or damaged model, style or input), 1 when the work itself failed.
Library messages name files and values, never command-line flags: the shells add those.
"""

from __future__ import annotations

import os

__all__ = ["MetastyleError", "OutputError", "OutputExistsError", "check_output", "one_line"]


def one_line(text: object) -> str:
    """``text`` with all whitespace runs (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


class MetastyleError(Exception):
    """Base class; ``MetastyleError(file, reason)`` or ``MetastyleError(message)``."""

    exit_code = 1

    def __init__(self, file: str | os.PathLike | None, reason: str | None = None) -> None:
        if reason is None:
            file, reason = None, file
        self.file = None if file is None else os.fspath(file).replace("\r", "\\r").replace("\n", "\\n")
        self.reason = one_line(reason) or "unknown error"
        super().__init__(f"{self.file}: {self.reason}" if self.file else self.reason)


class OutputError(MetastyleError):
    """The output path cannot be used (a folder where a file is wanted)."""

    exit_code = 2


class OutputExistsError(OutputError, FileExistsError):
    """The output is already there and replacing it was not asked for (shells add how to ask)."""


def check_output(dest: str | os.PathLike, overwrite: bool, exists: type[MetastyleError] = OutputExistsError,
                 unusable: type[MetastyleError] = OutputError) -> None:
    """The one output-exists check: refuse a folder, or an existing file unless ``overwrite``."""
    if os.path.isdir(dest):
        raise unusable(dest, "is a directory; give a file name")
    if os.path.lexists(dest) and not overwrite:
        raise exists(dest, "exists")
