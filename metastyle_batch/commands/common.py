"""What every command shares: one-line errors with the CLI's exit codes, and the check of an input image file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import typer

DEVICES = "auto, cpu, cuda, cuda:N or mps"


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def usage_error(message: str) -> NoReturn:
    """``Error: …`` (one line, never a traceback) on stderr, exit 2."""
    typer.echo("Error: " + " ".join(str(message).split()), err=True)
    raise typer.Exit(2)


def fail(message: str) -> NoReturn:
    """Like :func:`usage_error`, for work that failed (exit 1)."""
    typer.echo("Error: " + " ".join(str(message).split()), err=True)
    raise typer.Exit(1)


def check_image_file(path: str | Path, what: str = "style image", option: str | None = None, hint: str = "") -> Path:
    """An existing, readable file (not stdin, not a folder); ``option`` names the flag in the stdin message."""
    if str(path) == "-":
        usage_error(f"{option or what} cannot read stdin ('-'); give an image file")
    p = Path(path).expanduser()
    if not p.exists():
        usage_error(f"{what} not found: {path}{hint}")
    if p.is_dir():
        usage_error(f"{what} {path} is a folder; give an image file")
    if not os.access(p, os.R_OK):
        usage_error(f"cannot read {what} {path}: permission denied")
    return p
