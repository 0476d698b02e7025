"""Path rules: which files of a watched folder are inputs, what kind they are, and where their outputs go.

Also the identity of a file version (``(size, mtime_ns, inode)``, see :data:`Sig`) that the settler, the
journal and the daemon compare. Nothing here imports torch.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from ..batch import output_suffix
from ..formats import format_for_path

if TYPE_CHECKING:
    from .config import FolderSpec

__all__ = [
    "VIDEO_EXTENSIONS", "Sig", "is_under", "is_candidate", "is_temp_name", "is_partial_output", "file_kind",
    "is_video", "output_path", "file_sig", "file_ident", "is_regular", "candidates", "relative_in", "relative_out",
]

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
VIDEO_FALLBACK_EXT = ".mp4"  # the container of a video whose own one is not in metastyle_batch.video.OUTPUT_FORMATS
TEMP_SUFFIXES = (
    "~", ".tmp", ".temp", ".part", ".partial", ".crdownload", ".download", ".opdownload", ".filepart",
    ".swp", ".swx", ".lock", ".!qb", ".!ut", ".aria2",
)
JUNK_NAMES = {"thumbs.db", "desktop.ini", "icon\r"}
# The temp files of metastyle_batch.paths.atomic_path (images) and of the video writer, which names them
# the same way (mkstemp): ".<output name>.<8 random characters>.part".
_OUTPUT_TEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.part$")

Sig = tuple  # (size, mtime_ns, inode) of one version of a file


def is_under(path: Path, folder: Path) -> bool:
    """``path`` lies strictly inside ``folder``."""
    return path != folder and folder in path.parents


def is_temp_name(name: str) -> bool:
    """A temporary or junk file name (``~x``, ``#x#``, ``x~``, ``*.part``, ``Thumbs.db`` …) that is never an input."""
    lower = name.lower()
    return (lower.endswith(TEMP_SUFFIXES) or lower in JUNK_NAMES or name.startswith("~")
            or (name.startswith("#") and name.endswith("#")))


def is_candidate(spec: FolderSpec, path: str | os.PathLike) -> bool:
    """Whether a path inside ``spec.in_dir`` is an input (not hidden, temporary, an output or the style)."""
    p = Path(path)
    if p == spec.style or p == spec.out_dir or is_under(p, spec.out_dir):
        return False
    if spec.failed_dir is not None and (p == spec.failed_dir or is_under(p, spec.failed_dir)):
        return False
    try:
        rel = p.relative_to(spec.in_dir)
    except ValueError:
        return False
    if not rel.parts or (not spec.recursive and len(rel.parts) > 1):
        return False
    if any(part.startswith((".", "~")) for part in rel.parts):
        return False
    return not is_temp_name(rel.name)


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def file_kind(path: Path) -> str:
    """``"image"``, ``"video"`` or ``"other"``, by the extension."""
    if format_for_path(path) is not None:
        return "image"
    if is_video(path):
        return "video"
    return "other"


def is_partial_output(name: str) -> bool:
    """The name of a temp file that an interrupted (atomic) write of an image or video output leaves behind."""
    m = _OUTPUT_TEMP.match(name)
    return m is not None and file_kind(Path(m["name"])) != "other"


def output_path(spec: FolderSpec, path: str | os.PathLike) -> Path:
    """``OUT/<relative folder>/<stem>.<ext>``: the input's own extension, or the forced format's.

    Videos keep their container when the video writer can write it, else they become ``.mp4``.
    """
    p = Path(path)
    rel = p.relative_to(spec.in_dir)
    if is_video(p):
        # metastyle_batch.video is imported here, not with the package: only the daemon names videos.
        from ..video import OUTPUT_FORMATS

        ext = p.suffix if p.suffix.lower() in OUTPUT_FORMATS else VIDEO_FALLBACK_EXT
    else:
        ext = output_suffix(p, spec.format or format_for_path(p) or "png")
    return spec.out_dir / rel.parent / (p.stem + ext)


def file_sig(st: os.stat_result) -> Sig:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def file_ident(path: str | os.PathLike | None) -> Optional[str]:
    """``dev:inode:size:mtime_ns`` of an existing file (an atomic rename always makes a new inode)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def is_regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


def candidates(spec: FolderSpec, top: str | os.PathLike) -> Iterator[tuple[str, os.stat_result]]:
    """Every regular file below ``top`` the folder's rules accept (sorted walk), with its stat."""
    for root, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if spec.recursive and is_candidate(spec, os.path.join(root, d)))
        for name in sorted(files):
            path = os.path.join(root, name)
            if not is_candidate(spec, path):
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            if is_regular(st):
                yield path, st


def relative_in(spec: FolderSpec, path: str | os.PathLike) -> str:
    """An input's path relative to IN (for messages), or the path itself when it is not inside IN."""
    try:
        return str(Path(path).relative_to(spec.in_dir))
    except ValueError:
        return str(path)


def relative_out(spec: FolderSpec, path: Path) -> str:
    """An output's path as ``<OUT's name>/<relative path>`` (for messages)."""
    try:
        return str(Path(spec.out_dir.name) / path.relative_to(spec.out_dir))
    except ValueError:
        return str(path)
