"""The web app: one page (``static/``) and a small JSON API over :class:`~metastyle_batch.ui.studio.Studio`.

Starlette, not Gradio: the page needs only uploads, a few sliders, a polled progress bar and one camera loop,
which fit in one small page; Starlette and uvicorn add about 2 MB to the install where Gradio adds over 100 MB
(pandas, a hub client, its own front end) to a product whose point is a small install.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..color import PALETTE_STRENGTH
from ..errors import MetastyleError
from ..paths import cache_entries
from .jobs import JobRunner
from .studio import Look, Studio
from .workspace import RequestError

log = logging.getLogger("metastyle_batch.ui")
STATIC = Path(str(resources.files("metastyle_batch.ui").joinpath("static")))
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def create_app(studio: Studio, *, loopback: bool = True) -> Starlette:
    """The app. ``loopback``: only Host headers naming this machine are served (no DNS rebinding)."""
    jobs = JobRunner()
    workspace = studio.workspace

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def state(request: Request) -> Response:
        info = studio.stylizer.info
        return JSONResponse({"model": info.get("id"), "runtime": _runtime(studio.stylizer), "palette": PALETTE_STRENGTH,
                             "max_upload_mb": workspace.max_upload >> 20, "cache": _code_cache()})

    async def upload(request: Request) -> Response:
        _same_origin(request)
        name, declared = request.query_params.get("name", "upload"), request.headers.get("content-length", "")
        if declared.isdigit():  # refused before any of the body is read
            workspace.check_size(int(declared), name)
        item = await workspace.receive(request.stream(), request.query_params.get("kind", ""), name)
        return JSONResponse(item.public())

    async def preview(request: Request) -> Response:
        _same_origin(request)
        body = await _json(request)
        look = Look.parse(body.get("look"))
        data, stats = await run_in_threadpool(studio.preview, body.get("photo"), look, body.get("size", 512))
        return Response(data, media_type="image/jpeg", headers={
            "Cache-Control": "no-store", "X-Elapsed-Ms": str(stats["ms"]),
            "X-Size": f"{stats['width']}x{stats['height']}", "X-Cache": json.dumps(_code_cache())})

    async def frame(request: Request) -> Response:
        _same_origin(request)
        try:
            look = Look.parse(json.loads(request.query_params.get("look", "")))
        except ValueError:
            raise RequestError("the look must be JSON") from None
        data = await request.body()
        if len(data) > 8 * 2**20:
            raise RequestError("a camera frame is at most 8 MB", 413)
        out = await run_in_threadpool(studio.frame, data, look, request.query_params.get("session", ""))
        return Response(out, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def render(request: Request) -> Response:
        _same_origin(request)
        body = await _json(request)
        look, photos = Look.parse(body.get("look")), body.get("photos")
        if not isinstance(photos, list) or not photos:
            raise RequestError("add a photo first")
        for p in photos:  # unknown ids are refused now, not inside the job
            workspace.get(p, "photo")
        studio.style_code(look)  # a bad style fails the request, before anything is queued
        fmt = studio.output_format(body.get("format"))
        job = jobs.submit("photos", len(photos), lambda j: studio.render_photos(j, photos, look, fmt))
        return JSONResponse(job.public())

    async def video(request: Request) -> Response:
        _same_origin(request)
        body = await _json(request)
        look, to = Look.parse(body.get("look")), body.get("to") or None
        clip = workspace.get(body.get("video"), "video")
        if to is not None:
            workspace.get(to, "style")
        job = jobs.submit("video", clip.frames, lambda j: studio.render_video(j, clip.id, look, to))
        return JSONResponse(job.public())

    async def job_state(request: Request) -> Response:
        job = jobs.get(request.path_params["job"])
        if job is None:
            raise RequestError("no such job (the server was restarted?)", 404)
        return JSONResponse(job.public())

    async def download(request: Request) -> Response:
        job = jobs.get(request.path_params["job"])
        if job is None or job.result is None:
            raise RequestError("nothing to download for this job yet", 404)
        return FileResponse(job.result, filename=job.result.name)

    async def refused(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status", 400)
        return JSONResponse({"error": str(exc)}, status_code=status)

    async def failed(request: Request, exc: Exception) -> Response:  # the server goes on after any request
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    routes = [
        Route("/", page),
        Route("/api/state", state),
        Route("/api/upload", upload, methods=["POST"]),
        Route("/api/preview", preview, methods=["POST"]),
        Route("/api/frame", frame, methods=["POST"]),
        Route("/api/render", render, methods=["POST"]),
        Route("/api/video", video, methods=["POST"]),
        Route("/api/jobs/{job:str}", job_state),
        Route("/api/jobs/{job:str}/download", download),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_NAMES)] if loopback else []
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={MetastyleError: refused, Exception: failed})


def _same_origin(request: Request) -> None:
    """Another site's page in the user's browser may not post to this server (uploads, renders)."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise RequestError(f"requests from {origin} are not accepted", 403)


async def _json(request: Request) -> dict:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise RequestError("the request body must be JSON") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


def _runtime(stylizer) -> str:
    from .. import runtime

    device = stylizer.device
    where = runtime.name(str(device)) + ("" if device.type == "cpu" else f" ({device})")
    return where + ("" if runtime.torch_available() else ", no PyTorch installed")


def _code_cache() -> dict:
    """The style-code cache on disk: how many styles are encoded, and their size."""
    _, kinds, _ = cache_entries()
    files = kinds["codes"][1]
    return {"codes": len(files), "bytes": sum(f.stat().st_size for f in files if f.exists())}
