"""Where metastyle-batch keeps files on the user's machine."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterator


DEFAULT_MODEL = "metastyle-base8.safetensors"
VGG_CACHE_NAME = "vgg16_features23.safetensors"  # the converted VGG-16 weights in the cache


def default_model_path() -> Path:
    """``$METASTYLE_MODEL``, else the model shipped inside the package (``weights/`` of the source tree)."""
    if env := os.environ.get("METASTYLE_MODEL"):
        return Path(env).expanduser()
    return Path(str(resources.files("metastyle_batch.weights").joinpath(DEFAULT_MODEL)))


def cache_dir() -> Path:
    """User cache root: ``$METASTYLE_CACHE``, else ``$XDG_CACHE_HOME/metastyle-batch``, else ``~/.cache/metastyle-batch``."""
    if env := os.environ.get("METASTYLE_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "metastyle-batch"


_CACHE_KINDS = {"codes": "*.safetensors", "nets": "*.*"}  # style codes; generated networks (.onnx + .json)


def cache_entries() -> tuple[Path, dict[str, tuple[Path, list[Path]]], Path]:
    """(root, {kind: (folder, files)}, the cached VGG-16 file): what `cache ls` and the UI show."""
    root = cache_dir()
    kinds = {kind: (root / kind, sorted((root / kind).glob(pattern)) if (root / kind).is_dir() else [])
             for kind, pattern in _CACHE_KINDS.items()}
    return root, kinds, root / VGG_CACHE_NAME


@contextmanager
def atomic_path(dest: str | os.PathLike, mode: int | None = None, *, exclusive: bool = False,
                suffix: str = ".part") -> Iterator[Path]:
    """A hidden temp path beside ``dest`` to write to; on success it is fsynced and renamed onto ``dest``.

    Readers never see a partial file and a crash leaves no half-written output (only a ``.NAME.xxxxxxxx.part``
    temp file, which is removed on any error raised here). ``mode`` defaults to the usual umask permissions.
    ``exclusive``: the file appears only if nothing is at ``dest`` yet (hard link, else :class:`FileExistsError`),
    so of two writers of one output exactly one wins; without hard links (FAT, some network file systems) it is a
    check, then a rename. ``suffix`` ends the temp name (``".part.mp4"`` for a writer that goes by the extension).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the rename must never expose an empty file after a power cut
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)  # mkstemp makes 0600
        if exclusive:
            _link_new(tmp, dest)
        else:
            os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _link_new(tmp: Path, dest: Path) -> None:
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise
    except OSError:  # no hard links here
        if os.path.lexists(dest):
            raise FileExistsError(17, "File exists", os.fspath(dest)) from None
        os.replace(tmp, dest)
        return
    tmp.unlink()


def atomic_write_bytes(dest: str | os.PathLike, data: bytes, mode: int | None = None, *,
                       exclusive: bool = False) -> None:
    """Write ``data`` to ``dest`` through :func:`atomic_path`."""
    with atomic_path(dest, mode, exclusive=exclusive) as tmp:
        tmp.write_bytes(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def not_regular(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it exists but is not a regular file ("a folder", "a pipe (FIFO)", …), else None.
    Pipes, devices and sockets are refused rather than read: a FIFO blocks until someone writes to it, and a
    process substitution can be read only once."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


_DIGESTS: dict[tuple, str] = {}  # (path, device, inode, size, mtime) → sha256, for this process


def sha256_file(path: str | os.PathLike) -> str:
    """The file's sha256; asked twice in one process (the network cache's key, then the model check), a file that
    has not changed is hashed once."""
    st = os.stat(path)
    key = (os.fspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]
