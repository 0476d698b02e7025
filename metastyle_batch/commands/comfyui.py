"""`metastyle-batch comfyui install|uninstall`: a thin shell over :mod:`metastyle_batch.comfyui`."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import guarded

_DIR = typer.Option(..., "--comfy-dir", metavar="DIR", help="The ComfyUI folder (the one holding custom_nodes/).")


def register(app: typer.Typer) -> None:
    comfy_app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                            help="Install or remove the ComfyUI nodes (Load Style, Mix Styles, Style Schedule, Stylize).")
    comfy_app.command("install")(install)
    comfy_app.command("uninstall")(uninstall)
    app.add_typer(comfy_app, name="comfyui")


def install(comfy_dir: Path = _DIR) -> None:
    """Copy the MetaStyle node pack into DIR/custom_nodes/metastyle.

    The nodes run in ComfyUI's own Python, which needs metastyle-batch installed too: [bold]python -m pip install
    metastyle-batch[/bold] with the python that starts ComfyUI. Restart ComfyUI afterwards; the nodes are under
    image › MetaStyle.

    [bold]Example[/bold]

      metastyle-batch comfyui install --comfy-dir ~/ComfyUI
    """
    from .. import comfyui

    with guarded():  # ComfyInstallError: one line, exit 2
        dest = comfyui.install(comfy_dir)
    typer.echo(f"Installed the ComfyUI nodes: {dest}")
    typer.echo("ComfyUI's Python needs metastyle-batch too: python -m pip install metastyle-batch (ComfyUI's python)")
    typer.echo("Restart ComfyUI; the nodes are under image > MetaStyle.")


def uninstall(comfy_dir: Path = _DIR) -> None:
    """Remove the node pack installed by [bold]comfyui install[/bold].

    [bold]Example[/bold]

      metastyle-batch comfyui uninstall --comfy-dir ~/ComfyUI
    """
    from .. import comfyui

    with guarded():
        removed = comfyui.uninstall(comfy_dir)
    typer.echo(f"Removed {removed}" if removed else "Nothing to remove: the nodes are not installed there")
