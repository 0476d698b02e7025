"""`metastyle-batch ui`: a local web app (Starlette and one page) over the same engine as the CLI.

``serve`` runs it on a listening socket: :mod:`.workspace` keeps uploads and renders in one folder,
:mod:`.studio` turns requests into library calls, :mod:`.jobs` runs long renders, :mod:`.server` is the HTTP API.
"""

from __future__ import annotations

import os
import socket
import sys
import webbrowser


def serve(stylizer, sock: socket.socket, workdir: str | os.PathLike, max_upload: int, *, loopback: bool = True,
          open_browser: bool = True) -> None:
    """Serve the app on ``sock`` until Ctrl-C or SIGTERM; prints its address first (a line starting ``http``)."""
    import uvicorn

    from .server import create_app
    from .studio import Studio
    from .workspace import Workspace

    workspace = Workspace(workdir, max_upload)
    app = create_app(Studio(stylizer, workspace), loopback=loopback)
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"
    print(url, flush=True)
    print(f"MetaStyle is ready; Ctrl-C stops it. Working folder: {workspace.root}", file=sys.stderr, flush=True)
    if open_browser:
        webbrowser.open(url)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn stops on Ctrl-C or SIGTERM, then passes the signal on: a normal end
        pass
    print("Stopped.", file=sys.stderr, flush=True)
