"""The one table of image formats we read and write, by extension and by name (plain data: imports nothing heavy)."""

from __future__ import annotations

import os
from pathlib import Path

_EXTENSIONS = {
    ".png": "png", ".apng": "png",
    ".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg", ".jfif": "jpeg",
    ".webp": "webp", ".gif": "gif", ".tif": "tiff", ".tiff": "tiff", ".bmp": "bmp",
}
_ALIASES = {"jpg": "jpeg", "tif": "tiff"}
FORMAT_EXT = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tiff", "gif": ".gif", "bmp": ".bmp"}  # derived names


def format_for_path(path: str | os.PathLike) -> str | None:
    """Output format implied by the file extension (``"jpeg"`` for ``.jpg``), or None if not one we write."""
    return _EXTENSIONS.get(Path(path).suffix.lower())


def format_name(name: str) -> str | None:
    """The canonical output format for a user's spelling (``"JPG"``, ``".tif"``), or None if not one we write."""
    fmt = str(name).lower().lstrip(".")
    fmt = _ALIASES.get(fmt, fmt)
    return fmt if fmt in FORMAT_EXT else None
