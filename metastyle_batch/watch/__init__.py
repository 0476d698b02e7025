"""Watch-folder daemon: stylize every file that lands in a folder, exactly once, and survive crashes.

``metastyle-batch watch`` (:mod:`metastyle_batch.commands.watch`) is a thin shell over this package:

* :mod:`~metastyle_batch.watch.config`: :class:`FolderSpec`, :class:`WatchConfig`, :func:`load_config`, :class:`WatchError`
* :mod:`~metastyle_batch.watch.rules`: which files are inputs (:func:`is_candidate`), their kind, :func:`output_path`
* :mod:`~metastyle_batch.watch.journal`: the sqlite :class:`Journal`, its lock, :func:`daemon_running`
* :mod:`~metastyle_batch.watch.settle`: the settler (is a file complete yet?)
* :mod:`~metastyle_batch.watch.daemon`: :class:`WatchDaemon` (observer, worker, recovery, retries), :class:`RunSummary`
* :mod:`~metastyle_batch.watch.status`: :func:`folder_status`; :mod:`~metastyle_batch.watch.signals`: SIGTERM/SIGINT

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
   ``.mkv`` keep their container, others become ``.mp4``); it is imported at the first video, so that
   importing this package (the configuration, the journal, ``--status``) does not import torch.

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

# The daemon writes images through this name, so replacing it here takes effect (tests simulate a full disk).
from ..images import write_image
from .config import (
    JOURNAL_NAME,
    FolderSpec,
    WatchConfig,
    WatchError,
    check_folders,
    load_config,
)
from .daemon import MAX_BACKOFF, RunSummary, WatchDaemon
from .journal import STATUSES, Journal, JournalLock, daemon_running
from .rules import VIDEO_EXTENSIONS, file_ident, is_candidate, output_path
from .settle import Settler
from .signals import install_signal_handlers
from .status import folder_status

__all__ = [
    "JOURNAL_NAME", "FolderSpec", "WatchConfig", "WatchError", "Journal", "WatchDaemon", "RunSummary",
    "load_config", "check_folders", "folder_status", "output_path", "is_candidate", "install_signal_handlers",
    "daemon_running", "file_ident", "JournalLock", "Settler", "STATUSES", "VIDEO_EXTENSIONS", "MAX_BACKOFF",
    "write_image",
]
