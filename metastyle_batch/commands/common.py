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


def check_device(device: str):
    """The torch device for ``--device``; an unknown or missing one is a usage error."""
    from ..engine import pick_device

    try:
        return pick_device(device)
    except ValueError as exc:
        usage_error(f"--device {device}: {one_line(exc)}")


def load_stylizer(model: Path | None, device: str, log=None):
    """Load the meta network once; every failure (missing, damaged, not ours) is a one-line usage error."""
    from ..engine import Stylizer, default_model_path
    from ..model.io import ModelError

    check_device(device)
    where = model or default_model_path()
    try:
        return Stylizer(model=model, device=device, log=log or (lambda m: typer.echo(m, err=True)))
    except (ModelError, ValueError) as exc:
        usage_error(one_line(exc))
    except OSError as exc:
        usage_error(f"{where}: cannot read model ({exc.strerror or exc})")
    except Exception as exc:  # damaged files make safetensors/json raise assorted types
        usage_error(f"{where}: cannot load model ({type(exc).__name__}: {one_line(exc)})")
