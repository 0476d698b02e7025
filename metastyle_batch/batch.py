"""Batches of images: which files a request names, what each output is called, and the overlapped run.

Shared by the CLI's ``image`` command, the watch daemon's naming and Python users. :func:`run` keeps decode,
compute and encode overlapped (a reader and a writer thread around the caller's compute, bounded queues of
one picture each, so at most three pictures are in memory): Pillow and zlib release the GIL, torch does too.
Every failure is one :class:`Outcome` with a one-line error; one bad file never stops the batch.
"""

from __future__ import annotations

import glob
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import MetastyleError, OutputExistsError, one_line
from .formats import FORMAT_EXT, format_for_path
from .paths import not_regular

SUFFIX = "_stylized"  # beside-the-input outputs: NAME_stylized.EXT


class PlanError(MetastyleError):
    """The request cannot be planned (no inputs, stdin among several, a file name for several outputs)."""

    exit_code = 2


@dataclass
class Job:
    label: str  # what messages call the input
    path: Path | None  # None means stdin


@dataclass
class Expansion:
    jobs: list[Job]
    missing: list[tuple[str, str]]  # (argument, reason): explicit files that do not exist
    notes: list[str]  # folders or patterns that matched nothing
    batch: bool  # the user asked for several images (a folder, a pattern, several arguments)


def is_image_name(path: Path) -> bool:
    return not path.name.startswith(".") and format_for_path(path) is not None


def expand_inputs(args: list[str], skip_previous_outputs: bool = False) -> Expansion:
    """Files, folders (their images, sorted, non-recursive) and glob patterns → jobs, each file once."""
    out = Expansion([], [], [], len(args) > 1)
    seen: set[str] = set()

    def add(path: Path, label: str) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            out.jobs.append(Job(label, path))

    for arg in args:
        if arg == "-":
            if len(args) > 1:
                raise PlanError("'-' (stdin) must be the only input")
            return Expansion([Job("<stdin>", None)], [], [], False)
        path = Path(arg).expanduser()
        if path.is_dir():
            out.batch = True
            found = sorted(p for p in path.iterdir() if p.is_file() and is_image_name(p)
                           and not (skip_previous_outputs and p.stem.endswith(SUFFIX)))
            if not found:
                out.notes.append(f"{arg}: folder has no images")
        elif os.path.lexists(path):
            if kind := not_regular(path):  # a FIFO would block, a process substitution is read once
                out.missing.append((arg, f"is {kind}, not an image file"))
                continue
            found = [path]
        elif glob.has_magic(arg):
            out.batch = True
            found = [Path(m) for m in sorted(glob.glob(os.path.expanduser(arg), recursive=True))
                     if os.path.isfile(m) and is_image_name(Path(m))]
            if not found:
                out.notes.append(f"{arg}: pattern matched no images")
        else:
            out.missing.append((arg, "no such file"))
            continue
        for p in found:
            add(p, arg if p is path else str(p))
    return out


@dataclass
class OutputPlan:
    mode: str  # "stdout", "file", "dir" or "beside"
    path: Path | None = None  # the file (mode "file") or folder (mode "dir")
    format: str | None = None  # forced output format, else each input's own (or the file's extension)


def plan_outputs(output: str | None, jobs: list[Job], several: bool, fmt: str | None = None) -> OutputPlan:
    """Where outputs go: ``None`` beside the inputs (stdin → stdout), ``"-"`` stdout, a folder, or one file."""
    several = several or len(jobs) > 1
    if output is None:
        return OutputPlan("stdout" if jobs and jobs[0].path is None else "beside", None, fmt)
    if output == "-":
        if several:
            raise PlanError(f"stdout takes a single input, got {len(jobs)}; give an output folder")
        return OutputPlan("stdout", None, fmt)
    target = Path(output).expanduser()
    if target.is_dir() or output.endswith(("/", os.sep)):
        return OutputPlan("dir", target, fmt)
    if several:
        if target.exists() or format_for_path(target) is not None:
            raise PlanError(output, f"is a file name but there are several inputs; give a folder (e.g. {target.stem}/)")
        return OutputPlan("dir", target, fmt)
    implied = format_for_path(target)
    if fmt and implied and implied != fmt:
        raise PlanError(output, f"has extension {target.suffix} but the format asked for is {fmt}; make them agree")
    if not fmt and not implied:
        raise PlanError(output, "cannot tell the image format; use an extension like .png/.jpg, name a format, "
                                "or end a folder name with /")
    return OutputPlan("file", target, fmt)


def output_format(plan: OutputPlan, picture_format: str) -> str:
    """The forced format, else the output file's extension, else the input's own (an animated GIF stays GIF)."""
    if plan.format:
        return plan.format
    if plan.mode == "file" and plan.path is not None and format_for_path(plan.path):
        return format_for_path(plan.path)  # type: ignore[return-value]
    return picture_format if picture_format in FORMAT_EXT else "png"


def output_suffix(src: Path | None, fmt: str, keep_spelling: bool = True) -> str:
    """The extension of an output in ``fmt`` made from ``src``: the input's own (.jpeg, .JPG, .tif stay as the user
    wrote them) when it is that format, else the format's usual one. The watch daemon names its outputs so too."""
    return src.suffix if keep_spelling and src is not None and format_for_path(src) == fmt else FORMAT_EXT[fmt]


def output_path(job: Job, plan: OutputPlan, out_fmt: str) -> Path | None:
    """The one output naming policy (None means stdout)."""
    if plan.mode == "stdout":
        return None
    if plan.mode == "file":
        return plan.path
    stem = job.path.stem if job.path is not None else "stdin"
    ext = output_suffix(job.path, out_fmt, keep_spelling=not plan.format)
    if plan.mode == "dir":
        return plan.path / f"{stem}{ext}"  # type: ignore[operator]
    return job.path.with_name(f"{stem}{SUFFIX}{ext}")  # type: ignore[union-attr]


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class OutputGuard:
    """Refuses, before any compute, an output that is an input, that another input of this run also claims,
    or that exists (unless ``overwrite``): nothing is ever lost."""

    def __init__(self, jobs: list[Job], overwrite: bool) -> None:
        self.overwrite = overwrite
        self.inputs = {os.path.realpath(j.path) for j in jobs if j.path is not None}
        self.input_ids = {i for j in jobs if j.path is not None and (i := _identity(j.path)) is not None}
        self.claimed: dict[str, str] = {}
        self.lock = threading.Lock()

    def claim(self, job: Job, dest: Path) -> None:
        key = os.path.realpath(dest)
        if key in self.inputs or (_identity(dest) or (-1, -1)) in self.input_ids:
            raise MetastyleError(job.label, f"output {dest} would overwrite an input file; choose another output")
        with self.lock:
            if key in self.claimed:
                raise MetastyleError(job.label, f"output {dest} is also the output of {self.claimed[key]} in this "
                                                "run; name a format or an output folder to keep them apart")
            if os.path.lexists(dest) and not self.overwrite:
                raise OutputExistsError(job.label, f"output {dest} exists")
            self.claimed[key] = job.label

    def release(self, dest: Path) -> None:
        with self.lock:
            self.claimed.pop(os.path.realpath(dest), None)


@dataclass
class Outcome:
    job: Job
    output: Path | None = None  # None: stdout
    size: tuple[int, int] = (0, 0)
    ms: int = 0
    error: MetastyleError | None = None


def _failure(job: Job, exc: Exception) -> MetastyleError:
    """Every failure as one error naming the input (torch/OS/unexpected errors included)."""
    if isinstance(exc, MetastyleError):
        return exc if exc.file == job.label else type(exc)(job.label, str(exc))
    if isinstance(exc, BrokenPipeError):
        return MetastyleError(job.label, "stdout was closed")
    return MetastyleError(job.label, f"{type(exc).__name__}: {one_line(exc) or 'failed'}")


_END = object()


def run(jobs: list[Job], plan: OutputPlan, stylize: Callable, *, overwrite: bool = False, quality: int = 95,
        read_stdin: Callable[[], bytes] | None = None, write_stdout: Callable[[bytes], None] | None = None,
        overlap: bool = True) -> Iterator[Outcome]:
    """Read, ``stylize(picture) -> picture`` and write every job; yields one :class:`Outcome` per job, in order.

    With ``overlap`` the next picture is decoded and the previous one encoded while this one computes (the
    outputs are the same bytes as without). Inputs are never overwritten; outputs are written atomically.
    """
    from .images import encode_image, read_image, write_image

    guard = OutputGuard(jobs, overwrite)

    def load(job: Job):
        try:
            source = read_stdin() if job.path is None and read_stdin else job.path
            return job, read_image(source, job.label), time.perf_counter()
        except Exception as exc:  # handed on as this job's outcome
            return job, exc, time.perf_counter()

    def compute(item) -> tuple:
        job, picture, t0 = item
        if isinstance(picture, Exception):
            return job, picture, None, t0
        try:
            out_fmt = output_format(plan, picture.format)
            dest = output_path(job, plan, out_fmt)
            if dest is not None:
                guard.claim(job, dest)
            result = stylize(picture)
            result.format = out_fmt
            return job, result, dest, t0
        except Exception as exc:
            return job, exc, None, t0

    def store(item) -> Outcome:
        job, result, dest, t0 = item
        if isinstance(result, Exception):
            return Outcome(job, error=_failure(job, result))
        try:
            if dest is None:
                (write_stdout or sys.stdout.buffer.write)(encode_image(result, result.format, quality=quality))
            else:
                write_image(result, dest, format=result.format, overwrite=overwrite, quality=quality)
        except Exception as exc:
            if dest is not None:
                guard.release(dest)
            return Outcome(job, error=_failure(job, exc))
        return Outcome(job, dest, result.size, round((time.perf_counter() - t0) * 1000))

    if not overlap or len(jobs) == 1:
        for job in jobs:
            yield store(compute(load(job)))
        return

    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(maxsize=1)
    computed: queue.Queue = queue.Queue(maxsize=1)
    done: queue.Queue = queue.Queue()

    def put(q: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def reader() -> None:
        for job in jobs:
            if not put(decoded, load(job)):
                return
        put(decoded, _END)

    def writer() -> None:  # after a stop it still finishes what was computed (each write is atomic)
        while True:
            try:
                item = computed.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if item is _END:
                break
            done.put(store(item))
        done.put(_END)

    threads = [threading.Thread(target=reader, daemon=True), threading.Thread(target=writer, daemon=True)]
    for t in threads:
        t.start()
    try:
        while (item := decoded.get()) is not _END:
            put(computed, compute(item))
            while not done.empty():
                yield done.get()
        put(computed, _END)
        while (outcome := done.get()) is not _END:
            yield outcome
    finally:
        stop.set()
        for t in threads:
            t.join()
