"""The watch daemon: the observer and rescans feed the settler, one worker stylizes each complete file.

The guarantees (exactly once, restart-safe, never a half-written output) and the journal protocol (steps
A, B, C) are described in :mod:`metastyle_batch.watch`. Torch is imported when the daemon opens (the
engine) or meets its first video, not with this module.
"""

from __future__ import annotations

import hashlib
import heapq
import importlib
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from ..errors import one_line
from ..images import ImageError, format_for_path, read_image
from ..paths import sha256_file
from .config import FolderSpec, WatchError, check_folders
from .journal import FINAL_STATUSES, Journal, JournalLock, row_sig, settled
from .rules import (
    Sig,
    candidates,
    file_ident,
    file_kind,
    file_sig,
    is_candidate,
    is_partial_output,
    is_video,
    output_path,
    relative_in,
    relative_out,
)
from .settle import Settler

__all__ = ["WatchDaemon", "RunSummary", "MAX_BACKOFF"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 300.0  # seconds; the longest wait between two retries of a transient failure


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


class _FileChanged(Exception):
    """The file changed while it was being read: it is not complete yet."""


class _BadInput(Exception):
    """The file itself cannot be used (does not decode, is not a video): failed at once, never retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WatchDaemon:
    """Watches folders and stylizes what lands in them; see :mod:`metastyle_batch.watch` for the guarantees.

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
        self._settler = Settler(self.settle, close_settle)
        self._stop = threading.Event()
        self._scan_requests: list[tuple[int, str]] = []
        self._scan_lock = threading.Lock()
        self._retry_heap: list[tuple[float, int, str]] = []
        self._journals: dict[Path, Journal] = {}
        self._locks: list[JournalLock] = []
        self._styles: dict[int, _Style] = {}
        self._observer = None
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
                    self._locks.append(JournalLock(spec.journal))
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
                from ..runtime import open_stylizer

                self.stylizer = open_stylizer(self.model, self.device, log=log.info)
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
                self._observer = _start_observer(self.specs, self._on_event)
            self._scan_all()  # after the observer starts, so nothing slips in between
            names = ", ".join(f"{s.name} ({s.in_dir} -> {s.out_dir})" for s in self.specs)
            log.info(f"{'Processing the backlog of' if once else 'Watching'} {names}; "
                     f"{len(self._settler)} file(s) to look at")
            self.running.set()
            self._loop(once)
        finally:
            self.summary.seconds = time.monotonic() - t0
            self.close()
        s = self.summary
        rate = f", {s.per_minute:.0f} files/min while busy" if s.done else ""
        log.info(f"Stopped: {s.done} done, {s.failed} failed, {s.unsupported} unsupported, "
                 f"{s.unchanged} unchanged{rate}")
        return s

    def _loop(self, once: bool) -> None:
        """Until stopped (or, with ``once``, until nothing is left): scan, process what settled, retry."""
        next_rescan = time.monotonic() + self.rescan if self.rescan and not once else None
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
            if next_rescan is not None and time.monotonic() >= next_rescan:
                self._scan_all()
                next_rescan = time.monotonic() + self.rescan
            if not worked:
                self._stop.wait(self.tick)

    # ---- observer and scans --------------------------------------------------------------------------------
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

    def _scan_all(self) -> None:
        for i, spec in enumerate(self.specs):
            self._scan(i, spec.in_dir)

    def _scan(self, spec_index: int, top: str | os.PathLike) -> None:
        """Walk a folder; queue every candidate not already settled in the journal."""
        spec = self.specs[spec_index]
        journal = self.journal(spec)
        for path, st in candidates(spec, top):
            if not settled(journal.get(spec.key, path), st):
                self._settler.touch(spec_index, path)

    # ---- recovery ------------------------------------------------------------------------------------------
    def _recover(self, spec: FolderSpec) -> None:
        """Settle rows a crash left in ``processing`` and delete stray temp files (see :mod:`metastyle_batch.watch`)."""
        journal = self.journal(spec)
        for row in journal.rows(spec.key, "processing"):
            rel = relative_in(spec, row["path"])
            current = file_ident(row["output"])
            if current is not None and current != row["prev_ident"] and _output_ok(Path(row["output"])):
                journal.finish(spec.key, row["path"], current)
                self.summary.recovered += 1
                log.info(f"{spec.name}: {rel} was finished before the daemon stopped; marked done")
            elif row["attempts"] > self.retries:
                error = f"the daemon stopped {row['attempts']} times while processing this file; giving up"
                journal.set_status(spec.key, row["path"], "failed", error)
                log.error(f"{spec.name}: {rel}: {error}")
            else:
                journal.set_status(spec.key, row["path"], "retry", "interrupted: the daemon stopped mid-file")
                log.info(f"{spec.name}: {rel} was interrupted by a crash or stop; redoing it")
        _remove_partial_outputs(spec)

    # ---- style ---------------------------------------------------------------------------------------------
    def _encode_style(self, spec: FolderSpec, previous: Optional[_Style] = None) -> _Style:
        try:
            st = os.stat(spec.style)
            data = spec.style.read_bytes()
            code = self.stylizer.encode(data)
        except (OSError, ImageError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, ImageError) else (getattr(exc, "strerror", None) or str(exc))
            if previous is None:
                raise WatchError(f"{spec.name}: cannot use style image {spec.style}: {one_line(reason)}") from None
            raise
        return _Style(file_sig(st), code, hashlib.sha256(data).hexdigest())

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
        sig = file_sig(st)
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
                        f"({one_line(exc) or type(exc).__name__}); keeping the previous style")
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
            log.exception(f"{spec.name}: {relative_in(spec, path)}: unexpected error")
            self._transient(spec, spec_index, path, _exc_text(exc))

    def _process(self, spec_index: int, path: str, sig: Sig) -> None:
        """Read the settled file, skip it if this content is done already, else steps A, B, C."""
        spec = self.specs[spec_index]
        journal, folder = self.journal(spec), spec.key
        row = journal.get(folder, path)
        if row is not None and row_sig(row) == sig and row["status"] in FINAL_STATUSES:
            return  # this version is settled already
        src = Path(path)
        kind = file_kind(src)
        if kind == "other":
            self._unsupported(spec, path, sig, f"not an image or video file (unknown extension {src.suffix or '(none)'!r})")
            return

        t0 = time.perf_counter()
        try:
            data = _read_stable(src, sig) if kind == "image" else None
            sha = hashlib.sha256(data).hexdigest() if data is not None else _sha256_stable(src, sig)
        except FileNotFoundError:
            return  # deleted meanwhile
        except OSError as exc:
            self._transient(spec, spec_index, path, f"cannot read file: {exc.strerror or exc}")
            return
        output = output_path(spec, src)
        if (row is not None and row["status"] == "done" and row["sha256"] == sha and row["output"] == str(output)
                and file_ident(output) == row["out_ident"]):
            journal.same_content(folder, path, sig)
            self.summary.unchanged += 1
            log.info(f"{spec.name}: {relative_in(spec, path)}: same content as before (re-copied or touched); "
                     f"not processed again")
            return
        owner = journal.output_owner(folder, str(output), path)
        if owner is not None:
            self._permanent(spec, path, sig, sha, f"output {output} already belongs to {owner}; rename one of them")
            return
        style = self._style(spec_index)

        journal.begin(folder, path, str(spec.in_dir), sig, sha, str(output), file_ident(output), style.sha)  # A
        size = self._publish(spec_index, src, sig, sha, data, output, style)  # B
        if size is None:
            return  # the failure is recorded
        journal.finish(folder, path, file_ident(output))  # C
        seconds = time.perf_counter() - t0
        self.summary.done += 1
        self.summary.busy_seconds += seconds
        log.info(f"{spec.name}: {relative_in(spec, path)} -> {relative_out(spec, output)} ({size}, {seconds * 1000:.0f} ms)")

    def _publish(self, spec_index: int, src: Path, sig: Sig, sha: str, data: Optional[bytes], output: Path,
                 style: _Style) -> Optional[str]:
        """Step B: stylize, write OUTPUT atomically, make it durable; returns what was written (``"WxH"`` …),
        or None after recording the failure (the file's own fault: failed now; anything else: retried)."""
        spec, path = self.specs[spec_index], str(src)
        try:
            if data is not None:
                size = self._stylize_image(spec, data, relative_in(spec, path), output, style)
            else:
                size = self._stylize_video(spec, src, output, style)
            _fsync_path(output)
        except _BadInput as exc:
            self._permanent(spec, path, sig, sha, exc.reason)
        except ImageError as exc:  # writing failed (disk full, read-only folder …): transient
            self._transient(spec, spec_index, path, f"cannot write {relative_out(spec, output)}: {exc.reason}")
        except (ValueError, KeyError) as exc:  # content the engine cannot take (keyframes that do not fit …)
            self._permanent(spec, path, sig, sha, one_line(exc))
        except Exception as exc:  # encoder failures, OSError, RuntimeError (out of memory), MemoryError: transient
            self._transient(spec, spec_index, path, _exc_text(exc))
        else:
            return size
        return None

    def _stylize_image(self, spec: FolderSpec, data: bytes, rel: str, output: Path, style: _Style) -> str:
        try:  # decoded after step A, so a decoder that kills the process counts as an attempt too
            picture = read_image(data, rel)
        except ImageError as exc:
            raise _BadInput(exc.reason) from None
        result = self.stylizer.stylize_picture(picture, style.code, spec.strength, spec.preserve_color, spec.max_side)
        result.format = spec.format or format_for_path(output) or "png"
        _write_image(result, output, format=result.format, overwrite=True, quality=spec.quality)
        return "x".join(map(str, result.size))

    def _stylize_video(self, spec: FolderSpec, src: Path, output: Path, style: _Style) -> str:
        """The video writer also writes a temp file and renames it at the end, like write_image."""
        # ffmpeg's helpers: imported at the first video, not with the package.
        from ..video import DEFAULT_QUALITY, VideoInputError, stylize_video

        quality = spec.video_quality if spec.video_quality is not None else DEFAULT_QUALITY
        try:
            stats = stylize_video(self.stylizer, src, output, style.code, strength=spec.strength,
                                  preserve_color=spec.preserve_color, max_side=spec.max_side, quality=quality,
                                  overwrite=True, measure_flicker=False)
        except VideoInputError as exc:  # not a video, truncated: the file's fault
            raise _BadInput(exc.reason) from None
        return f"{stats.get('width')}x{stats.get('height')}, {stats.get('frames')} frames"

    # ---- outcomes ------------------------------------------------------------------------------------------
    def _unsupported(self, spec: FolderSpec, path: str, sig: Sig, why: str) -> None:
        """Not a file the daemon can process: recorded (never retried), the daemon goes on."""
        self.journal(spec).record(spec.key, path, str(spec.in_dir), sig, None, "unsupported", why)
        self.summary.unsupported += 1
        log.warning(f"{spec.name}: {relative_in(spec, path)}: skipped, {why}")

    def _permanent(self, spec: FolderSpec, path: str, sig: Sig, sha: Optional[str], reason: str) -> None:
        """The file itself is bad: recorded as failed with ``<relative path>: <reason>`` (never retried)."""
        journal = self.journal(spec)
        error = f"{relative_in(spec, path)}: {one_line(reason)}"
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
        rel = relative_in(spec, path)
        row = journal.get(spec.key, path)
        if row is not None and row["status"] == "processing":
            attempts = row["attempts"]  # counted by step A
        else:  # failed before step A (e.g. the input could not be read)
            try:
                sig = file_sig(os.stat(path))
            except OSError:
                return
            attempts = journal.retry_before_start(spec.key, path, str(spec.in_dir), sig, error)
        if attempts > self.retries:
            moved = self._move_failed(spec, path)
            journal.set_status(spec.key, path, "failed", f"{error} (after {attempts} attempts)", moved_to=moved)
            self.summary.failed += 1
            log.error(f"{spec.name}: {rel}: failed after {attempts} attempts: {error}")
            return
        delay = min(MAX_BACKOFF, self.retry_delay * 2 ** (attempts - 1))
        journal.set_status(spec.key, path, "retry", error)
        heapq.heappush(self._retry_heap, (time.monotonic() + delay, spec_index, path))
        log.warning(f"{spec.name}: {rel}: {error}; retrying in {delay:.1f} s (attempt {attempts} of {self.retries + 1})")

    def _run_due_retries(self) -> bool:
        worked = False
        while self._retry_heap and self._retry_heap[0][0] <= time.monotonic() and not self._stop.is_set():
            _, spec_index, path = heapq.heappop(self._retry_heap)
            try:
                sig = file_sig(os.stat(path))
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


# ------------------------------------------------------------------------------------------ helpers


def _start_observer(specs: list[FolderSpec], on_event: Callable[[int, Any], None]):
    """A running :mod:`watchdog` observer that calls ``on_event(spec_index, event)`` from its thread."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    class Handler(FileSystemEventHandler):
        def __init__(self, spec_index: int):
            self.spec_index = spec_index

        def dispatch(self, event) -> None:
            try:
                on_event(self.spec_index, event)
            except Exception:  # never let one odd event kill the observer thread
                log.exception("error while handling a file system event")

    observer = Observer()
    for i, spec in enumerate(specs):
        observer.schedule(Handler(i), str(spec.in_dir), recursive=spec.recursive)
    observer.daemon = True
    observer.start()
    return observer


def _write_image(*args, **kwargs):
    """:func:`metastyle_batch.images.write_image`, looked up on :mod:`metastyle_batch.watch` at each call, so that
    replacing ``metastyle_batch.watch.write_image`` (the tests simulate a full disk that way) takes effect."""
    return importlib.import_module(__package__).write_image(*args, **kwargs)


def _read_stable(path: Path, sig: Sig) -> bytes:
    """The file's bytes, provided it did not change since ``sig`` and while it was read."""
    with open(path, "rb") as f:
        before = file_sig(os.fstat(f.fileno()))
        data = f.read()
        after = file_sig(os.fstat(f.fileno()))
    if before != sig or after != sig or len(data) != sig[0] or file_sig(os.stat(path)) != sig:
        raise _FileChanged(str(path))
    return data


def _sha256_stable(path: Path, sig: Sig) -> str:
    """The file's sha256, provided it did not change since ``sig`` (a video is hashed, not read into memory)."""
    digest = sha256_file(path)
    if file_sig(os.stat(path)) != sig:
        raise _FileChanged(str(path))
    return digest


def _output_ok(path: Path) -> bool:
    """An output found after a crash is trusted only if it is whole (decodes; a video is non-empty)."""
    if is_video(path):
        try:
            return path.stat().st_size > 0
        except OSError:
            return False
    try:
        read_image(path)
        return True
    except ImageError:
        return False


def _remove_partial_outputs(spec: FolderSpec) -> None:
    """Delete the temp files interrupted writes left in OUT (the daemon holds the lock: no one else writes them)."""
    if not spec.out_dir.is_dir():
        return
    for root, _dirs, files in os.walk(spec.out_dir):
        for name in files:
            if is_partial_output(name):
                try:
                    os.unlink(os.path.join(root, name))
                    log.info(f"{spec.name}: removed a partial output left by a crash: {name}")
                except OSError:
                    pass


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


def _exc_text(exc: BaseException) -> str:
    """``"<type>: <one-line message>"`` (just the type when the message is empty, like MemoryError's)."""
    text = one_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
