"""Where metastyle-batch keeps files on the user's machine."""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def cache_dir() -> Path:
    """User cache root: ``$METASTYLE_CACHE``, else ``$XDG_CACHE_HOME/metastyle-batch``, else ``~/.cache/metastyle-batch``."""
    if env := os.environ.get("METASTYLE_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "metastyle-batch"


@contextmanager
def atomic_path(dest: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """A hidden temp path beside ``dest`` to write to; on success it is fsynced and renamed onto ``dest``.

    Readers never see a partial file and a crash leaves no half-written output (only a ``.NAME.xxxxxxxx.part``
    temp file, which is removed on any error raised here). ``mode`` defaults to the usual umask permissions.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the rename must never expose an empty file after a power cut
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)  # mkstemp makes 0600
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(dest: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``dest`` through :func:`atomic_path`."""
    with atomic_path(dest, mode) as tmp:
        tmp.write_bytes(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
