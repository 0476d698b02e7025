"""Video stylization: probe, per-frame style schedule, and a pipelined decode → stylize → encode run.

Everything goes through the ffmpeg binary that ``imageio-ffmpeg`` bundles (``imageio_ffmpeg.get_ffmpeg_exe()``),
driven directly so that exit codes are checked, stderr is captured for one-line error messages, and
Ctrl-C stops both ffmpeg processes at once.

* :func:`probe` reads the container once without decoding (``-c copy -f framecrc``) plus one decoded frame:
  exact frame rate as a :class:`~fractions.Fraction` (``30000/1001``, never rounded), frame count, the size
  frames arrive in (ffmpeg auto-rotates phone clips, so the display size), rotation, audio, duration, and
  whether the clip has a variable frame rate (then it is read as constant-rate at its *average* rate).
* :func:`parse_keyframes` / :func:`build_schedule` turn ``"0:a.jpg,5s:b.jpg,80%:c.jpg"`` into a per-frame
  style code (the meta network's hidden state, interpolated linearly or with smoothstep easing).
* :func:`stylize_video` runs a decode thread → batched compute on the device → an encode thread, with bounded
  queues; frames with different codes in one batch get one generated network each (grouped convolution).
  The output is written to a temp file in the destination folder and renamed at the end, so an error or
  Ctrl-C never leaves a half-written file behind.

Flicker is measured on the fly: mean absolute difference of consecutive stylized frames divided by that of
the source frames (1.0 = the stylization changes exactly as much as the footage does). :class:`Stabilizer`
(``stabilize=True``, ``--stabilize``) lowers it by holding the previous result where the footage did not change;
``benchmarks/video.py`` measures what it gains and that it leaves no trails next to moving objects.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .model.meta import StyleCode, mix

__all__ = [
    "VideoError", "VideoInputError", "KeyframeError", "VideoInfo", "Keyframe", "StyleSchedule",
    "ffmpeg_exe", "probe", "parse_keyframes", "parse_position", "resolve_keyframes", "build_schedule", "fixed_style",
    "transition", "stylize_video", "Stabilizer",
    "h264_output_args", "quality_to_crf", "output_format", "format_fps", "OUTPUT_FORMATS", "DEFAULT_QUALITY",
]

DEFAULT_QUALITY = 65  # → CRF 18, visually near-lossless
DEFAULT_PRESET = "medium"
# Output container by extension (H.264 is not allowed in WebM, so no .webm).
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
# Audio codecs an MP4/MOV can carry as-is; others are re-encoded to AAC (Matroska takes anything).
_MP4_AUDIO = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac", "mp2"}
_MOV_AUDIO = {"aac", "mp3", "alac", "ac3", "eac3", "mp2", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be",
              "pcm_f32le", "pcm_s32le"}
_STILL_FORMATS = re.compile(r"^(image2|\w+_pipe)$")


class VideoError(Exception):
    """Processing failed; ``str(e)`` is one line, ``"<file>: <what is wrong>"``."""

    def __init__(self, file: str | os.PathLike, reason: str) -> None:
        self.file = os.fspath(file).replace("\r", "\\r").replace("\n", "\\n")
        self.reason = " ".join(str(reason).split()) or "unknown error"
        super().__init__(f"{self.file}: {self.reason}")


class VideoInputError(VideoError):
    """The input is missing, unreadable, not a video, or truncated (a usage error for the CLI)."""


class KeyframeError(ValueError):
    """A bad keyframe spec (syntax, position past the end, two keyframes on one frame)."""


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def format_fps(fps: Fraction) -> str:
    """``Fraction(30000, 1001)`` → ``"30000/1001"``, ``Fraction(25)`` → ``"25"``."""
    return str(fps)


def quality_to_crf(quality: int) -> int:
    """``--quality`` 1–100 (higher is better) → x264 CRF 50–0: 65 → 18, 55 → 23 (x264's default)."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be an integer from 1 to 100, got {quality!r}")
    return round(51 * (100 - int(quality)) / 100)


def output_format(path: str | os.PathLike) -> str:
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"{os.fspath(path)}: unsupported output extension {Path(path).suffix or '(none)'!r}; "
                         f"use {', '.join(OUTPUT_FORMATS)}")
    return fmt


def h264_output_args(quality: int = DEFAULT_QUALITY, preset: str = DEFAULT_PRESET, sar: Fraction | None = None,
                     fmt: str = "mp4") -> list[str]:
    """Video encoder settings shared by :func:`stylize_video` and the benchmark's plain transcode.

    H.264 yuv420p (even sizes only), BT.709 matrix and tags so every player shows the RGB we computed.
    """
    vf = ("scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,"
          "setparams=range=tv:colorspace=bt709:color_primaries=bt709:color_trc=bt709")
    if sar is not None and sar != 1:
        vf += f",setsar={sar.numerator}/{sar.denominator}"
    args = ["-vf", vf, "-c:v", "libx264", "-preset", preset, "-crf", str(quality_to_crf(quality)), "-pix_fmt", "yuv420p"]
    if fmt in ("mp4", "mov"):
        args += ["-movflags", "+faststart"]
    return args


# ============================================================================================== probe


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learned. Sizes are as decoded frames arrive (after ffmpeg's auto-rotation)."""

    path: Path
    width: int
    height: int
    fps: Fraction  # the constant rate frames are read and written at (the average rate for VFR sources)
    frames: int  # frames expected at ``fps``
    rotation: int  # display-matrix rotation in degrees (0, 90, 180, 270); already applied by the decoder
    has_audio: bool
    audio_codec: str | None
    audio_end: float | None  # end of the first audio stream, seconds on the source timeline
    video_start: float  # first video timestamp, seconds after the file's start time (where ffmpeg puts 0)
    vfr: bool
    nominal_fps: Fraction | None  # the stream's own (r_frame_rate-like) rate
    codec: str
    sar: Fraction | None
    container_duration: float | None
    format_name: str
    notes: tuple[str, ...] = ()  # things worth a warning (e.g. video much shorter than the file declares)

    @property
    def duration(self) -> float:
        """Seconds of video: frames / fps."""
        return float(self.frames / self.fps) if self.fps else 0.0


def _tail(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("frame=", "size="))]
    return " | ".join(lines[-n:]) if lines else ""


def _ffmpeg_problem(stderr: str) -> str | None:
    """A short human reason from ffmpeg's stderr for a file it could not open, or None."""
    low = stderr.lower()
    if "permission denied" in low:
        return "permission denied"
    if "moov atom not found" in low:
        return "not a video, or a truncated/damaged MP4/MOV (no 'moov' index found)"
    if "invalid data found when processing input" in low or "could not find codec parameters" in low:
        return "not a video file, or damaged (ffmpeg cannot read it)"
    if "matches no streams" in low:
        return "has no video stream"
    if "no such file" in low:
        return "no such file"
    return None


_RE_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_RE_STREAM = re.compile(r"^\s*Stream #(\d+):(\d+)\S*: (Video|Audio|Subtitle|Data|Attachment): (\S+)(.*)$", re.M)
_RE_SIZE = re.compile(r"(?<![\dx])(\d{1,6})x(\d{1,6})(?![\dx])")
_RE_SAR = re.compile(r"SAR (\d+):(\d+)")
_RE_ROTATION = re.compile(r"(?:display ?matrix):\s*rotation of\s*(-?\d+(?:\.\d+)?)\s*degrees", re.I)
_RE_ROTATE_TAG = re.compile(r"^\s*rotate\s*:\s*(-?\d+)\s*$", re.M)
_RE_GRAPH_FR = re.compile(r"graph .*?input from stream 0:\d+.*? fr:(\d+)/(\d+)")
_RE_TBR = re.compile(r"([\d.]+)(k?) tbr")
_RE_INPUT_FORMAT = re.compile(r"^Input #0, ([^,]+(?:,[^ ,]+)*), from", re.M)


def _parse_packets(text: str) -> dict[int, dict[str, Any]]:
    """framecrc output → per output stream: time base and (pts, duration, flags) of every packet."""
    streams: dict[int, dict[str, Any]] = {}
    for line in text.splitlines():
        if line.startswith("#tb "):
            idx, tb = line[4:].split(":", 1)
            num, den = tb.strip().split("/")
            streams.setdefault(int(idx), {"packets": []})["tb"] = Fraction(int(num), int(den))
        elif line and line[0].isdigit():
            parts = [p.strip() for p in line.split(",")]
            try:
                idx, pts, dur = int(parts[0]), int(parts[2]), int(parts[3])
            except (ValueError, IndexError):
                continue
            flags = 1  # framecrc prints F= only when the flags are not just "key"
            for p in parts[6:]:
                if p.startswith("F="):
                    flags = int(p[2:], 16)
            streams.setdefault(idx, {"packets": []})["packets"].append((pts, dur, flags))
    return streams


def _span(packets: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    """(count, first pts, end = last pts + its duration) over packets not flagged discard."""
    good = [(p, d) for p, d, f in packets if not f & 0x4 and p > -(1 << 62)]
    if not good:
        return 0, 0, 0
    pts = sorted(p for p, _ in good)
    durations = [d for _, d in good]
    last_pts = pts[-1]
    last_dur = next((d for p, d in good if p == last_pts), 0)
    if last_dur <= 0:  # no duration on the last packet: the typical one, else the typical pts step
        known = [d for d in durations if d > 0]
        if known:
            last_dur = int(np.median(known))
        elif len(pts) > 1:
            last_dur = int(np.median(np.diff(pts)))
    return len(good), pts[0], last_pts + last_dur


def probe(path: str | os.PathLike, timeout: float | None = None) -> VideoInfo:
    """Read a video's container (no full decode): rate, count, size, rotation, audio. Raises VideoInputError."""
    path = Path(path)
    label = os.fspath(path)
    if not os.path.lexists(path):
        raise VideoInputError(label, "no such file")
    if path.is_dir():
        raise VideoInputError(label, "is a directory, not a video file")
    if not os.access(path, os.R_OK):
        raise VideoInputError(label, "permission denied")
    try:
        if path.stat().st_size == 0:
            raise VideoInputError(label, "empty file (0 bytes)")
    except OSError as exc:
        raise VideoInputError(label, f"cannot read file: {exc.strerror or exc}") from None
    # One ffmpeg run: every packet of the first (non-cover-art) video stream and the first audio stream as
    # framecrc lines on stdout (no decoding), plus ONE decoded frame to learn the exact frame rate and the
    # size after auto-rotation (verbose log lines).
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "verbose", "-i", os.fspath(path),
           "-map", "0:V:0", "-map", "0:a:0?", "-c", "copy", "-f", "framecrc", "pipe:1",
           "-map", "0:V:0", "-frames:v", "1", "-f", "null", "-"]
    try:
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise VideoInputError(label, f"ffmpeg took longer than {timeout} s to read the file") from None
    err = res.stderr.decode("utf-8", "replace")
    out = res.stdout.decode("utf-8", "replace")
    input_part = err.split("Stream mapping:", 1)[0]
    if res.returncode != 0:
        reason = _ffmpeg_problem(err) or f"ffmpeg cannot read it ({_tail(err, 1) or 'exit code ' + str(res.returncode)})"
        raise VideoInputError(label, reason)
    m = _RE_INPUT_FORMAT.search(input_part)
    format_name = m.group(1) if m else "?"
    streams = [(int(s), kind, codec.rstrip(","), rest) for _, s, kind, codec, rest in _RE_STREAM.findall(input_part)]
    videos = [s for s in streams if s[1] == "Video" and "attached pic" not in s[3]]
    if not videos:
        raise VideoInputError(label, "has no video stream")
    _, _, codec, vrest = videos[0]
    if _STILL_FORMATS.match(format_name.split(",")[0]):
        raise VideoInputError(label, "is a still image, not a video (use `metastyle-batch image`)")
    audios = [s for s in streams if s[1] == "Audio"]

    packets = _parse_packets(out)
    vstream = packets.get(0, {"packets": [], "tb": Fraction(1, 1)})
    count, v_first, v_end = _span(vstream["packets"])
    if count == 0:
        raise VideoInputError(label, "has no video frames")
    tb = vstream.get("tb", Fraction(1, 1))
    low = err.lower()
    if "partial file" in low or "truncat" in low or "ended prematurely" in low:
        raise VideoInputError(label, f"truncated or damaged video (the file ends early; {count} frames readable)")

    # Exact rates: the stream's nominal rate from the decoder graph ("fr:30000/1001"), else "tbr".
    nominal: Fraction | None = None
    if gm := _RE_GRAPH_FR.search(err):
        num, den = int(gm.group(1)), int(gm.group(2))
        nominal = Fraction(num, den) if num > 0 and den > 0 else None
    if nominal is None and (tm := _RE_TBR.search(vrest)):
        value = float(tm.group(1)) * (1000 if tm.group(2) else 1)
        nominal = _snap_rate(Fraction(value).limit_denominator(1001)) if value > 0 else None
    span = Fraction(v_end - v_first) * tb if v_end > v_first else Fraction(0)
    if span > 0:
        average = Fraction(count) / span
    elif nominal:
        average = nominal
    else:
        raise VideoInputError(label, "cannot tell the frame rate (no timestamps)")
    # Constant frame rate when count frames at the nominal rate fill the stream to within half a frame;
    # otherwise (dropped/duplicated/variable timing) read at the average rate so the audio stays in sync.
    vfr = not (nominal and (span == 0 or abs(span - count / nominal) < Fraction(1, 2) / nominal))
    fps = _snap_rate(average.limit_denominator(1001), tolerance=Fraction(1, 10**6)) if vfr else nominal
    frames = count if not vfr else max(1, round(span * fps))

    # Display size: the decoder's output stream (after auto-rotation); else coded size swapped by rotation.
    rotation = 0
    if rm := _RE_ROTATION.search(input_part):
        rotation = round(float(rm.group(1))) % 360
    elif rm := _RE_ROTATE_TAG.search(input_part):
        rotation = int(rm.group(1)) % 360
    size_m = _RE_SIZE.search(vrest)
    if not size_m:
        raise VideoInputError(label, "cannot tell the frame size")
    width, height = int(size_m.group(1)), int(size_m.group(2))
    sar_m = _RE_SAR.search(vrest)
    sar = Fraction(int(sar_m.group(1)), int(sar_m.group(2))) if sar_m and int(sar_m.group(2)) else None
    out_part = err.split("Output #1", 1)[1] if "Output #1" in err else ""
    om = re.search(r"Stream #1:0\S*: Video: (.*)$", out_part, re.M)
    if om and (osize := _RE_SIZE.search(om.group(1))):
        width, height = int(osize.group(1)), int(osize.group(2))
        osar = _RE_SAR.search(om.group(1))
        if osar and int(osar.group(2)):
            sar = Fraction(int(osar.group(1)), int(osar.group(2)))
    elif rotation in (90, 270):
        width, height = height, width
        sar = 1 / sar if sar else sar
    if sar == 0:
        sar = None

    audio_end = None
    astream = packets.get(1)
    if audios and astream and astream.get("packets"):
        _, _, a_end = _span(astream["packets"])
        audio_end = float(a_end * astream.get("tb", Fraction(1, 1)))
    duration = None
    if dm := _RE_DURATION.search(input_part):
        duration = int(dm.group(1)) * 3600 + int(dm.group(2)) * 60 + float(dm.group(3))
    notes = []
    if duration and span and float(span) < 0.5 * duration - 1:
        notes.append(f"the video stream covers {float(span):.2f} s but the file declares {duration:.2f} s "
                     "(truncated file, or audio much longer than the video)")
    file_start = float(sm.group(1)) if (sm := re.search(r"Duration:.*?start:\s*(-?\d+(?:\.\d+)?)", input_part)) else 0.0
    if audio_end is not None:
        audio_end -= file_start
    return VideoInfo(path=path, width=width, height=height, fps=fps, frames=frames, rotation=rotation,
                     has_audio=bool(audios), audio_codec=audios[0][2] if audios else None, audio_end=audio_end,
                     video_start=max(0.0, float(v_first * tb) - file_start), vfr=vfr, nominal_fps=nominal, codec=codec, sar=sar,
                     container_duration=duration, format_name=format_name, notes=tuple(notes))


_COMMON_RATES = [Fraction(n * 1000, 1001) for n in (24, 30, 48, 60, 120, 240)] + \
                [Fraction(n) for n in (8, 10, 12, 15, 24, 25, 30, 48, 50, 60, 72, 90, 100, 120, 144, 240)] + \
                [Fraction(25, 2), Fraction(15000, 1001)]


def _snap_rate(rate: Fraction, tolerance: Fraction = Fraction(1, 2000)) -> Fraction:
    """A rate within ``tolerance`` (relative) of a common one (23.976…, 29.97…, 25, 30, …) becomes exactly that."""
    for r in _COMMON_RATES:
        if abs(rate - r) <= tolerance * r:
            return r
    return rate


# ============================================================================================== schedule


@dataclass(frozen=True)
class Keyframe:
    """A style placed at a position: ``frames`` (int), ``s`` (seconds) or ``%`` (percent of the clip)."""

    value: float
    unit: str  # "f", "s" or "%"
    style: Any  # anything Stylizer.encode accepts (path, bytes, array, StyleCode)
    text: str = ""  # as the user wrote the position, for messages

    def frame(self, frames: int, fps: Fraction) -> int:
        last = max(frames - 1, 0)
        if self.unit == "f":
            idx = int(self.value)
        elif self.unit == "s":
            idx = round(self.value * float(fps))
        else:
            idx = round(self.value / 100 * last)
        if idx == last + 1:  # "2s" of a 2.002 s clip: one past the last frame means the last frame
            idx = last
        if idx > last:
            raise KeyframeError(f"keyframe {self.text or self.value!s} is past the end of the video "
                                f"({frames} frames, {float(frames / fps):.2f} s)")
        return idx


_RE_POSITION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(f|s|%)?\s*$", re.I)


def parse_position(text: str) -> tuple[float, str]:
    """``"12"``/``"12f"`` → frame 12, ``"5s"``/``"1.5s"`` → seconds, ``"80%"`` → percent."""
    m = _RE_POSITION.match(text)
    if not m:
        raise KeyframeError(f"bad keyframe position {text.strip()!r}: use a frame number (12), seconds (5s, 1.5s) "
                            "or a percentage (80%)")
    value, unit = float(m.group(1)), (m.group(2) or "f").lower()
    if unit == "f" and value != int(value):
        raise KeyframeError(f"bad keyframe position {text.strip()!r}: a frame number must be whole (or add 's')")
    if unit == "%" and value > 100:
        raise KeyframeError(f"bad keyframe position {text.strip()!r}: a percentage must be at most 100%")
    return value, unit


def parse_keyframes(spec: str) -> list[Keyframe]:
    """``"0:a.jpg,5s:b.jpg,80%:c.jpg"`` → keyframes (styles stay as path strings; nothing is read here).

    Items are separated by commas; each is ``POSITION:STYLE`` split at the first colon, so style paths may
    contain colons but not commas.
    """
    items = [it for it in (spec or "").split(",") if it.strip()]
    if not items:
        raise KeyframeError("empty --keyframes spec; expected e.g. \"0:a.jpg,5s:b.jpg,80%:c.jpg\"")
    out = []
    for item in items:
        if ":" not in item:
            raise KeyframeError(f"bad keyframe {item.strip()!r}: expected POSITION:STYLE, e.g. 5s:b.jpg")
        pos, style = item.split(":", 1)
        style = style.strip()
        if not style:
            raise KeyframeError(f"bad keyframe {item.strip()!r}: no style image after the colon")
        value, unit = parse_position(pos)
        out.append(Keyframe(value, unit, style, pos.strip()))
    return out


def resolve_keyframes(keys: Sequence[Keyframe], frames: int, fps: Fraction) -> list[tuple[int, Keyframe]]:
    """Keyframes → sorted (frame index, keyframe); two keyframes on one frame is an error."""
    placed: dict[int, Keyframe] = {}
    for k in keys:
        idx = k.frame(frames, fps)
        if idx in placed:
            raise KeyframeError(f"keyframes {placed[idx].text or placed[idx].value!s} and {k.text or k.value!s} "
                                f"both land on frame {idx}")
        placed[idx] = k
    return sorted(placed.items(), key=lambda kv: kv[0])


class StyleSchedule:
    """Per-frame style codes: keyframe codes, interpolated between keyframes (held before the first and after
    the last). Generated weights are linear in the code, so this moves the *network* smoothly too."""

    def __init__(self, keys: Sequence[tuple[int, StyleCode]], ease: str = "linear"):
        if not keys:
            raise ValueError("a style schedule needs at least one keyframe")
        if ease not in ("linear", "smooth"):
            raise ValueError(f"unknown ease {ease!r}; use linear or smooth")
        self.keys = sorted(keys, key=lambda kv: kv[0])
        self.ease = ease
        self._frames = torch.tensor([f for f, _ in self.keys], dtype=torch.float64)
        self._codes = torch.stack([c.hidden.float().cpu() for _, c in self.keys])

    @property
    def fixed(self) -> bool:
        return len(self.keys) == 1 or bool((self._codes == self._codes[0]).all())

    def map(self, fn: Callable[[StyleCode], StyleCode]) -> "StyleSchedule":
        return StyleSchedule([(f, fn(c)) for f, c in self.keys], self.ease)

    def weights(self, index: int) -> tuple[int, int, float]:
        """(left key, right key, t) for a frame: its code is (1 - t)·left + t·right."""
        frames = [f for f, _ in self.keys]
        if index <= frames[0]:
            return 0, 0, 0.0
        if index >= frames[-1]:
            return len(frames) - 1, len(frames) - 1, 0.0
        j = next(i for i, f in enumerate(frames) if f > index)
        t = (index - frames[j - 1]) / (frames[j] - frames[j - 1])
        if self.ease == "smooth":
            t = t * t * (3 - 2 * t)
        return j - 1, j, t

    def hidden(self, indices: Sequence[int]) -> torch.Tensor:
        """(len(indices), D) float32 codes."""
        rows = []
        for i in indices:
            a, b, t = self.weights(i)
            rows.append(self._codes[a] if t == 0 else self._codes[a] * (1 - t) + self._codes[b] * t)
        return torch.stack(rows)

    def code(self, index: int) -> StyleCode:
        return StyleCode(self.hidden([index])[0])


def build_schedule(stylizer, keyframes: Sequence[Keyframe], frames: int, fps: Fraction, ease: str = "linear") -> StyleSchedule:
    """Resolve positions and encode every keyframe style (cached by the stylizer)."""
    placed = resolve_keyframes(keyframes, frames, fps)
    return StyleSchedule([(idx, stylizer.encode(k.style)) for idx, k in placed], ease)


def fixed_style(style) -> list[Keyframe]:
    return [Keyframe(0, "f", style, "0")]


def transition(style_a, style_b) -> list[Keyframe]:
    """``--style A --to B``: A at the first frame, B at the last."""
    return [Keyframe(0, "f", style_a, "start"), Keyframe(100, "%", style_b, "end")]


# ============================================================================================== pipeline


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
            err = proc.stderr()
            raise VideoError(label, f"decoding failed after {counter[0]} frames ({_tail(err) or 'ffmpeg exit code ' + str(rc)})")
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
                raise VideoError(label, f"encoder failed ({_tail(proc.stderr()) or 'ffmpeg exit code ' + str(proc.p.returncode)})") from None
            counter[0] += 1
        if shared.stop.is_set():
            return
        stream.close()
        rc = proc.p.wait()
        if rc != 0:
            raise VideoError(label, f"encoding failed ({_tail(proc.stderr()) or 'ffmpeg exit code ' + str(rc)})")
    except BaseException as exc:  # noqa: BLE001
        shared.errors.append(exc if isinstance(exc, VideoError) else VideoError(label, f"encoding failed: {exc}"))
        shared.stop.set()


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


def _audio_args(info: VideoInfo, fmt: str, video_seconds: float) -> tuple[list[str], list[str], list[str]]:
    """(input args, output args, warnings) for carrying the source's first audio stream over."""
    if not info.has_audio:
        return [], [], []
    warnings = []
    pre: list[str] = []
    # Our video starts at 0 where the source's first frame was: drop audio from before that frame (input -ss
    # counts from the file's start time, as video_start does).
    offset = info.video_start
    if offset > 0.001:
        pre += ["-ss", f"{offset:.6f}"]
    pre += ["-i", os.fspath(info.path)]
    codec = info.audio_codec or ""
    ok = fmt == "matroska" or codec in (_MOV_AUDIO if fmt == "mov" else _MP4_AUDIO)
    post = ["-map", "1:a:0"]
    if ok:
        post += ["-c:a", "copy"]
    else:
        post += ["-c:a", "aac", "-b:a", "192k"]
        warnings.append(f"audio codec {codec or '?'} cannot be stored in {fmt.upper()} as-is; re-encoded to AAC")
    # -shortest only when the audio outlasts the video: with shorter audio it would cut video frames.
    if info.audio_end is None or info.audio_end - offset > video_seconds:
        post += ["-shortest"]
    return pre, post, warnings


class _Flicker:
    """Sum of mean |frame_t - frame_{t-1}| over consecutive frames, for the stylized and the source video."""

    def __init__(self):
        self.prev_y = self.prev_x = None
        self.sum_y = self.sum_x = 0.0
        self.pairs = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.prev_y is not None:
            x = torch.cat([self.prev_x, x])
            y = torch.cat([self.prev_y, y])
        if x.shape[0] > 1:
            self.sum_x += float((x[1:] - x[:-1]).abs().mean(dim=(1, 2, 3)).double().sum())
            self.sum_y += float((y[1:] - y[:-1]).abs().mean(dim=(1, 2, 3)).double().sum())
            self.pairs += x.shape[0] - 1
        self.prev_x, self.prev_y = x[-1:].clone(), y[-1:].clone()

    def result(self) -> dict[str, float | None]:
        if not self.pairs:
            return {"flicker": None, "stylized_mad": None, "source_mad": None}
        sx, sy = self.sum_x / self.pairs, self.sum_y / self.pairs
        return {"flicker": (sy / sx) if sx > 1e-9 else None, "stylized_mad": sy * 255, "source_mad": sx * 255}


class Stabilizer:
    """Temporal smoothing for still parts of a shot, where a feed-forward network shimmers frame to frame.

    Instance norm takes its statistics from the whole frame, so anything moving anywhere shifts every output
    pixel a little; so does sensor and codec noise. Where the source did not change (mean |Δ| over channels
    below ``threshold``), the output is pulled towards the previous output: ``y' = y + alpha·m·(y'_{t-1} - y)``
    with ``m = clamp(1 - maxpool_r(|Δx|) / threshold, 0, 1)``. The max-pool widens "moving" by ``radius``
    pixels, about the network's receptive field, so pixels whose stylization follows a moving object stay fresh
    (no trails); moving pixels themselves get exactly the network's output. Call it on consecutive batches.
    """

    def __init__(self, alpha: float = 0.7, radius: int = 16, threshold: float = 6 / 255) -> None:
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        self.alpha, self.radius, self.threshold = alpha, radius, threshold
        self.prev_x: torch.Tensor | None = None
        self.prev_y: torch.Tensor | None = None

    def still(self, x: torch.Tensor, prev_x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) weight in [0, 1]: 1 where nothing within ``radius`` pixels changed."""
        import torch.nn.functional as F

        d = (x - prev_x).abs().mean(1, keepdim=True)
        r = self.radius
        if r:  # max is separable: two 1-D pools instead of one (2r+1)² window
            d = F.max_pool2d(F.max_pool2d(d, (1, 2 * r + 1), 1, (0, r)), (2 * r + 1, 1), 1, (r, 0))
        return (1 - d / self.threshold).clamp_(0, 1)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Source frames ``x`` and their stylization ``y``, both (N, 3, H, W), next in the video."""
        out = []
        for xi, yi in zip(x.split(1), y.split(1)):
            if self.prev_y is not None:
                m = self.still(xi, self.prev_x).to(yi.dtype)
                yi = yi + self.alpha * m * (self.prev_y - yi)
            self.prev_x, self.prev_y = xi, yi
            out.append(yi)
        return torch.cat(out)


def _temp_path(dst: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    os.close(fd)
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def stylize_video(
    stylizer,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    keyframes: Sequence[Keyframe] | Any,
    *,
    ease: str = "linear",
    strength: float = 1.0,
    preserve_color: bool = False,
    batch: int | None = None,
    max_side: int | None = None,
    quality: int = DEFAULT_QUALITY,
    preset: str = DEFAULT_PRESET,
    overwrite: bool = False,
    measure_flicker: bool = True,
    stabilize: bool = False,
    info: VideoInfo | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Stylize ``src`` into ``dst`` (H.264 yuv420p, audio copied) and return a stats dict.

    ``keyframes`` is a list of :class:`Keyframe` (see :func:`parse_keyframes`, :func:`fixed_style`,
    :func:`transition`) or a single style (path/bytes/array/StyleCode) used for the whole video.
    ``stabilize`` smooths still parts of the shot (:class:`Stabilizer`); flicker is measured after it.
    ``progress(done, total)`` is called after every batch. Raises VideoInputError for unreadable input,
    KeyframeError for keyframes that do not fit the clip, VideoError for failures while processing;
    ``dst`` is only ever replaced by a complete file.
    """
    t_start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    label = os.fspath(src)
    fmt = output_format(dst)
    crf = quality_to_crf(quality)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, got {strength}")
    if ease not in ("linear", "smooth"):
        raise ValueError(f"unknown ease {ease!r}; use linear or smooth")
    if os.path.lexists(dst):
        if dst.is_dir():
            raise VideoError(dst, "is a directory; give an output file name")
        try:
            same = src.exists() and os.path.samefile(src, dst)
        except OSError:
            same = False
        if same:
            raise VideoError(dst, "is the input file; choose another output name")
        if not overwrite:
            raise VideoError(dst, "exists; pass --overwrite to replace it")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VideoError(dst, f"cannot create the output folder ({exc.strerror or exc})") from None
    if not os.access(dst.parent, os.W_OK):
        raise VideoError(dst, "cannot write: permission denied (is the folder read-only?)")

    info = info or probe(src)
    if not isinstance(keyframes, (list, tuple)) or (keyframes and not isinstance(keyframes[0], Keyframe)):
        keyframes = fixed_style(keyframes)
    schedule = build_schedule(stylizer, keyframes, info.frames, info.fps, ease)
    dec_w, dec_h, out_w, out_h, scaled = _plan_size(info, max_side)
    warnings: list[str] = list(info.notes)
    if (out_w, out_h) != (dec_w, dec_h):
        warnings.append(f"odd frame size {dec_w}x{dec_h} padded to {out_w}x{out_h} (H.264 4:2:0 needs even sizes)")
    if info.vfr:
        warnings.append(f"variable frame rate source: read and written at its average rate {format_fps(info.fps)} fps")

    device = stylizer.device
    if batch is None:
        batch = 8 if device.type == "cuda" else 2
    batch = max(1, int(batch))
    max_pixels = getattr(stylizer, "max_pixels", None)
    if max_pixels:
        batch = max(1, min(batch, max_pixels // max(1, dec_w * dec_h)))

    vf = []
    if info.vfr:
        vf.append(f"fps={format_fps(info.fps)}")
    if scaled:
        vf.append(f"scale={dec_w}:{dec_h}:flags=area")
    dec_cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", os.fspath(src), "-map", "0:V:0",
               "-an", "-sn", "-dn"]
    if vf:
        dec_cmd += ["-vf", ",".join(vf)]
    dec_cmd += ["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]

    video_seconds = float(Fraction(info.frames) / info.fps)
    a_pre, a_post, a_warn = _audio_args(info, fmt, video_seconds)
    warnings += a_warn
    sar = info.sar if info.sar and info.sar != 1 else None
    enc_head = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{out_w}x{out_h}", "-framerate", format_fps(info.fps),
                "-i", "pipe:0", *a_pre, "-map", "0:v:0", *a_post, *h264_output_args(quality, preset, sar, fmt),
                "-f", fmt]

    shared = _Shared()
    frames_q: queue.Queue = queue.Queue(maxsize=2 * batch + 2)
    out_q: queue.Queue = queue.Queue(maxsize=2 * batch + 2)
    decoded, written = [0], [0]
    dec = enc = None
    threads: list[threading.Thread] = []
    flicker = _Flicker() if measure_flicker else None
    stabilizer = Stabilizer() if stabilize else None
    done = 0
    compute_s = 0.0
    tmp: Path | None = None
    try:
        tmp = _temp_path(dst)
        dec = _Proc(dec_cmd, stdout=subprocess.PIPE)
        enc = _Proc(enc_head + [os.fspath(tmp)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        t_dec = threading.Thread(target=_reader, args=(dec, dec_w, dec_h, frames_q, shared, label, decoded),
                                 name="metastyle-decode", daemon=True)
        t_enc = threading.Thread(target=_writer, args=(enc, out_q, shared, os.fspath(dst), written),
                                 name="metastyle-encode", daemon=True)
        threads = [t_dec, t_enc]
        t_dec.start()
        t_enc.start()

        fixed_params = None
        finished = False
        while not finished:
            frames: list[np.ndarray] = []
            while len(frames) < batch:
                item = _get(frames_q, shared, t_dec)
                if item is _END:
                    finished = True
                    break
                frames.append(item)
            if not frames:
                break
            t0 = time.perf_counter()
            if done == 0 and strength < 1.0:  # resolved once, from the first frame, so it cannot flicker
                content = stylizer.encode_array(frames[0].astype(np.float32) / 255)
                schedule = schedule.map(lambda c: mix([c, content], [strength, 1.0 - strength]))
            x = torch.from_numpy(np.stack(frames)).to(device).permute(0, 3, 1, 2).float().div_(255)
            indices = range(done, done + len(frames))
            if schedule.fixed:
                if fixed_params is None:
                    fixed_params = stylizer.network(schedule.code(0))
                params = fixed_params
            else:
                hidden = schedule.hidden(indices)
                params = stylizer.network(StyleCode(hidden[0])) if bool((hidden == hidden[0]).all()) \
                    else stylizer.network(hidden)
            y = stylizer.run(x, params)
            if preserve_color:
                from .engine import preserve_colors

                y = preserve_colors(y, x).clamp_(0, 1)
            if stabilizer is not None:
                y = stabilizer(x, y)
            if flicker is not None:
                flicker.add(x, y)
            out = y.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
            compute_s += time.perf_counter() - t0
            for frame in out:
                if (out_w, out_h) != (dec_w, dec_h):
                    frame = np.pad(frame, ((0, out_h - dec_h), (0, out_w - dec_w), (0, 0)), mode="edge")
                if not _put(out_q, frame, shared):
                    break
            done += len(frames)
            if progress is not None:
                progress(done, max(info.frames, done))
            if shared.errors:
                raise shared.errors[0]
        _put(out_q, _END, shared)
        t_enc.join()
        t_dec.join(timeout=10)
        if shared.errors:
            raise shared.errors[0]
        if done == 0:
            raise VideoError(label, f"no frames could be decoded ({_tail(dec.stderr()) or 'empty video stream'})")
        if done < info.frames - 1:
            raise VideoError(label, f"decoded only {done} of {info.frames} frames; the file is truncated or damaged "
                                    f"({_tail(dec.stderr(), 1) or 'decoder ended early'})")
        if done != info.frames:
            warnings.append(f"decoded {done} frames, the container announced {info.frames}")
        if decoder_log := _tail(dec.stderr(), 2):
            warnings.append(f"the decoder reported problems in {label}: {decoder_log}")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the rename must never expose a partly written file after a power cut
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dst)
    except BaseException:
        shared.stop.set()
        for p in (dec, enc):
            if p is not None:
                p.kill()
        for t in threads:
            t.join(timeout=5)
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass
        raise
    finally:
        for p in (dec, enc):
            if p is not None:
                p.close()

    elapsed = time.perf_counter() - t_start
    fps_str = format_fps(info.fps)
    stats: dict[str, Any] = {
        "input": label, "output": os.fspath(dst), "frames": done, "fps": fps_str, "fps_value": float(info.fps),
        "seconds": round(float(done / info.fps), 6), "width": out_w, "height": out_h,
        "audio": info.has_audio, "vfr": info.vfr, "rotation": info.rotation, "crf": crf,
        "keyframes": [f for f, _ in schedule.keys],
        "elapsed_s": round(elapsed, 3), "compute_s": round(compute_s, 3),
        "frames_per_second": round(done / elapsed, 3) if elapsed > 0 else None,
        "batch": batch, "device": str(device), "stabilize": stabilize, "warnings": warnings,
    }
    measured = flicker.result() if flicker is not None else {"flicker": None, "stylized_mad": None, "source_mad": None}
    stats.update({k: (round(v, 4) if v is not None else None) for k, v in measured.items()})
    return stats
