"""The ``metastyle-batch`` root command: the Typer app, one-line usage errors, and the commands' registration.

Each command lives in :mod:`metastyle_batch.commands` (one module each, thin shells over the library); the exit
codes are one table for all of them (:mod:`metastyle_batch.commands.common`). Nothing here imports torch, so
``--help`` is instant; commands import the heavy parts when they run.
"""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from . import __version__
from .commands.common import echo_err


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt


def _sigterm_is_ctrl_c() -> None:
    """SIGTERM (``kill``, ``systemctl stop``, ``docker stop``) stops a command as Ctrl-C does: partial outputs
    and ffmpeg children cleaned up, "Interrupted" and exit 130 (the watch daemon installs its own handlers)."""
    try:
        signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread (an embedding host): leave its signals alone
        pass


class _Group(TyperGroup):
    """Like Typer's group, but any usage error is ONE line ``Error: …`` on stderr (exit 2), never a panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        _sigterm_is_ctrl_c()
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            echo_err("Aborted.")
            sys.exit(1)
        except Exception as exc:  # click's ClickException family (vendored by newer Typer versions)
            if not (hasattr(exc, "exit_code") and hasattr(exc, "format_message")):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help text was already printed
                sys.exit(exc.exit_code)
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None and type(exc).__name__ != "ClickException" else ""
            echo_err(f"Error: {' '.join(exc.format_message().split())}{hint}")
            sys.exit(exc.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_Group,
    name="metastyle-batch",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
    help=(
        "Arbitrary neural style transfer with meta networks: one forward pass turns any style image into a "
        "small image transformation network, which then stylizes photos in milliseconds.\n\n"
        "Start with [bold]metastyle-batch setup[/bold] (fetches the VGG-16 style encoder once), then e.g.\n\n"
        "  [green]metastyle-batch image photo.jpg --style starry_night.jpg[/green]"
    ),
)
cache_app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Show or clear the user cache (encoded style codes, VGG-16 weights).",
)
app.add_typer(cache_app, name="cache")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"metastyle-batch {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Arbitrary neural style transfer with meta networks."""


# ------------------------------------------------------------------------------------------ commands


def _register_commands() -> None:
    from .commands import comfyui, extras, gimp, image, info, train, ui, video, watch

    image.register(app)
    info.register(app, cache_app)
    for module in (video, watch, train, extras, gimp, comfyui, ui):
        module.register(app)


_register_commands()

__all__ = ["app"]
