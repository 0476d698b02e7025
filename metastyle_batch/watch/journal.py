"""The sqlite3 journal (one row per input file version's fate) and the lock that keeps it to one daemon.

See :mod:`metastyle_batch.watch` for the protocol (steps A, B, C) the rows record.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Optional

from .config import WatchError
from .rules import Sig, file_sig

__all__ = ["STATUSES", "FINAL_STATUSES", "Journal", "JournalLock", "daemon_running", "row_sig", "settled"]

STATUSES = ("processing", "done", "retry", "failed", "unsupported")
FINAL_STATUSES = ("done", "failed", "unsupported")  # the journal has the last word on such a file version

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


def row_sig(row: sqlite3.Row) -> Sig:
    """The (size, mtime_ns, inode) of the file version a row speaks of."""
    return (row["size"], row["mtime_ns"], row["inode"])


def settled(row: sqlite3.Row | None, st: os.stat_result) -> bool:
    """The journal already has the final word on this very file version (same size, mtime, inode)."""
    return row is not None and row_sig(row) == file_sig(st) and row["status"] in FINAL_STATUSES


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
            raise WatchError(self.path, f"cannot open the journal ({exc})") from None

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

    @staticmethod
    def _in_progress(row: Optional[sqlite3.Row], sig: Sig) -> bool:
        """The row is this very version, still being tried: its attempts go on counting (else they restart)."""
        return row is not None and row_sig(row) == sig and row["status"] in ("processing", "retry")

    def begin(self, folder: str, path: str, in_dir: str, sig: Sig, sha: str, output: str,
              prev_ident: Optional[str], style_sha: str) -> int:
        """Step A: status = processing (attempts counts tries of this version); returns the attempt number."""
        now = time.time()
        with self._lock:
            row = self.get(folder, path)
            attempts = (row["attempts"] if self._in_progress(row, sig) else 0) + 1
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
            same = self._in_progress(row, sig)
            attempts = (row["attempts"] if same else 0) + 1
            self.record(folder, path, in_dir, sig, row["sha256"] if same else None, "retry", error)
            self._db.execute("UPDATE files SET attempts=? WHERE folder=? AND path=?", (attempts, folder, path))
            return attempts

    def same_content(self, folder: str, path: str, sig: Sig) -> None:
        """A done file was re-copied or touched with identical bytes: remember the new size/mtime/inode."""
        self._exec("UPDATE files SET size=?, mtime_ns=?, inode=?, updated=? WHERE folder=? AND path=?",
                   (*sig, time.time(), folder, path))


def lock_path(journal: Path) -> Path:
    """``<journal>.lock``, the file a daemon holds an exclusive ``flock`` on."""
    return journal.with_name(journal.name + ".lock")


class JournalLock:
    """Exclusive ``flock`` on ``<journal>.lock`` (released by the OS even after ``kill -9``)."""

    def __init__(self, journal: Path, wait: float = 2.0):
        self.path = lock_path(journal)
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
                if _same_file(self._fd, self.path):
                    break
                os.close(self._fd)  # a daemon that stopped removed that file after we opened it: open the new one
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
        """Remove the lock file (still holding the lock, so no daemon can take the old file) and drop the lock.
        After ``kill -9`` the file stays, unlocked, and the next daemon takes it."""
        if self._fd is not None:
            if _same_file(self._fd, self.path):
                self.path.unlink(missing_ok=True)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _read_pid(path: Path) -> Optional[int]:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def daemon_running(journal: Path) -> Optional[int]:
    """The pid of the daemon holding the journal's lock (0 if the pid is unknown), or None."""
    lock = lock_path(journal)
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
