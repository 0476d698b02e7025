"""Watch-folder daemon: stylize every file that lands in a folder, exactly once, and survive crashes.

``metastyle-batch watch`` (:mod:`metastyle_batch.commands.watch`) is a thin shell over this module.

How a file travels
==================

1. **Seen.** A real :mod:`watchdog` observer reports created / modified / moved-in / close-write events;
   at start (and every ``rescan`` seconds, in case the OS dropped events) the folders are also walked,
   so files that arrived while the daemon was down (the *backlog*) are found too.
2. **Settled.** A file is read only once it is complete: its ``(size, mtime, inode)`` must stay unchanged
   for ``settle`` seconds, or for ``close_settle`` seconds after a close-write event (``cp``, ``scp`` and
   most writers close the file once, at the end). A file whose mtime is already older than ``settle``
   (the backlog) is ready after one confirming look. The stat is repeated around the read, and a file
   that changed while it was being read goes back to settling. If a writer stalls for longer than
   ``settle`` the half file fails to decode and is recorded as failed, but as soon as the writer
   continues, the changed file is seen as a new version and processed again.
3. **Processed** by one worker (the main thread) through the shared :class:`~metastyle_batch.engine.Stylizer`
   (the meta network, style codes and generated networks stay cached in memory), then written to the
   deterministic output ``OUT/<relative folder>/<stem>.<ext>`` with :func:`~metastyle_batch.images.write_image`
   (temp file + atomic rename), then fsync'ed. Videos (``.mp4``, ``.mov``, ``.mkv``, ``.avi``, ``.webm`` …) go
   through :func:`metastyle_batch.video.stylize_video` (also temp file + rename; ``.mp4``/``.m4v``/``.mov``/
   ``.mkv`` keep their container, others become ``.mp4``); it is imported lazily, and if it is missing or
   unusable, videos are recorded as ``unsupported``.

Which files are ignored: hidden files and folders (``.name``), temporary names (``~x``, ``#x#``, ``x~``,
``*.part``, ``*.tmp``, ``*.crdownload``, ``*.swp`` …), the style image itself, ``OUT`` (so ``OUT`` may lie
inside ``IN`` without looping: the daemon's own outputs are never inputs) and the ``failed`` folder. Other
files with an extension that is neither an image nor a video are recorded as ``unsupported``.

Exactly once, restart-safe
==========================

The journal is an sqlite3 database (WAL, ``synchronous=FULL``), by default ``OUT/.metastyle-watch.sqlite3``.
One row per (output folder, input path): the input's size, mtime, inode and sha256, the status
(``processing``, ``done``, ``retry``, ``failed``, ``unsupported``), the error, the attempt count, the output
path and the identity (device, inode, size, mtime) of the output file. An exclusive ``flock`` on
``<journal>.lock`` makes sure only one daemon works on a journal.

For each file the worker does, in this order::

    A  journal: status = processing, prev_ident = identity of whatever is at OUTPUT now   (commit)
    B  stylize, write OUTPUT.tmp, fsync, rename OUTPUT.tmp -> OUTPUT (atomic), fsync the folder
    C  journal: status = done, out_ident = identity of OUTPUT                             (commit)

A crash (``kill -9``, power loss) can happen anywhere; on restart every ``processing`` row is settled
*before* any new work:

* crash before A: no row (or the old version's row); the file is simply processed now.
* crash between A and B's rename: OUTPUT is absent or still the file recorded in ``prev_ident`` (an
  earlier version's output). The new output was never published, so the file is processed again;
  the leftover hidden ``.OUTPUT.xxxxxxxx.part`` temp file is deleted at start (we hold the lock, so
  no one else can be writing it).
* crash between B and C: OUTPUT exists and is a *different* file than ``prev_ident`` (the rename made a
  new inode) and it decodes: the work is complete, so the row is marked done without redoing it.

Hence every input version gets exactly one output, published once, never visible half-written, and is
never stylized again after it was published. A file that kills the daemon repeatedly (a decoder crash, the
OOM killer) stops being retried after ``retries + 1`` attempts and is marked failed.

Versions: a file whose ``(size, mtime, inode)`` still match a done/failed row is skipped without being
read. When they differ, its sha256 decides: the same content as the done output (the file was re-copied
or touched) is recognised and not processed again; new content is processed again and replaces its
output (same name, atomic rename).

Errors: a file that cannot be decoded is recorded as ``failed`` with its one-line error (and moved to
``failed_dir`` when one is set); it never stops the daemon. Other errors (disk full, permission denied on
OUT, out of memory …) are transient: retried with exponential backoff (``retry_delay``, doubled each time,
at most 5 minutes), ``retries`` times, then recorded as failed.

Style changes: before each file the style image's size/mtime are checked. If it changed, it is re-read
once it is stable and encoded again (the engine's caches are keyed by the file's sha256, so a changed
file gives a new code); files processed from then on use the new style. Outputs already written are not
redone. A style image that became unreadable keeps the previous style (with a warning).
"""

from __future__ import annotations

import hashlib
import heapq
import importlib
import logging
import os
import re
import shutil
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from .images import ImageError, format_for_path, read_image, write_image

__all__ = [
    "JOURNAL_NAME", "FolderSpec", "WatchConfig", "WatchError", "Journal", "WatchDaemon", "RunSummary",
    "load_config", "folder_status", "output_path", "is_candidate", "install_signal_handlers",
]

log = logging.getLogger("metastyle_batch.watch")

JOURNAL_NAME = ".metastyle-watch.sqlite3"
FORMAT_EXT = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tiff", "gif": ".gif", "bmp": ".bmp"}
_FORMAT_ALIASES = {"jpg": "jpeg", "tif": "tiff"}
VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
_VIDEO_OUTPUT_EXTS = {".mp4", ".m4v", ".mov", ".mkv"}  # video.OUTPUT_FORMATS; other containers become .mp4
_TEMP_SUFFIXES = (
    "~", ".tmp", ".temp", ".part", ".partial", ".crdownload", ".download", ".opdownload", ".filepart",
    ".swp", ".swx", ".lock", ".!qb", ".!ut", ".aria2",
)
_JUNK_NAMES = {"thumbs.db", "desktop.ini", "icon\r"}
# atomic_write_bytes' temp files: ".<output name>.<8 mkstemp characters>.part"
_OUTPUT_TEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.part$")
_MAX_BACKOFF = 300.0
STATUSES = ("processing", "done", "retry", "failed", "unsupported")


class WatchError(Exception):
    """A configuration or start-up problem (bad folder, unreadable style, journal locked); one line."""


# ------------------------------------------------------------------------------------------ configuration


@dataclass
class FolderSpec:
    """One watched folder: where files land, where results go, which style and options."""

    in_dir: Path
    out_dir: Path
    style: Optional[Path]  # required to run; --status does without
    name: str = ""
    strength: float = 1.0
    preserve_color: bool = False
    max_side: Optional[int] = None
    format: Optional[str] = None  # png, jpeg, webp, tiff, gif, bmp; None keeps each input's own format
    quality: int = 95
    video_quality: Optional[int] = None  # 1-100 for H.264 (video.DEFAULT_QUALITY when None)
    recursive: bool = True
    failed_dir: Optional[Path] = None  # move inputs that fail here (mirroring their relative path)
    journal: Optional[Path] = None  # default OUT/.metastyle-watch.sqlite3

    def resolved(self, require_style: bool = True) -> "FolderSpec":
        """Absolute, symlink-free paths, validated options and defaults filled in; raises WatchError."""
        def absolute(p: Optional[Path]) -> Optional[Path]:
            return None if p is None else Path(os.path.realpath(Path(p).expanduser()))

        spec = replace(self, in_dir=absolute(self.in_dir), out_dir=absolute(self.out_dir),
                       style=absolute(self.style), failed_dir=absolute(self.failed_dir), journal=absolute(self.journal))
        where = f"folder {self.name!r}: " if self.name else ""
        if not spec.name:
            spec.name = spec.in_dir.name or str(spec.in_dir)
        if not spec.in_dir.is_dir():
            raise WatchError(f"{where}input folder {self.in_dir} does not exist or is not a folder")
        if spec.out_dir == spec.in_dir:
            raise WatchError(f"{where}OUT must differ from IN ({self.in_dir}); outputs would replace the inputs")
        if _is_under(spec.in_dir, spec.out_dir):
            raise WatchError(f"{where}IN ({self.in_dir}) must not be inside OUT ({self.out_dir})")
        if spec.out_dir.exists() and not spec.out_dir.is_dir():
            raise WatchError(f"{where}OUT {self.out_dir} exists and is not a folder")
        if require_style and (spec.style is None or not spec.style.is_file()):
            raise WatchError(f"{where}style image not found: {self.style}")
        if spec.failed_dir is not None and (spec.failed_dir == spec.in_dir or _is_under(spec.failed_dir, spec.out_dir)
                                            or spec.failed_dir == spec.out_dir):
            raise WatchError(f"{where}the failed folder must not be IN or inside OUT")
        if spec.format is not None:
            fmt = _FORMAT_ALIASES.get(spec.format.lower().lstrip("."), spec.format.lower().lstrip("."))
            if fmt not in FORMAT_EXT:
                raise WatchError(f"{where}unknown format {spec.format!r}; use png, jpg, webp or tiff (also gif, bmp)")
            spec.format = fmt
        if not 0.0 <= float(spec.strength) <= 1.0:
            raise WatchError(f"{where}strength must be between 0 and 1, got {spec.strength}")
        if spec.max_side is not None and int(spec.max_side) < 1:
            raise WatchError(f"{where}max_side must be at least 1, got {spec.max_side}")
        if not 1 <= int(spec.quality) <= 100:
            raise WatchError(f"{where}quality must be from 1 to 100, got {spec.quality}")
        if spec.video_quality is not None and not 1 <= int(spec.video_quality) <= 100:
            raise WatchError(f"{where}video_quality must be from 1 to 100, got {spec.video_quality}")
        if spec.journal is None:
            spec.journal = spec.out_dir / JOURNAL_NAME
        return spec

    @property
    def key(self) -> str:
        """Rows of one folder in a (possibly shared) journal are told apart by the output folder."""
        return str(self.out_dir)


@dataclass
class WatchConfig:
    """What a ``watch.toml`` holds: global options and the folders."""

    folders: list[FolderSpec]
    device: Optional[str] = None
    model: Optional[Path] = None
    settle: Optional[float] = None
    retries: Optional[int] = None
    retry_delay: Optional[float] = None
    rescan: Optional[float] = None


_GLOBAL_KEYS = {"device", "model", "settle", "retries", "retry_delay", "rescan", "journal", "folder", "folders"}
_FOLDER_KEYS = {"name", "in", "out", "style", "strength", "preserve_color", "max_side", "format", "quality",
                "video_quality", "recursive", "failed", "failed_dir", "journal"}


def load_config(path: str | os.PathLike) -> WatchConfig:
    """Read a TOML config (``[[folder]]`` tables; see ``examples/watch.toml``); raises WatchError.

    Relative paths are relative to the config file's folder; ``~`` is expanded.
    """
    import tomllib

    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WatchError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WatchError(f"{path}: cannot read config ({getattr(exc, 'strerror', None) or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise WatchError(f"{path}: invalid TOML ({' '.join(str(exc).split())})") from None
    base = path.resolve().parent

    def norm(d: dict) -> dict:
        return {str(k).replace("-", "_"): v for k, v in d.items()}

    def to_path(value: Any, what: str) -> Path:
        if not isinstance(value, str) or not value:
            raise WatchError(f"{path}: {what} must be a non-empty string (a path)")
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    top = norm(data)
    unknown = set(top) - _GLOBAL_KEYS
    if unknown:
        raise WatchError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(_GLOBAL_KEYS - {'folders'}))}")
    tables = top.get("folder", top.get("folders"))
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise WatchError(f"{path}: no [[folder]] tables; each needs in, out and style")
    shared_journal = to_path(top["journal"], "journal") if "journal" in top else None

    folders = []
    for i, raw in enumerate(tables, 1):
        t = norm(raw)
        label = f"[[folder]] #{i}" + (f" ({t['name']})" if isinstance(t.get("name"), str) else "")
        unknown = set(t) - _FOLDER_KEYS
        if unknown:
            raise WatchError(f"{path}: {label}: unknown key(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(_FOLDER_KEYS - {'failed_dir'}))}")
        missing = [k for k in ("in", "out", "style") if k not in t]
        if missing:
            raise WatchError(f"{path}: {label}: missing {', '.join(missing)}")
        try:
            failed = t.get("failed", t.get("failed_dir"))
            spec = FolderSpec(
                in_dir=to_path(t["in"], f"{label} in"), out_dir=to_path(t["out"], f"{label} out"),
                style=to_path(t["style"], f"{label} style"), name=str(t.get("name", "")),
                strength=_typed(t, "strength", float, 1.0), preserve_color=_typed(t, "preserve_color", bool, False),
                max_side=_typed(t, "max_side", int, None), format=_typed(t, "format", str, None),
                quality=_typed(t, "quality", int, 95), video_quality=_typed(t, "video_quality", int, None),
                recursive=_typed(t, "recursive", bool, True),
                failed_dir=to_path(failed, f"{label} failed") if failed is not None else None,
                journal=to_path(t["journal"], f"{label} journal") if "journal" in t else shared_journal,
            )
        except (TypeError, ValueError) as exc:
            raise WatchError(f"{path}: {label}: {exc}") from None
        folders.append(spec)
    try:
        return WatchConfig(
            folders=folders, device=_typed(top, "device", str, None),
            model=to_path(top["model"], "model") if "model" in top else None,
            settle=_typed(top, "settle", float, None), retries=_typed(top, "retries", int, None),
            retry_delay=_typed(top, "retry_delay", float, None), rescan=_typed(top, "rescan", float, None),
        )
    except (TypeError, ValueError) as exc:
        raise WatchError(f"{path}: {exc}") from None


def _typed(table: dict, key: str, kind: type, default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key} must be {'a number' if kind in (int, float) else 'true/false' if kind is bool else 'a string'}, "
                        f"got {value!r}")
    return value


def check_folders(specs: Iterable[FolderSpec], require_style: bool = True) -> list[FolderSpec]:
    """Resolve and validate every folder; two folders must not write to the same OUT."""
    resolved = [s.resolved(require_style) for s in specs]
    seen: dict[Path, str] = {}
    for s in resolved:
        if s.out_dir in seen:
            raise WatchError(f"folders {seen[s.out_dir]!r} and {s.name!r} both write to {s.out_dir}; give each its own OUT")
        seen[s.out_dir] = s.name
    return resolved


# ------------------------------------------------------------------------------------------ paths


def _is_under(path: Path, folder: Path) -> bool:
    return path != folder and folder in path.parents


def is_candidate(spec: FolderSpec, path: str | os.PathLike) -> bool:
    """Whether a path inside ``spec.in_dir`` is an input (not hidden, temporary, an output or the style)."""
    p = Path(path)
    if p == spec.style or p == spec.out_dir or _is_under(p, spec.out_dir):
        return False
    if spec.failed_dir is not None and (p == spec.failed_dir or _is_under(p, spec.failed_dir)):
        return False
    try:
        rel = p.relative_to(spec.in_dir)
    except ValueError:
        return False
    if not rel.parts or (not spec.recursive and len(rel.parts) > 1):
        return False
    if any(part.startswith((".", "~")) for part in rel.parts):
        return False
    name = rel.name
    lower = name.lower()
    if lower.endswith(_TEMP_SUFFIXES) or lower in _JUNK_NAMES or (name.startswith("#") and name.endswith("#")):
        return False
    return True


def output_path(spec: FolderSpec, path: str | os.PathLike) -> Path:
    """``OUT/<relative folder>/<stem>.<ext>``: the input's own extension, or the forced format's."""
    p = Path(path)
    rel = p.relative_to(spec.in_dir)
    if _is_video(p):
        ext = p.suffix if p.suffix.lower() in _VIDEO_OUTPUT_EXTS else ".mp4"
    elif spec.format is None:
        ext = p.suffix if format_for_path(p) else ".png"
    else:
        ext = p.suffix if format_for_path(p) == spec.format else FORMAT_EXT[spec.format]
    return spec.out_dir / rel.parent / (p.stem + ext)


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _kind(path: Path) -> str:
    if format_for_path(path) is not None:
        return "image"
    if _is_video(path):
        return "video"
    return "other"


Sig = tuple  # (size, mtime_ns, inode)


def _sig(st: os.stat_result) -> Sig:
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


def _fsync_path(path: Path) -> None:
    """Make an (atomically renamed) output durable before the journal says done: file data, then folder."""
    for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))):
        try:
            fd = os.open(target, flags)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass  # some file systems cannot fsync folders
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------------------ journal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    folder     TEXT NOT NULL,      -- the OUT folder (one journal may serve several watched folders)
    path       TEXT NOT NULL,      -- absolute input path
    in_dir     TEXT NOT NULL,
    size       INTEGER,
    mtime_ns   INTEGER,
    inode      INTEGER,
    sha256     TEXT,
    status     TEXT NOT NULL,      -- processing | done | retry | failed | unsupported
    error      TEXT,
    attempts   INTEGER NOT NULL DEFAULT 0,
    output     TEXT,
    out_ident  TEXT,               -- dev:inode:size:mtime_ns of the output we published
    prev_ident TEXT,               -- what was at `output` when processing started
    style_sha  TEXT,
    moved_to   TEXT,
    started    REAL,
    updated    REAL NOT NULL,
    PRIMARY KEY (folder, path)
);
CREATE INDEX IF NOT EXISTS files_status ON files(folder, status);
CREATE INDEX IF NOT EXISTS files_output ON files(output);
"""


class Journal:
    """The sqlite3 journal (WAL, synchronous=FULL); safe to call from several threads."""

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise FileNotFoundError(str(self.path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise WatchError(f"{self.path}: cannot open the journal ({exc})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _exec(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def get(self, folder: str, path: str) -> Optional[sqlite3.Row]:
        return self._exec("SELECT * FROM files WHERE folder=? AND path=?", (folder, path)).fetchone()

    def rows(self, folder: Optional[str] = None, status: Optional[str] = None) -> list[sqlite3.Row]:
        sql, args = "SELECT * FROM files WHERE 1=1", []
        if folder is not None:
            sql += " AND folder=?"
            args.append(folder)
        if status is not None:
            sql += " AND status=?"
            args.append(status)
        return self._exec(sql + " ORDER BY path", tuple(args)).fetchall()

    def counts(self, folder: Optional[str] = None) -> dict[str, int]:
        sql = "SELECT status, COUNT(*) FROM files" + (" WHERE folder=?" if folder is not None else "") + " GROUP BY status"
        found = dict(self._exec(sql, (folder,) if folder is not None else ()).fetchall())
        return {s: int(found.get(s, 0)) for s in STATUSES}

    def output_owner(self, folder: str, output: str, path: str) -> Optional[str]:
        """Another input (still present) whose output has this name, if any."""
        for row in self._exec("SELECT path FROM files WHERE output=? AND path!=? AND folder=? AND status IN "
                              "('done', 'processing', 'retry')", (output, path, folder)).fetchall():
            if os.path.lexists(row["path"]):
                return row["path"]
        return None

    def begin(self, folder: str, path: str, in_dir: str, sig: Sig, sha: str, output: str,
              prev_ident: Optional[str], style_sha: str) -> int:
        """Step A: status = processing (attempts counts tries of this version); returns the attempt number."""
        now = time.time()
        with self._lock:
            row = self.get(folder, path)
            same = row is not None and _row_sig(row) == sig and row["status"] in ("processing", "retry")
            attempts = (row["attempts"] if same else 0) + 1
            self._db.execute(
                "INSERT INTO files (folder, path, in_dir, size, mtime_ns, inode, sha256, status, error, attempts, "
                "output, out_ident, prev_ident, style_sha, moved_to, started, updated) "
                "VALUES (?,?,?,?,?,?,?,'processing',NULL,?,?,NULL,?,?,NULL,?,?) "
                "ON CONFLICT(folder, path) DO UPDATE SET in_dir=excluded.in_dir, size=excluded.size, "
                "mtime_ns=excluded.mtime_ns, inode=excluded.inode, sha256=excluded.sha256, status='processing', "
                "error=NULL, attempts=excluded.attempts, output=excluded.output, out_ident=NULL, "
                "prev_ident=excluded.prev_ident, style_sha=excluded.style_sha, moved_to=NULL, "
                "started=excluded.started, updated=excluded.updated",
                (folder, path, in_dir, *sig, sha, attempts, output, prev_ident, style_sha, now, now))
            return attempts

    def finish(self, folder: str, path: str, out_ident: Optional[str]) -> None:
        """Step C: status = done (one UPDATE, one transaction)."""
        self._exec("UPDATE files SET status='done', error=NULL, out_ident=?, updated=? WHERE folder=? AND path=?",
                   (out_ident, time.time(), folder, path))

    def set_status(self, folder: str, path: str, status: str, error: Optional[str] = None,
                   moved_to: Optional[str] = None) -> None:
        self._exec("UPDATE files SET status=?, error=?, moved_to=COALESCE(?, moved_to), updated=? "
                   "WHERE folder=? AND path=?", (status, error, moved_to, time.time(), folder, path))

    def record(self, folder: str, path: str, in_dir: str, sig: Sig, sha: Optional[str], status: str,
               error: Optional[str] = None, moved_to: Optional[str] = None) -> None:
        """A row for a file that was judged without stylizing it (unsupported, undecodable before step A)."""
        now = time.time()
        self._exec(
            "INSERT INTO files (folder, path, in_dir, size, mtime_ns, inode, sha256, status, error, attempts, "
            "moved_to, updated) VALUES (?,?,?,?,?,?,?,?,?,0,?,?) ON CONFLICT(folder, path) DO UPDATE SET "
            "in_dir=excluded.in_dir, size=excluded.size, mtime_ns=excluded.mtime_ns, inode=excluded.inode, "
            "sha256=excluded.sha256, status=excluded.status, error=excluded.error, moved_to=excluded.moved_to, "
            "updated=excluded.updated", (folder, path, in_dir, *sig, sha, status, error, moved_to, now))

    def retry_before_start(self, folder: str, path: str, in_dir: str, sig: Sig, error: str) -> int:
        """A transient failure before step A (the input could not be read): status retry; returns the attempt."""
        with self._lock:
            row = self.get(folder, path)
            same = row is not None and _row_sig(row) == sig and row["status"] in ("processing", "retry")
            attempts = (row["attempts"] if same else 0) + 1
            self.record(folder, path, in_dir, sig, row["sha256"] if same else None, "retry", error)
            self._db.execute("UPDATE files SET attempts=? WHERE folder=? AND path=?", (attempts, folder, path))
            return attempts

    def same_content(self, folder: str, path: str, sig: Sig) -> None:
        """A done file was re-copied or touched with identical bytes: remember the new size/mtime/inode."""
        self._exec("UPDATE files SET size=?, mtime_ns=?, inode=?, updated=? WHERE folder=? AND path=?",
                   (*sig, time.time(), folder, path))


class _JournalLock:
    """Exclusive ``flock`` on ``<journal>.lock`` (released by the OS even after ``kill -9``)."""

    def __init__(self, journal: Path, wait: float = 2.0):
        self.path = journal.with_name(journal.name + ".lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking
            return
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pid = _read_pid(self.path)
                    os.close(self._fd)
                    raise WatchError(f"another watch daemon{f' (pid {pid})' if pid else ''} is using the journal "
                                     f"{journal}; stop it first") from None
                time.sleep(0.1)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _read_pid(lock_path: Path) -> Optional[int]:
    try:
        return int(lock_path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def daemon_running(journal: Path) -> Optional[int]:
    """The pid of the daemon holding the journal's lock (0 if the pid is unknown), or None."""
    lock = journal.with_name(journal.name + ".lock")
    if not lock.is_file():
        return None
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(lock) or 0
    finally:
        os.close(fd)  # also releases the shared lock at once
    return None


# ------------------------------------------------------------------------------------------ settling


@dataclass
class _Obs:
    spec_index: int
    sig: Sig
    last_change: float  # wall-clock time the file was last seen changing (its mtime for old files)
    checks: int = 0  # confirming looks since the last change
    closed: bool = False  # a close-write event arrived after the last change


class _Settler:
    """Files seen but not yet complete; thread-safe (the observer thread feeds it, the worker polls it)."""

    def __init__(self, settle: float, close_settle: float):
        self.settle, self.close_settle = settle, min(close_settle, settle)
        self._pending: dict[tuple[int, str], _Obs] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def touch(self, spec_index: int, path: str, closed: bool = False) -> None:
        try:
            st = os.stat(path)
        except OSError:
            with self._lock:
                self._pending.pop((spec_index, path), None)
            return
        if not _is_regular(st):
            return
        now, sig = time.time(), _sig(st)
        with self._lock:
            obs = self._pending.get((spec_index, path))
            if obs is not None and obs.sig == sig:
                obs.closed = obs.closed or closed
            else:  # new or changed; an old mtime means nobody has written it for a while
                changed_at = now if obs is not None else min(now, st.st_mtime_ns / 1e9)
                self._pending[(spec_index, path)] = _Obs(spec_index, sig, changed_at, closed=closed)

    def poll(self) -> list[tuple[int, str, Sig]]:
        """Look at every pending file again; return (and forget) those that are complete, in path order."""
        with self._lock:
            items = list(self._pending.items())
        ready = []
        now = time.time()
        for key, obs in items:
            try:
                st = os.stat(key[1])
            except OSError:
                st = None
            with self._lock:
                if self._pending.get(key) is not obs:
                    continue  # replaced by the observer meanwhile
                if st is None or not _is_regular(st):
                    del self._pending[key]
                    continue
                if _sig(st) != obs.sig:
                    obs.sig, obs.last_change, obs.checks, obs.closed = _sig(st), now, 0, False
                    continue
                obs.checks += 1
                need = self.close_settle if obs.closed else self.settle
                if now - obs.last_change >= need:
                    del self._pending[key]
                    ready.append((key[0], key[1], obs.sig))
        return sorted(ready, key=lambda r: r[1])


def _candidates(spec: FolderSpec, top: str | os.PathLike) -> Iterator[tuple[str, os.stat_result]]:
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
            if _is_regular(st):
                yield path, st


def _settled(row: sqlite3.Row | None, st: os.stat_result) -> bool:
    """The journal already has the final word on this very file version (same size, mtime, inode)."""
    return row is not None and _row_sig(row) == _sig(st) and row["status"] in ("done", "failed", "unsupported")


def _is_regular(st: os.stat_result) -> bool:
    import stat as _stat

    return _stat.S_ISREG(st.st_mode)


class _FileChanged(Exception):
    """The file changed while it was being read: it is not complete yet."""


# ------------------------------------------------------------------------------------------ daemon


@dataclass
class RunSummary:
    done: int = 0
    failed: int = 0
    unsupported: int = 0
    unchanged: int = 0  # re-copied files with the same content as their done version
    recovered: int = 0  # finished before a crash, marked done at start
    seconds: float = 0.0
    busy_seconds: float = 0.0  # time spent reading, stylizing and writing the done files

    @property
    def per_minute(self) -> float:
        return 60.0 * self.done / self.busy_seconds if self.busy_seconds > 0 else 0.0


@dataclass
class _Style:
    sig: Optional[Sig]
    code: Any
    sha: str
    bad_sig: Optional[Sig] = None


class WatchDaemon:
    """Watches folders and stylizes what lands in them; see the module docstring for the guarantees.

    ``stylizer`` may be shared (tests, embedding); otherwise ``Stylizer(model, device)`` is loaded at
    :meth:`open`. :meth:`run` blocks until :meth:`stop` (or, with ``once=True``, until the backlog is done).
    """

    def __init__(self, folders: Iterable[FolderSpec], stylizer=None, *, device: str = "auto",
                 model: Optional[os.PathLike] = None, settle: float = 2.0, close_settle: float = 0.5,
                 retries: int = 3, retry_delay: float = 2.0, rescan: float = 300.0,
                 tick: Optional[float] = None):
        self.specs = check_folders(folders)
        self.stylizer = stylizer
        self.device, self.model = device, model
        self.settle = max(0.0, float(settle))
        self.retries, self.retry_delay, self.rescan = max(0, int(retries)), max(0.0, float(retry_delay)), rescan
        self.tick = tick if tick is not None else min(0.25, max(0.02, self.settle / 4))
        self._settler = _Settler(self.settle, close_settle)
        self._stop = threading.Event()
        self._scan_requests: list[tuple[int, str]] = []
        self._scan_lock = threading.Lock()
        self._retry_heap: list[tuple[float, int, str]] = []
        self._journals: dict[Path, Journal] = {}
        self._locks: list[_JournalLock] = []
        self._styles: dict[int, _Style] = {}
        self._observer = None
        self._video = None
        self.summary = RunSummary()
        self.running = threading.Event()  # set once the observer runs and the backlog is queued

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def journal(self, spec: FolderSpec) -> Journal:
        return self._journals[spec.journal]

    def acquire(self) -> None:
        """Lock and open the journals (fails at once with WatchError if another daemon holds one)."""
        if self._journals:
            return
        try:
            for spec in self.specs:
                if spec.journal not in self._journals:
                    self._locks.append(_JournalLock(spec.journal))
                    self._journals[spec.journal] = Journal(spec.journal)
        except BaseException:
            self.close()
            raise

    def open(self) -> None:
        """:meth:`acquire`, load the model, settle crashed work and encode the styles."""
        if self._styles:
            return
        self.acquire()
        try:
            if self.stylizer is None:
                from .engine import Stylizer

                self.stylizer = Stylizer(model=self.model, device=self.device, log=log.info)
            for i, spec in enumerate(self.specs):
                self._recover(spec)
                self._styles[i] = self._encode_style(spec)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._stop_observer()
        self._styles.clear()
        for j in self._journals.values():
            j.close()
        self._journals.clear()
        for lock in self._locks:
            lock.release()
        self._locks.clear()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current file (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, once: bool = False) -> RunSummary:
        t0 = time.monotonic()
        self.open()
        try:
            if not once:
                self._start_observer()
            for i, spec in enumerate(self.specs):  # after the observer starts, so nothing slips in between
                self._scan(i, spec.in_dir)
            queued = len(self._settler)
            names = ", ".join(f"{s.name} ({s.in_dir} -> {s.out_dir})" for s in self.specs)
            log.info(f"{'Processing the backlog of' if once else 'Watching'} {names}; {queued} file(s) to look at")
            self.running.set()
            next_rescan = time.monotonic() + self.rescan if self.rescan else None
            while not self._stop.is_set():
                worked = False
                for spec_index, path in self._take_scan_requests():
                    self._scan(spec_index, path)
                for spec_index, path, sig in self._settler.poll():
                    if self._stop.is_set():
                        break
                    self._handle(spec_index, path, sig)
                    worked = True
                worked = self._run_due_retries() or worked
                if once and not len(self._settler) and not self._retry_heap and not self._scan_requests:
                    break
                if next_rescan is not None and not once and time.monotonic() >= next_rescan:
                    for i, spec in enumerate(self.specs):
                        self._scan(i, spec.in_dir)
                    next_rescan = time.monotonic() + self.rescan
                if not worked:
                    self._stop.wait(self.tick)
        finally:
            self.summary.seconds = time.monotonic() - t0
            self.close()
        s = self.summary
        rate = f", {s.per_minute:.0f} files/min while busy" if s.done else ""
        log.info(f"Stopped: {s.done} done, {s.failed} failed, {s.unsupported} unsupported, "
                 f"{s.unchanged} unchanged{rate}")
        return s

    # ---- observer ------------------------------------------------------------------------------------------
    def _start_observer(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        daemon = self

        class Handler(FileSystemEventHandler):
            def __init__(self, spec_index: int):
                self.spec_index = spec_index

            def dispatch(self, event) -> None:
                try:
                    daemon._on_event(self.spec_index, event)
                except Exception:  # never let one odd event kill the observer thread
                    log.exception("error while handling a file system event")

        observer = Observer()
        for i, spec in enumerate(self.specs):
            observer.schedule(Handler(i), str(spec.in_dir), recursive=spec.recursive)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _stop_observer(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def _on_event(self, spec_index: int, event) -> None:
        kind = event.event_type
        if kind in ("deleted", "opened", "closed_no_write"):
            return
        path = os.fsdecode(event.dest_path if kind == "moved" else event.src_path)
        spec = self.specs[spec_index]
        if event.is_directory:
            if kind in ("created", "moved") and (Path(path) == spec.in_dir or is_candidate(spec, path)):
                with self._scan_lock:
                    self._scan_requests.append((spec_index, path))
            return
        if is_candidate(spec, path):
            self._settler.touch(spec_index, path, closed=kind == "closed")

    def _take_scan_requests(self) -> list[tuple[int, str]]:
        with self._scan_lock:
            requests, self._scan_requests = self._scan_requests, []
        return requests

    def _scan(self, spec_index: int, top: str | os.PathLike) -> None:
        """Walk a folder; queue every candidate not already settled in the journal."""
        spec = self.specs[spec_index]
        journal = self.journal(spec)
        for path, st in _candidates(spec, top):
            if not _settled(journal.get(spec.key, path), st):
                self._settler.touch(spec_index, path)

    # ---- recovery ------------------------------------------------------------------------------------------
    def _recover(self, spec: FolderSpec) -> None:
        """Settle rows a crash left in ``processing`` and delete stray temp files (see the module docstring)."""
        journal = self.journal(spec)
        for row in journal.rows(spec.key, "processing"):
            current = file_ident(row["output"])
            if current is not None and current != row["prev_ident"] and _output_ok(Path(row["output"])):
                journal.finish(spec.key, row["path"], current)
                self.summary.recovered += 1
                log.info(f"{spec.name}: {_rel(spec, row['path'])} was finished before the daemon stopped; marked done")
            elif row["attempts"] > self.retries:
                error = f"the daemon stopped {row['attempts']} times while processing this file; giving up"
                journal.set_status(spec.key, row["path"], "failed", error)
                log.error(f"{spec.name}: {_rel(spec, row['path'])}: {error}")
            else:
                journal.set_status(spec.key, row["path"], "retry", "interrupted: the daemon stopped mid-file")
                log.info(f"{spec.name}: {_rel(spec, row['path'])} was interrupted by a crash or stop; redoing it")
        if spec.out_dir.is_dir():
            for root, _dirs, files in os.walk(spec.out_dir):
                for name in files:
                    m = _OUTPUT_TEMP.match(name)
                    if m and Path(m["name"]).suffix.lower() in set(FORMAT_EXT.values()) | VIDEO_EXTENSIONS | {
                            ".jpeg", ".jpe", ".jfif", ".apng", ".tif"}:
                        try:
                            os.unlink(os.path.join(root, name))
                            log.info(f"{spec.name}: removed a partial output left by a crash: {name}")
                        except OSError:
                            pass

    # ---- style ---------------------------------------------------------------------------------------------
    def _encode_style(self, spec: FolderSpec, previous: Optional[_Style] = None) -> _Style:
        try:
            st = os.stat(spec.style)
            data = spec.style.read_bytes()
            code = self.stylizer.encode(data)
        except (OSError, ImageError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, ImageError) else (getattr(exc, "strerror", None) or str(exc))
            if previous is None:
                raise WatchError(f"{spec.name}: cannot use style image {spec.style}: {' '.join(str(reason).split())}") from None
            raise
        return _Style(_sig(st), code, hashlib.sha256(data).hexdigest())

    def _style(self, spec_index: int) -> _Style:
        """The folder's current style code; re-encoded when the style file changed (and is stable)."""
        spec, current = self.specs[spec_index], self._styles[spec_index]
        try:
            st = os.stat(spec.style)
        except OSError as exc:
            if current.bad_sig != ("missing",):
                log.warning(f"{spec.name}: style image {spec.style} is gone ({exc.strerror}); keeping the previous style")
                current.bad_sig = ("missing",)
            return current
        sig = _sig(st)
        if sig == current.sig or sig == current.bad_sig:
            return current
        # Changed: wait until it is stable (it may still be being copied), at most a few settle periods.
        deadline, stable_for = time.monotonic() + max(5 * self.settle, 1.0), min(self.settle, 1.0)
        while time.monotonic() < deadline and time.time() - st.st_mtime_ns / 1e9 < stable_for:
            time.sleep(min(0.1, stable_for))
            try:
                st = os.stat(spec.style)
            except OSError:
                break
        try:
            new = self._encode_style(spec, current)
        except Exception as exc:
            current.bad_sig = sig
            log.warning(f"{spec.name}: style image {spec.style} changed but cannot be used "
                        f"({_one_line(exc)}); keeping the previous style")
            return current
        if new.sha != current.sha:
            log.info(f"{spec.name}: style image changed; re-encoded it (sha256 {new.sha[:12]}), new files use it")
        self._styles[spec_index] = new
        return new

    # ---- one file ------------------------------------------------------------------------------------------
    def _handle(self, spec_index: int, path: str, sig: Sig) -> None:
        spec = self.specs[spec_index]
        try:
            self._process(spec_index, path, sig)
        except _FileChanged:
            self._settler.touch(spec_index, path)  # still being written: settle again
        except Exception as exc:  # a bug or an unexpected error must not stop the daemon
            log.exception(f"{spec.name}: {_rel(spec, path)}: unexpected error")
            self._transient(spec, spec_index, path, f"{type(exc).__name__}: {_one_line(exc)}")

    def _process(self, spec_index: int, path: str, sig: Sig) -> None:
        spec = self.specs[spec_index]
        journal, folder, rel = self.journal(spec), spec.key, _rel(spec, path)
        row = journal.get(folder, path)
        if row is not None and _row_sig(row) == sig and row["status"] in ("done", "failed", "unsupported"):
            return  # this version is settled already
        p = Path(path)
        kind = _kind(p)
        video = self._video_module() if kind == "video" else None
        if kind == "other" or (kind == "video" and video is None):
            why = ("video support is not available (metastyle_batch.video is missing or unusable)" if kind == "video"
                   else f"not an image or video file (unknown extension {p.suffix or '(none)'!r})")
            journal.record(folder, path, str(spec.in_dir), sig, None, "unsupported", why)
            self.summary.unsupported += 1
            log.warning(f"{spec.name}: {rel}: skipped, {why}")
            return

        t0 = time.perf_counter()
        try:
            data = _read_stable(p, sig) if kind == "image" else None
        except FileNotFoundError:
            return  # deleted meanwhile
        except OSError as exc:
            self._transient(spec, spec_index, path, f"cannot read file: {exc.strerror or exc}")
            return
        sha = hashlib.sha256(data).hexdigest() if data is not None else _sha256_file(p, sig)
        output = output_path(spec, p)
        if (row is not None and row["status"] == "done" and row["sha256"] == sha and row["output"] == str(output)
                and file_ident(output) == row["out_ident"]):
            journal.same_content(folder, path, sig)
            self.summary.unchanged += 1
            log.info(f"{spec.name}: {rel}: same content as before (re-copied or touched); not processed again")
            return
        owner = journal.output_owner(folder, str(output), path)
        if owner is not None:
            self._permanent(spec, path, sig, sha, f"output {output} already belongs to {owner}; rename one of them")
            return
        style = self._style(spec_index)

        journal.begin(folder, path, str(spec.in_dir), sig, sha, str(output), file_ident(output), style.sha)  # A
        if kind == "image":  # decoded after A, so a decoder that kills the process counts as an attempt too
            try:
                picture = read_image(data, rel)
            except ImageError as exc:
                self._permanent(spec, path, sig, sha, exc.reason)
                return
        try:
            if kind == "image":
                result = self.stylizer.stylize_picture(picture, style.code, spec.strength, spec.preserve_color,
                                                       spec.max_side)
                result.format = spec.format or format_for_path(output) or "png"
                write_image(result, output, format=result.format, overwrite=True, quality=spec.quality)  # B
                size = "x".join(map(str, result.size))
            else:
                stats = self._stylize_video(video, spec, p, output, style)
                size = f"{stats.get('width')}x{stats.get('height')}, {stats.get('frames')} frames"
            _fsync_path(output)
        except ImageError as exc:  # writing failed (disk full, read-only folder …): transient
            self._transient(spec, spec_index, path, f"cannot write {_rel_out(spec, output)}: {exc.reason}")
            return
        except (ValueError, KeyError) as exc:  # content the engine cannot take (keyframes that do not fit …)
            self._permanent(spec, path, sig, sha, _one_line(exc))
            return
        except Exception as exc:
            if video is not None and isinstance(exc, video.VideoInputError):  # not a video, truncated: the file's fault
                self._permanent(spec, path, sig, sha, exc.reason)
            else:  # encoder failures, OSError, RuntimeError (out of memory), MemoryError: transient
                self._transient(spec, spec_index, path, f"{type(exc).__name__}: {_one_line(exc)}")
            return
        journal.finish(folder, path, file_ident(output))  # C
        ms = (time.perf_counter() - t0) * 1000
        self.summary.done += 1
        self.summary.busy_seconds += ms / 1000
        log.info(f"{spec.name}: {rel} -> {_rel_out(spec, output)} ({size}, {ms:.0f} ms)")

    def _permanent(self, spec: FolderSpec, path: str, sig: Sig, sha: Optional[str], reason: str) -> None:
        """The file itself is bad: recorded as failed with ``<relative path>: <reason>`` (never retried)."""
        journal = self.journal(spec)
        error = f"{_rel(spec, path)}: {' '.join(reason.split())}"
        moved = self._move_failed(spec, path)
        row = journal.get(spec.key, path)
        if row is not None and row["status"] == "processing":
            journal.set_status(spec.key, path, "failed", error, moved_to=moved)
        else:
            journal.record(spec.key, path, str(spec.in_dir), sig, sha, "failed", error, moved_to=moved)
        self.summary.failed += 1
        log.error(f"{spec.name}: failed: {error}" + (f" (moved to {moved})" if moved else ""))

    def _transient(self, spec: FolderSpec, spec_index: int, path: str, error: str) -> None:
        """Maybe the machine's fault, not the file's: retry with exponential backoff, then give up."""
        journal = self.journal(spec)
        row = journal.get(spec.key, path)
        if row is not None and row["status"] == "processing":
            attempts = row["attempts"]  # counted by step A
        else:  # failed before step A (e.g. the input could not be read)
            try:
                sig = _sig(os.stat(path))
            except OSError:
                return
            attempts = journal.retry_before_start(spec.key, path, str(spec.in_dir), sig, error)
        if attempts > self.retries:
            moved = self._move_failed(spec, path)
            journal.set_status(spec.key, path, "failed", f"{error} (after {attempts} attempts)", moved_to=moved)
            self.summary.failed += 1
            log.error(f"{spec.name}: {_rel(spec, path)}: failed after {attempts} attempts: {error}")
            return
        delay = min(_MAX_BACKOFF, self.retry_delay * 2 ** (attempts - 1))
        journal.set_status(spec.key, path, "retry", error)
        heapq.heappush(self._retry_heap, (time.monotonic() + delay, spec_index, path))
        log.warning(f"{spec.name}: {_rel(spec, path)}: {error}; retrying in {delay:.1f} s "
                    f"(attempt {attempts} of {self.retries + 1})")

    def _run_due_retries(self) -> bool:
        worked = False
        while self._retry_heap and self._retry_heap[0][0] <= time.monotonic() and not self._stop.is_set():
            _, spec_index, path = heapq.heappop(self._retry_heap)
            try:
                sig = _sig(os.stat(path))
            except OSError:
                continue  # gone
            self._handle(spec_index, path, sig)
            worked = True
        return worked

    def _move_failed(self, spec: FolderSpec, path: str) -> Optional[str]:
        if spec.failed_dir is None:
            return None
        src = Path(path)
        dest = spec.failed_dir / src.relative_to(spec.in_dir)
        n = 1
        while os.path.lexists(dest):
            dest = dest.with_name(f"{src.stem} ({n}){src.suffix}")
            n += 1
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dest))
        except OSError as exc:
            log.warning(f"{spec.name}: cannot move {src} to {dest}: {exc.strerror or exc}")
            return None
        return str(dest)

    # ---- video (optional) ----------------------------------------------------------------------------------
    def _video_module(self):
        """``metastyle_batch.video`` if it exists and is usable, else None (imported lazily, once)."""
        if self._video is None:
            try:
                module = importlib.import_module("metastyle_batch.video")
                usable = callable(getattr(module, "stylize_video", None)) and isinstance(
                    getattr(module, "VideoInputError", None), type)
                self._video = module if usable else False
            except Exception as exc:  # missing, or broken at import
                log.debug(f"video support unavailable: {exc!r}")
                self._video = False
        return self._video or None

    def _stylize_video(self, video, spec: FolderSpec, src: Path, output: Path, style: _Style) -> dict:
        """The video module writes a temp file and renames it at the end, like write_image."""
        quality = spec.video_quality if spec.video_quality is not None else video.DEFAULT_QUALITY
        return video.stylize_video(self.stylizer, src, output, style.code, strength=spec.strength,
                                   preserve_color=spec.preserve_color, max_side=spec.max_side, quality=quality,
                                   overwrite=True, measure_flicker=False)


def _read_stable(path: Path, sig: Sig) -> bytes:
    """The file's bytes, provided it did not change since ``sig`` and while it was read."""
    with open(path, "rb") as f:
        before = _sig(os.fstat(f.fileno()))
        data = f.read()
        after = _sig(os.fstat(f.fileno()))
    if before != sig or after != sig or len(data) != sig[0] or _sig(os.stat(path)) != sig:
        raise _FileChanged(str(path))
    return data


def _sha256_file(path: Path, sig: Sig) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if _sig(os.stat(path)) != sig:
        raise _FileChanged(str(path))
    return h.hexdigest()


def _output_ok(path: Path) -> bool:
    """An output found after a crash is trusted only if it is whole (decodes; a video is non-empty)."""
    if _is_video(path):
        try:
            return path.stat().st_size > 0
        except OSError:
            return False
    try:
        read_image(path)
        return True
    except ImageError:
        return False


def _row_sig(row: sqlite3.Row) -> Sig:
    return (row["size"], row["mtime_ns"], row["inode"])


def _rel(spec: FolderSpec, path: str | os.PathLike) -> str:
    try:
        return str(Path(path).relative_to(spec.in_dir))
    except ValueError:
        return str(path)


def _rel_out(spec: FolderSpec, path: Path) -> str:
    try:
        return str(Path(spec.out_dir.name) / path.relative_to(spec.out_dir))
    except ValueError:
        return str(path)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ------------------------------------------------------------------------------------------ signals, status


def install_signal_handlers(daemon: WatchDaemon) -> Callable[[], None]:
    """SIGTERM/SIGINT: finish the current file, then stop; a second signal stops at once (KeyboardInterrupt,
    which is safe: outputs are atomic and the journal settles the file on the next start). Returns a
    function that restores the previous handlers."""
    def handler(signum, _frame):
        if daemon.stopping:
            raise KeyboardInterrupt
        log.info(f"{signal.Signals(signum).name}: stopping after the current file (send it again to stop now)")
        daemon.stop()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)
    return restore


def folder_status(spec: FolderSpec) -> dict[str, Any]:
    """Counts from the journal plus a look at IN: done, failed, pending (not yet done), unsupported."""
    spec = spec if spec.journal is not None else spec.resolved()
    rows: dict[str, sqlite3.Row] = {}
    journal_exists = spec.journal.is_file()
    if journal_exists:
        journal = Journal(spec.journal, create=False)
        try:
            rows = {r["path"]: r for r in journal.rows(spec.key)}
        finally:
            journal.close()
    pending = [_rel(spec, path) for path, st in _candidates(spec, spec.in_dir) if not _settled(rows.get(path), st)]
    by_status = {s: [r for r in rows.values() if r["status"] == s] for s in STATUSES}
    return {
        "name": spec.name, "in": str(spec.in_dir), "out": str(spec.out_dir), "journal": str(spec.journal),
        "journal_exists": journal_exists, "daemon_pid": daemon_running(spec.journal),
        "done": len(by_status["done"]), "failed": len(by_status["failed"]), "pending": len(pending),
        "unsupported": len(by_status["unsupported"]), "retrying": len(by_status["retry"]),
        "pending_files": pending,
        "failures": [{"input": r["path"], "error": r["error"], "moved_to": r["moved_to"]} for r in by_status["failed"]],
        "unsupported_files": [{"input": r["path"], "error": r["error"]} for r in by_status["unsupported"]],
    }
