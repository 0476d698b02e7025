"""`metastyle-batch gimp install|uninstall`: a thin shell over :mod:`metastyle_batch.gimp`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import usage_error

_GIMP_DIR_HELP = ("GIMP's per-user folder (the one holding plug-ins/). Default: $GIMP3_DIRECTORY, else "
                  "~/.config/GIMP/3.0 (macOS: ~/Library/Application Support/GIMP/3.0, Windows: %APPDATA%\\GIMP\\3.0).")


def register(app: typer.Typer) -> None:
    gimp_app = typer.Typer(
        no_args_is_help=True,
        rich_markup_mode="rich",
        help="Install or remove the GIMP 3 plug-in (Filters › Artistic › MetaStyle…).",
    )
    gimp_app.command("install")(install)
    gimp_app.command("uninstall")(uninstall)
    app.add_typer(gimp_app, name="gimp")


def install(
    gimp_dir: Optional[Path] = typer.Option(None, "--gimp-dir", metavar="DIR", help=_GIMP_DIR_HELP),
) -> None:
    """Copy the plug-in into GIMP's plug-ins folder and point it at this metastyle-batch.

    GIMP's own Python cannot import our dependencies, so the plug-in calls this environment's [bold]metastyle-batch[/bold] executable; its absolute path is written next to the plug-in. Run this again after moving or recreating the environment. Restart GIMP afterwards.

    [bold]Example[/bold]

      metastyle-batch gimp install
    """
    from ..gimp import GimpInstallError
    from ..gimp import install as do_install

    try:
        done = do_install(gimp_dir)
    except GimpInstallError as exc:
        usage_error(str(exc))
    typer.echo(f"Installed the GIMP plug-in: {done.plugin}")
    typer.echo(f"It runs: {done.executable}")
    typer.echo("Restart GIMP 3, open an image and use Filters > Artistic > MetaStyle...")


def uninstall(
    gimp_dir: Optional[Path] = typer.Option(None, "--gimp-dir", metavar="DIR", help=_GIMP_DIR_HELP),
) -> None:
    """Remove the GIMP plug-in installed by [bold]gimp install[/bold].

    [bold]Example[/bold]

      metastyle-batch gimp uninstall
    """
    from ..gimp import GimpInstallError, plugin_dir
    from ..gimp import uninstall as do_uninstall

    try:
        removed = do_uninstall(gimp_dir)
    except GimpInstallError as exc:
        usage_error(str(exc))
    if removed is None:
        typer.echo(f"Nothing to remove: the plug-in is not installed in {plugin_dir(gimp_dir)}")
    else:
        typer.echo(f"Removed {removed}")
