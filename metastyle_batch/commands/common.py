"""What every command shares: one-line errors with the CLI's exit codes, and the check of an input image file.

Exit codes, for every command: 0 done; 1 the work failed (some inputs of a batch, a video that broke mid-way);
2 usage (a bad option, a missing or damaged style, input, model or VGG weights: :attr:`MetastyleError.exit_code`);
130 interrupted (outputs are written atomically, so nothing partial is left). Torch is never imported here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import typer

from ..errors import MetastyleError, OutputExistsError
from ..formats import FORMAT_EXT, format_name
from ..paths import not_regular

DEVICES = "auto, cpu, cuda, cuda:N or mps"
INTERRUPTED = 130
_HINTS = ((OutputExistsError, "pass --overwrite to replace it"),)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def echo_err(message: str) -> None:
    """One plain line on stderr (no rich markup, no wrapping: file names may contain brackets)."""
    typer.echo(message, err=True)


def describe(exc: BaseException) -> str:
    """The error's one line, plus how to fix it on the command line where the library cannot know the flag."""
    message = one_line(exc)
    for kind, hint in _HINTS:
        if isinstance(exc, kind):
            message += f"; {hint}"
    return message


@contextmanager
def guarded(prefix: str = "") -> Iterator[None]:
    """The one error → exit-code table: a :class:`MetastyleError` becomes ``Error: <one line>`` with its
    ``exit_code``; Ctrl-C exit 130; an OSError, or anything torch or a library raised, one line and exit 1."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except MetastyleError as exc:
        echo_err(f"Error: {prefix}{describe(exc)}")
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        echo_err("Interrupted; no partial files were left behind.")
        raise typer.Exit(INTERRUPTED) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        echo_err(f"Error: {prefix}{where}{exc.strerror or one_line(exc)}")
        raise typer.Exit(1) from None
    except Exception as exc:  # torch / numpy / unexpected: still one line
        echo_err(f"Error: {prefix}{type(exc).__name__}: {one_line(exc)}")
        raise typer.Exit(1) from None


def parse_format(value: str | None) -> str | None:
    """``--format`` → the canonical format name (``jpg`` → ``jpeg``); None stays None."""
    if value is None:
        return None
    name = format_name(value)
    if name is None:
        usage_error(f"unknown --format {value!r}; use " + ", ".join(sorted(FORMAT_EXT)))
    return name


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
    if kind := not_regular(p):
        usage_error(f"{what} {path} is {kind}, not an image file" + ("" if kind == "a folder" else
                                                                      "; save it to a file first"))
    if not os.access(p, os.R_OK):
        usage_error(f"cannot read {what} {path}: permission denied")
    return p


def encode_style(stylizer, styles: list[Path], weights: list[float] | None = None):
    """Style image(s) → one style code; an unreadable style or missing VGG-16 weights is a usage error."""
    from ..images import ImageError

    try:
        return stylizer.blend(styles, weights)
    except ImageError as exc:
        usage_error(f"style image {exc}")
    except (MetastyleError, ValueError) as exc:
        usage_error(str(exc))
    except OSError as exc:
        usage_error(f"cannot read style image {exc.filename or ''} ({exc.strerror or exc})")


def check_device(device: str) -> None:
    """An unknown or missing ``--device``, or one that needs the torch extra, is a usage error."""
    from ..runtime import TorchMissing, uses_torch

    try:
        if uses_torch(device):
            from ..tensors import pick_device

            pick_device(device)
    except TorchMissing as exc:
        usage_error(str(exc))
    except ValueError as exc:
        usage_error(f"--device {device}: {one_line(exc)}")


def require_torch_option(what: str) -> None:
    """Options and commands that need the torch extra are usage errors without it (one line naming the extra)."""
    from ..runtime import TorchMissing, require_torch

    try:
        require_torch(what)
    except TorchMissing as exc:
        usage_error(str(exc))


def load_stylizer(model: Path | None, device: str, log=None, torch: bool = False):
    """The engine for ``device`` (:func:`metastyle_batch.runtime.open_stylizer`) with the meta network loaded;
    every failure (missing, damaged, not ours) is a one-line usage error."""
    from ..model.io import ModelError
    from ..paths import default_model_path
    from ..runtime import open_stylizer

    check_device(device)
    where = model or default_model_path()
    try:
        return open_stylizer(model, device, torch=torch, log=log or (lambda m: typer.echo(m, err=True)))
    except (ModelError, ValueError) as exc:
        usage_error(one_line(exc))
    except OSError as exc:
        usage_error(f"{where}: cannot read model ({exc.strerror or exc})")
    except Exception as exc:  # damaged files make safetensors/json raise assorted types
        usage_error(f"{where}: cannot load model ({type(exc).__name__}: {one_line(exc)})")


def refine_network(stylizer, style: Path, photos: list, steps: int, console) -> dict:
    """``--refine``: the network for ``style`` fine-tuned for ``steps`` on crops of ``photos`` ((3, H, W) uint8,
    the images or frames about to be stylized), with a progress bar; in the stylizer's dtype."""
    from rich.progress import Progress

    from ..train.finetune import finetune

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"refining on {len(photos)} image(s)", total=steps)
        result = finetune(stylizer, style, photos, steps, progress=lambda i, n, loss: bar.update(task, completed=i))
    console.print(f"refined {steps} steps in {result.seconds:.0f} s: loss {result.loss_before['total']:.3f} -> "
                  f"{result.loss_after['total']:.3f}", highlight=False)
    return {k: v.to(stylizer.dtype) for k, v in result.params.items()}
