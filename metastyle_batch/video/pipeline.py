"""The pipelined run: a decode thread → batched compute on the device → an encode thread, with bounded queues.

:func:`stylize_video` is four steps, each its own function: :func:`_plan` (check the arguments and the output,
probe, resolve the style schedule, build both ffmpeg command lines), :meth:`_Pipe.start` (the two ffmpeg
processes and their threads), :func:`_compute` (batches of frames through the generated networks, up to
``workers`` batches at once on the CPU, see :mod:`.compute`; frames with different codes in one batch get one
generated network each, as a grouped convolution) and :func:`_finalize` (counts checked, warnings collected). The output is written to a temp file beside the destination
(:func:`metastyle_batch.paths.atomic_path`) and renamed at the end, so an error or Ctrl-C never leaves a
half-written file behind.

Each ffmpeg child runs in its own session (the terminal's Ctrl-C reaches only us), with exit codes checked and
stderr captured for one-line error messages; any error or Ctrl-C stops both processes at once.
"""

from __future__ import annotations

import os
import queue
import subprocess
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..color import PALETTE_STRENGTH
from ..errors import check_output
from ..paths import atomic_path
from . import ffmpeg
from .compute import FrameCompute, compute_threads, default_workers
from .errors import VideoError, VideoExistsError, VideoOutputError
from .probe import VideoInfo, probe
from .schedule import Keyframe, StyleSchedule, build_schedule, fixed_style

__all__ = ["stylize_video", "check_destination"]


# ============================================================================================== ffmpeg children


class _Proc:
    """An ffmpeg child in its own session (the terminal's Ctrl-C reaches only us), stderr to a temp file."""

    def __init__(self, cmd: list[str], stdin=None, stdout=None):
        self.cmd = cmd
        self.log = tempfile.TemporaryFile()
        self.p = subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=self.log, start_new_session=True)

    def stderr(self) -> str:
        try:
            self.log.seek(0)
            return self.log.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def why(self, rc: int | None) -> str:
        """Why it failed, for a message: the end of its log, else its exit code."""
        return ffmpeg.stderr_tail(self.stderr()) or f"ffmpeg exit code {rc}"

    def kill(self) -> None:
        if self.p.poll() is None:
            try:
                self.p.kill()
            except OSError:
                pass
        for s in (self.p.stdin, self.p.stdout):
            try:
                if s:
                    s.close()
            except OSError:
                pass
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass

    def close(self) -> None:
        self.kill()
        self.log.close()


_END = object()


@dataclass
class _Shared:
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)


def _put(q: queue.Queue, item, shared: _Shared) -> bool:
    while not shared.stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, shared: _Shared, thread: threading.Thread | None = None, raise_errors: bool = True):
    """Next item; ``_END`` when the producer thread is gone or (for workers) when the run is stopping."""
    while True:
        if shared.errors and raise_errors:
            raise shared.errors[0]
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if not raise_errors and shared.stop.is_set():
                return _END
            if thread is not None and not thread.is_alive() and q.empty():
                if shared.errors and raise_errors:
                    raise shared.errors[0]
                return _END


def _reader(proc: _Proc, width: int, height: int, out_q: queue.Queue, shared: _Shared, label: str,
            counter: list[int]) -> None:
    nbytes = width * height * 3
    stream = proc.p.stdout
    try:
        while not shared.stop.is_set():
            buf = np.empty((height, width, 3), np.uint8)
            view = memoryview(buf).cast("B")
            got = 0
            while got < nbytes:
                n = stream.readinto(view[got:])
                if not n:
                    break
                got += n
            if got == 0:
                break
            if got < nbytes:
                raise VideoError(label, f"decoder stopped in the middle of frame {counter[0] + 1}")
            counter[0] += 1
            if not _put(out_q, buf, shared):
                return
        if shared.stop.is_set():
            return
        rc = proc.p.wait()
        if rc != 0:
            raise VideoError(label, f"decoding failed after {counter[0]} frames ({proc.why(rc)})")
        _put(out_q, _END, shared)
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        shared.errors.append(exc if isinstance(exc, VideoError) else VideoError(label, f"decoding failed: {exc}"))
        shared.stop.set()


def _writer(proc: _Proc, in_q: queue.Queue, shared: _Shared, label: str, counter: list[int]) -> None:
    stream = proc.p.stdin
    try:
        while True:
            item = _get(in_q, shared, raise_errors=False)  # only the main thread raises
            if item is _END or shared.stop.is_set():
                break
            try:
                stream.write(memoryview(item).cast("B"))
            except (BrokenPipeError, OSError, ValueError):
                proc.p.wait()
                raise VideoError(label, f"encoder failed ({proc.why(proc.p.returncode)})") from None
            counter[0] += 1
        if shared.stop.is_set():
            return
        stream.close()
        rc = proc.p.wait()
        if rc != 0:
            raise VideoError(label, f"encoding failed ({proc.why(rc)})")
    except BaseException as exc:  # noqa: BLE001
        shared.errors.append(exc if isinstance(exc, VideoError) else VideoError(label, f"encoding failed: {exc}"))
        shared.stop.set()


# ============================================================================================== 1. plan


@dataclass
class _Plan:
    """Everything decided before a process starts."""

    src: Path
    dst: Path
    label: str
    info: VideoInfo
    schedule: StyleSchedule
    crf: int
    dec_w: int
    dec_h: int
    out_w: int
    out_h: int
    batch: int
    workers: int  # batches computed at once (threads)
    dec_cmd: list[str]
    enc_cmd: list[str]  # without the output file name
    strength: float
    preserve_color: bool
    stabilize: bool
    measure_flicker: bool
    warnings: list[str]

    @property
    def padded(self) -> bool:
        return (self.out_w, self.out_h) != (self.dec_w, self.dec_h)


def check_destination(src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool) -> None:
    """The output must not be the input, a folder, or (without ``overwrite``) an existing file.

    Raises :class:`VideoOutputError` / :class:`VideoExistsError` (usage errors); :func:`stylize_video` checks
    this first, shells may check it before loading a model.
    """
    src, dst = Path(src), Path(dst)
    if dst.is_dir():  # not an OutputExistsError: replacing it is never an option
        raise VideoOutputError(dst, "is a directory; give an output file name")
    if os.path.lexists(dst):
        try:
            same = src.exists() and os.path.samefile(src, dst)
        except OSError:
            same = False
        if same:
            raise VideoOutputError(dst, "is the input file; choose another output name")
    check_output(dst, overwrite, VideoExistsError)


def _check_writable(dst: Path) -> None:
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VideoError(dst, f"cannot create the output folder ({exc.strerror or exc})") from None
    if not os.access(dst.parent, os.W_OK):
        raise VideoError(dst, "cannot write: permission denied (is the folder read-only?)")


def _even(n: float) -> int:
    return max(2, 2 * round(n / 2))


def _plan_size(info: VideoInfo, max_side: int | None) -> tuple[int, int, int, int, bool]:
    """(decode w, h, output w, h, scaled). Odd sizes are padded by one pixel (H.264 4:2:0 needs even sides)."""
    w, h = info.width, info.height
    if max_side and max(w, h) > max_side:
        s = max_side / max(w, h)
        w, h = _even(w * s), _even(h * s)
        return w, h, w, h, True
    return w, h, w + (w % 2), h + (h % 2), False


def _batch_size(stylizer, batch: int | None, pixels: int) -> int:
    if batch is None:
        batch = 8 if stylizer.device.type == "cuda" else 2
    batch = max(1, int(batch))
    max_pixels = getattr(stylizer, "max_pixels", None)
    if max_pixels:
        batch = max(1, min(batch, max_pixels // max(1, pixels)))
    return batch


def _decoder_cmd(info: VideoInfo, dec_w: int, dec_h: int, scaled: bool) -> list[str]:
    vf = []
    if info.vfr:
        vf.append(f"fps={ffmpeg.format_fps(info.fps)}")
    if scaled:
        vf.append(f"scale={dec_w}:{dec_h}:flags=area")
    cmd = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", os.fspath(info.path), "-map", "0:V:0",
           "-an", "-sn", "-dn"]
    if vf:
        cmd += ["-vf", ",".join(vf)]
    return cmd + ["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]


def _encoder_cmd(info: VideoInfo, out_w: int, out_h: int, fmt: str, quality: int, preset: str,
                 warnings: list[str]) -> list[str]:
    """The encoder reads raw RGB on stdin (and the source's audio); the temp file name is appended later, so the
    container is named with ``-f`` (the temp name ends in ``.part``)."""
    a_pre, a_post, a_warn = ffmpeg.audio_args(info, fmt, float(Fraction(info.frames) / info.fps))
    warnings += a_warn
    sar = info.sar if info.sar and info.sar != 1 else None
    return [ffmpeg.ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{out_w}x{out_h}", "-framerate", ffmpeg.format_fps(info.fps),
            "-i", "pipe:0", *a_pre, "-map", "0:v:0", *a_post, *ffmpeg.h264_output_args(quality, preset, sar, fmt),
            "-f", fmt]


def _plan(stylizer, src: Path, dst: Path, keyframes, *, ease: str, strength: float, preserve_color: bool,
          batch: int | None, max_side: int | None, quality: int, preset: str, overwrite: bool,
          measure_flicker: bool, stabilize: bool, info: VideoInfo | None, workers: int | None) -> _Plan:
    fmt = ffmpeg.output_format(dst)
    crf = ffmpeg.quality_to_crf(quality)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, got {strength}")
    if ease not in ("linear", "smooth"):
        raise ValueError(f"unknown ease {ease!r}; use linear or smooth")
    check_destination(src, dst, overwrite)
    _check_writable(dst)

    info = info or probe(src)
    if not isinstance(keyframes, (list, tuple)) or (keyframes and not isinstance(keyframes[0], Keyframe)):
        keyframes = fixed_style(keyframes)
    schedule = build_schedule(stylizer, keyframes, info.frames, info.fps, ease)
    dec_w, dec_h, out_w, out_h, scaled = _plan_size(info, max_side)
    batch = _batch_size(stylizer, batch, dec_w * dec_h)
    warnings: list[str] = list(info.notes)
    if (out_w, out_h) != (dec_w, dec_h):
        warnings.append(f"odd frame size {dec_w}x{dec_h} padded to {out_w}x{out_h} (H.264 4:2:0 needs even sizes)")
    if info.vfr:
        warnings.append("variable frame rate source: read and written at its average rate "
                        f"{ffmpeg.format_fps(info.fps)} fps")
    return _Plan(src=src, dst=dst, label=os.fspath(src), info=info, schedule=schedule, crf=crf,
                 dec_w=dec_w, dec_h=dec_h, out_w=out_w, out_h=out_h,
                 batch=batch, workers=max(1, int(workers or default_workers(stylizer))),
                 dec_cmd=_decoder_cmd(info, dec_w, dec_h, scaled),
                 enc_cmd=_encoder_cmd(info, out_w, out_h, fmt, quality, preset, warnings),
                 strength=strength, preserve_color=preserve_color, stabilize=stabilize,
                 measure_flicker=measure_flicker, warnings=warnings)


# ============================================================================================== 2. start I/O


class _Pipe:
    """The decoder and encoder processes, their threads and the bounded queues between them and the compute.

    Also times how long the compute waited for decoded frames and for room in the encoder's queue.
    """

    def __init__(self, plan: _Plan):
        self.plan = plan
        self.shared = _Shared()
        self.frames_q: queue.Queue = queue.Queue(maxsize=2 * plan.batch + 2)
        self.out_q: queue.Queue = queue.Queue(maxsize=2 * plan.batch + 2)
        self.decoded, self.written = [0], [0]
        self.dec: _Proc | None = None
        self.enc: _Proc | None = None
        self.threads: list[threading.Thread] = []
        self.ended = False
        self.decode_wait_s = self.encode_wait_s = 0.0

    def start(self, tmp: Path) -> None:
        plan = self.plan
        self.dec = _Proc(plan.dec_cmd, stdout=subprocess.PIPE)
        self.enc = _Proc(plan.enc_cmd + [os.fspath(tmp)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        self.threads = [
            threading.Thread(target=_reader, name="metastyle-decode", daemon=True,
                             args=(self.dec, plan.dec_w, plan.dec_h, self.frames_q, self.shared, plan.label,
                                   self.decoded)),
            threading.Thread(target=_writer, name="metastyle-encode", daemon=True,
                             args=(self.enc, self.out_q, self.shared, os.fspath(plan.dst), self.written)),
        ]
        for t in self.threads:
            t.start()

    def read_batch(self) -> list[np.ndarray]:
        """Up to ``batch`` decoded (H, W, 3) uint8 frames; fewer at the end, none after it."""
        t0 = time.perf_counter()
        frames: list[np.ndarray] = []
        while len(frames) < self.plan.batch and not self.ended:
            item = _get(self.frames_q, self.shared, self.threads[0])
            if item is _END:
                self.ended = True
            else:
                frames.append(item)
        self.decode_wait_s += time.perf_counter() - t0
        return frames

    def write(self, frames: np.ndarray) -> None:
        """Hand (N, H, W, 3) uint8 frames to the encoder, padded to the output size."""
        plan = self.plan
        t0 = time.perf_counter()
        for frame in frames:
            if plan.padded:
                frame = np.pad(frame, ((0, plan.out_h - plan.dec_h), (0, plan.out_w - plan.dec_w), (0, 0)), mode="edge")
            if not _put(self.out_q, frame, self.shared):
                break
        self.encode_wait_s += time.perf_counter() - t0
        self.raise_errors()

    def raise_errors(self) -> None:
        if self.shared.errors:
            raise self.shared.errors[0]

    def finish(self) -> None:
        """End of stream: the encoder drains and exits; raises what either thread failed with."""
        t0 = time.perf_counter()
        _put(self.out_q, _END, self.shared)
        self.threads[1].join()
        self.threads[0].join(timeout=10)
        self.encode_wait_s += time.perf_counter() - t0
        self.raise_errors()

    def abort(self) -> None:
        self.shared.stop.set()
        for p in (self.dec, self.enc):
            if p is not None:
                p.kill()
        for t in self.threads:
            t.join(timeout=5)

    def close(self) -> None:
        for p in (self.dec, self.enc):
            if p is not None:
                p.close()

    def decoder_log(self, lines: int) -> str:
        return ffmpeg.stderr_tail(self.dec.stderr(), lines) if self.dec is not None else ""


# ============================================================================================== 3. compute


def _compute(compute: FrameCompute, pipe: _Pipe, total: int, workers: int,
             progress: Callable[[int, int], None] | None) -> int:
    """Every decoded frame through ``compute`` into the encoder, in order, with up to ``workers`` batches'
    forward passes running at once (one: everything on this thread); returns the number of frames."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="metastyle-compute") if workers > 1 else None
    pending: deque[tuple[int, np.ndarray, Future]] = deque()
    read = done = 0
    try:
        while True:
            while len(pending) < workers and (frames := pipe.read_batch()):
                x, params = compute.prepare(frames, read)
                if pool is None or read == 0:  # the first batch builds the network's lazy state once, unraced
                    job: Future = Future()
                    job.set_result(compute.forward(x, params))
                else:
                    job = pool.submit(compute.forward, x, params)
                pending.append((len(frames), x, job))
                read += len(frames)
            if not pending:
                break
            n, x, job = pending.popleft()
            pipe.write(compute.finish(x, job.result()))
            done += n
            if progress is not None:
                progress(done, max(total, done))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    pipe.finish()
    return done


# ============================================================================================== 4. finalize


def _finalize(plan: _Plan, pipe: _Pipe, done: int) -> None:
    """Every frame arrived (or close enough): raise for a truncated decode, note the rest as warnings."""
    label, expected = plan.label, plan.info.frames
    if done == 0:
        raise VideoError(label, f"no frames could be decoded ({pipe.decoder_log(3) or 'empty video stream'})")
    if done < expected - 1:
        raise VideoError(label, f"decoded only {done} of {expected} frames; the file is truncated or damaged "
                                f"({pipe.decoder_log(1) or 'decoder ended early'})")
    if done != expected:
        plan.warnings.append(f"decoded {done} frames, the container announced {expected}")
    if decoder_log := pipe.decoder_log(2):
        plan.warnings.append(f"the decoder reported problems in {label}: {decoder_log}")


def _stats(plan: _Plan, stylizer, compute: FrameCompute, pipe: _Pipe, done: int, elapsed: float) -> dict[str, Any]:
    info = plan.info
    stats: dict[str, Any] = {
        "input": plan.label, "output": os.fspath(plan.dst), "frames": done, "fps": ffmpeg.format_fps(info.fps),
        "fps_value": float(info.fps), "seconds": round(float(done / info.fps), 6),
        "width": plan.out_w, "height": plan.out_h,
        "audio": info.has_audio, "vfr": info.vfr, "rotation": info.rotation, "crf": plan.crf,
        "keyframes": [f for f, _ in compute.schedule.keys],
        "elapsed_s": round(elapsed, 3), "compute_s": round(compute.seconds, 3),
        "decode_wait_s": round(pipe.decode_wait_s, 3), "encode_wait_s": round(pipe.encode_wait_s, 3),
        "frames_per_second": round(done / elapsed, 3) if elapsed > 0 else None,
        "batch": plan.batch, "workers": plan.workers, "threads": compute.threads, "device": str(stylizer.device), "stabilize": plan.stabilize, "warnings": plan.warnings,
    }
    stats.update({k: (round(v, 4) if v is not None else None) for k, v in compute.flicker_stats().items()})
    return stats


def stylize_video(
    stylizer,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    keyframes: Sequence[Keyframe] | Any,
    *,
    ease: str = "linear",
    strength: float = 1.0,
    preserve_color: bool = False,
    palette: float = PALETTE_STRENGTH,
    batch: int | None = None,
    max_side: int | None = None,
    quality: int = ffmpeg.DEFAULT_QUALITY,
    preset: str = ffmpeg.DEFAULT_PRESET,
    overwrite: bool = False,
    measure_flicker: bool = True,
    stabilize: bool = False,
    info: VideoInfo | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    network: dict | None = None,
) -> dict[str, Any]:
    """Stylize ``src`` into ``dst`` (H.264 yuv420p, audio copied) and return a stats dict.

    ``keyframes`` is a list of :class:`Keyframe` (see :func:`parse_keyframes`, :func:`fixed_style`,
    :func:`transition`) or a single style (path/bytes/array/StyleCode) used for the whole video.
    ``palette`` moves each frame's colours that far to its style's (:mod:`metastyle_batch.color`).
    ``stabilize`` smooths still parts of the shot (:class:`Stabilizer`); flicker is measured after it.
    ``progress(done, total)`` is called after every batch. Raises VideoInputError for unreadable input,
    KeyframeError for keyframes that do not fit the clip, VideoExistsError for an output that must not be
    replaced, VideoError for failures while processing; ``dst`` is only ever replaced by a complete file.
    ``workers`` batches are computed at once (default: 1; 2 for PyTorch on a CPU with 2+ threads, each batch
    then gets half of them); outputs do not depend on it. The stats include ``compute_s``
    (thread-seconds) and the time the compute waited for the decoder (``decode_wait_s``) and the encoder
    (``encode_wait_s``). ``network``: a ready generated network for the whole clip (one style, strength 1:
    e.g. :func:`~metastyle_batch.train.finetune.finetune`'s on the clip's own frames); the style still gives the
    palette's colours.
    """
    t_start = time.perf_counter()
    plan = _plan(stylizer, Path(src), Path(dst), keyframes, ease=ease, strength=strength,
                 preserve_color=preserve_color, batch=batch, max_side=max_side, quality=quality, preset=preset,
                 overwrite=overwrite, measure_flicker=measure_flicker, stabilize=stabilize, info=info,
                 workers=workers)
    if network is not None and not (plan.schedule.fixed and plan.strength == 1.0):
        raise ValueError("a ready network needs one style for the whole clip and strength 1")
    threads, thread_setting = compute_threads(stylizer, plan.workers)
    compute = FrameCompute(stylizer, plan.schedule, strength=plan.strength, preserve_color=plan.preserve_color,
                           stabilize=plan.stabilize, measure_flicker=plan.measure_flicker, threads=threads,
                           palette=palette, network=network)
    pipe = _Pipe(plan)
    with atomic_path(plan.dst) as tmp, thread_setting:  # tmp: removed on error, renamed after _finalize
        try:
            pipe.start(tmp)
            done = _compute(compute, pipe, plan.info.frames, plan.workers, progress)
            _finalize(plan, pipe, done)
        except BaseException:
            pipe.abort()
            raise
        finally:
            pipe.close()
    return _stats(plan, stylizer, compute, pipe, done, time.perf_counter() - t_start)
