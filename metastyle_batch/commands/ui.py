"""`metastyle-batch ui`: a thin shell that starts :mod:`metastyle_batch.ui` on a local port."""

from __future__ import annotations

import importlib.util
import ipaddress
import socket
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import DEVICES, echo_err, guarded, load_stylizer, usage_error

EXTRA = 'pip install "metastyle-batch[ui]"'


def register(app: typer.Typer) -> None:
    app.command()(ui)


def ui(
    host: Annotated[str, typer.Option(
        metavar="ADDR", help="Address to listen on. Only this computer can reach the default; another address "
                             "(0.0.0.0: every network) lets other machines upload and render.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, metavar="N", help="Port (0: any free one).")] = 8765,
    workdir: Annotated[Optional[Path], typer.Option(
        metavar="DIR", help="The app's working folder: uploads and renders go here and nowhere else "
                            "(default: the cache folder's ui/).")] = None,
    max_upload_mb: Annotated[int, typer.Option(
        min=1, max=65536, metavar="MB", help="Largest file an upload may be (photos, styles, clips).")] = 1024,
    open_browser: Annotated[bool, typer.Option(
        "--open/--no-open", help="Open the page in the default browser.")] = True,
    device: Annotated[str, typer.Option(metavar="NAME", help=f"Where to compute: {DEVICES}.")] = "auto",
    model: Annotated[Optional[Path], typer.Option(
        metavar="PATH", help="Meta network file (default: $METASTYLE_MODEL or the shipped model).")] = None,
) -> None:
    """Open the app in a browser: photos with live preview, a live camera, and video.

    Drop photos and style images, mix styles, move the strength, palette and colour sliders and watch the
    preview; Render makes the full-size results (a zip for several photos). The Camera tab stylizes your webcam
    live; the Video tab renders a clip with one style or a transition, audio kept. Everything runs on this
    computer, with the same engine and pixels as the other commands. Needs the ui extra: [bold]pip install
    "metastyle-batch\\[ui]"[/bold]. Stop it with Ctrl-C.

    [bold]Examples[/bold]

      metastyle-batch ui

      metastyle-batch ui --port 9000 --no-open --workdir ~/metastyle-ui
    """
    if not all(importlib.util.find_spec(m) for m in ("starlette", "uvicorn")):
        usage_error(f"the ui needs Starlette and uvicorn, which this install leaves out; add them with: {EXTRA}")
    from ..paths import cache_dir

    folder = (workdir or cache_dir() / "ui").expanduser()
    if folder.exists() and not folder.is_dir():
        usage_error(f"--workdir {folder}: is a file, not a folder")
    loopback = _is_loopback(host)
    if not loopback:
        echo_err(f"Warning: listening on {host}: other machines that can reach this address can use the app "
                 "(upload files and use this computer's processor). Use the default 127.0.0.1 to keep it private.")
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        usage_error(f"cannot listen on {host}:{port} ({exc.strerror or exc}); try another --port, or 0 for any")
    from ..ui import serve

    stylizer = load_stylizer(model, device)
    with guarded():
        serve(stylizer, sock, folder, max_upload_mb * 2**20, loopback=loopback, open_browser=open_browser)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
