"""The UI's working folder: uploads and renders live here and nowhere else.

A request never names a path: uploads get an id made from their content (16 hex digits), jobs a random one, and
every file name inside the folder is made here. Uploads are checked as what they claim to be (an image that
decodes, a video that ffmpeg can read) before they get an id.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from ..errors import MetastyleError
from ..formats import FORMAT_EXT

KINDS = ("photo", "style", "video")
_ID = re.compile(r"[0-9a-f]{16}")


class RequestError(MetastyleError):
    """A request the UI refuses; ``status`` is its HTTP status (400 unless said)."""

    status = 400

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    id: str
    kind: str  # photo, style or video
    name: str  # what the user called it (shown, and the stem of its outputs)
    path: Path
    width: int
    height: int
    frames: int = 1
    seconds: float = 0.0
    audio: bool = False

    def public(self) -> dict:
        """What the page is told (no paths)."""
        return {"id": self.id, "kind": self.kind, "name": self.name, "width": self.width, "height": self.height,
                "frames": self.frames, "seconds": round(self.seconds, 2), "audio": self.audio}


def display_name(name: str) -> str:
    """A file name as the user gave it, reduced to something safe to show and to use in a download's name."""
    name = os.path.basename(name.replace("\\", "/")).strip()
    name = re.sub(r"[^\w.\- ()]+", "_", name)[:120].lstrip(".")
    return name or "upload"


class Workspace:
    """Uploads (``uploads/``) and job outputs (``jobs/<id>/``) under ``root``, with an upload size limit."""

    def __init__(self, root: str | os.PathLike, max_upload: int) -> None:
        self.root = Path(root).expanduser().resolve()
        self.max_upload = max_upload
        (self.root / "uploads").mkdir(parents=True, exist_ok=True)
        (self.root / "jobs").mkdir(exist_ok=True)
        for stale in (self.root / "uploads").glob(".incoming-*"):  # what a killed server was receiving
            stale.unlink(missing_ok=True)
        self._uploads: dict[str, Upload] = {}
        self._lock = threading.Lock()

    async def receive(self, chunks: AsyncIterator[bytes], kind: str, name: str) -> Upload:
        """Stream an upload to disk (refused past the size limit), check it as ``kind``, and register it."""
        if kind not in KINDS:
            raise RequestError(f"unknown upload kind {kind!r}; use one of {', '.join(KINDS)}")
        name = display_name(name)
        digest = hashlib.sha256(kind.encode())
        tmp = self.root / "uploads" / f".incoming-{os.urandom(8).hex()}"
        size = 0
        try:
            with open(tmp, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    self.check_size(size, name)
                    digest.update(chunk)
                    f.write(chunk)
            if size == 0:
                raise RequestError(f"{name}: empty upload (0 bytes)")
            upload_id = digest.hexdigest()[:16]
            with self._lock:
                if upload_id in self._uploads:
                    return self._uploads[upload_id]
            from starlette.concurrency import run_in_threadpool

            upload = await run_in_threadpool(_check, tmp, upload_id, kind, name)
            dest = self.root / "uploads" / f"{upload_id}{upload.path.suffix}"
            os.replace(tmp, dest)
            upload = Upload(**{**upload.__dict__, "path": dest})
            with self._lock:
                self._uploads[upload_id] = upload
            return upload
        finally:
            tmp.unlink(missing_ok=True)

    def check_size(self, size: int, name: str) -> None:
        """Refuse an upload of ``size`` bytes (declared, or received so far) over the limit."""
        if size > self.max_upload:
            raise RequestError(f"{display_name(name)}: larger than the upload limit of {self.max_upload >> 20} MB", 413)

    def get(self, upload_id: object, kind: str | tuple[str, ...]) -> Upload:
        """The upload with this id, of this kind; anything else (a path, an unknown id) is refused."""
        kinds = (kind,) if isinstance(kind, str) else kind
        upload = self._uploads.get(upload_id) if isinstance(upload_id, str) and _ID.fullmatch(upload_id) else None
        if upload is None or upload.kind not in kinds:
            raise RequestError(f"no {' or '.join(kinds)} with id {str(upload_id)[:40]!r}; upload it again", 404)
        return upload

    def job_folder(self, job_id: str) -> Path:
        folder = self.root / "jobs" / job_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def _check(tmp: Path, upload_id: str, kind: str, name: str) -> Upload:
    """Decode (image) or probe (video) the received file; a file that is not what it claims is a RequestError."""
    if kind == "video":
        from ..video import VideoInputError, probe

        try:
            info = probe(tmp, timeout=30)
        except VideoInputError as exc:
            raise RequestError(f"{name}: {exc.reason}") from None
        suffix = Path(name).suffix.lower()
        suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".mp4"
        return Upload(upload_id, kind, name, tmp.with_suffix(suffix), info.width, info.height, info.frames,
                      info.duration, info.has_audio)
    from ..images import ImageError, read_image

    try:
        picture = read_image(tmp, name)
    except ImageError as exc:
        raise RequestError(str(exc)) from None
    width, height = picture.size
    return Upload(upload_id, kind, name, tmp.with_suffix(FORMAT_EXT.get(picture.format, ".png")), width, height,
                  len(picture.frames))
