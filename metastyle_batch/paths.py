"""Where metastyle-batch keeps files on the user's machine."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """User cache root: ``$METASTYLE_CACHE``, else ``$XDG_CACHE_HOME/metastyle-batch``, else ``~/.cache/metastyle-batch``."""
    if env := os.environ.get("METASTYLE_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "metastyle-batch"


def atomic_write_bytes(dest: Path, data: bytes) -> None:
    """Write via a temp file in the same folder + rename, so readers never see a partial file."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the rename must never expose an empty file after a power cut
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs should get the usual permissions
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
