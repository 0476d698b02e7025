"""Probe a video once, without decoding it: exact frame rate, frame count, display size, rotation, audio.

:func:`probe` reads the container once (``-c copy -f framecrc``) plus one decoded frame: exact frame rate as a
:class:`~fractions.Fraction` (``30000/1001``, never rounded), frame count, the size frames arrive in (ffmpeg
auto-rotates phone clips, so the display size), rotation, audio, duration, and whether the clip has a variable
frame rate (then it is read as constant-rate at its *average* rate).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..paths import not_regular
from .errors import VideoInputError
from .ffmpeg import ffmpeg_exe, stderr_tail

__all__ = ["VideoInfo", "probe"]

_STILL_FORMATS = re.compile(r"^(image2|\w+_pipe)$")




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


def _check_file(path: Path, label: str) -> None:
    """Cheap checks before ffmpeg runs: exists, not a folder, readable, not empty."""
    if not os.path.lexists(path):
        raise VideoInputError(label, "no such file")
    if path.is_dir():
        raise VideoInputError(label, "is a directory, not a video file")
    if kind := not_regular(path):  # a FIFO would block the probe and ffmpeg alike
        raise VideoInputError(label, f"is {kind}, not a video file")
    if not os.access(path, os.R_OK):
        raise VideoInputError(label, "permission denied")
    try:
        if path.stat().st_size == 0:
            raise VideoInputError(label, "empty file (0 bytes)")
    except OSError as exc:
        raise VideoInputError(label, f"cannot read file: {exc.strerror or exc}") from None


def _run_probe(path: Path, label: str, timeout: float | None) -> tuple[str, str]:
    """(framecrc stdout, verbose stderr) of the one ffmpeg run; raises VideoInputError if ffmpeg fails."""
    # Every packet of the first (non-cover-art) video stream and the first audio stream as framecrc lines on
    # stdout (no decoding), plus ONE decoded frame to learn the exact frame rate and the size after
    # auto-rotation (verbose log lines).
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "verbose", "-i", os.fspath(path),
           "-map", "0:V:0", "-map", "0:a:0?", "-c", "copy", "-f", "framecrc", "pipe:1",
           "-map", "0:V:0", "-frames:v", "1", "-f", "null", "-"]
    try:
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise VideoInputError(label, f"ffmpeg took longer than {timeout} s to read the file") from None
    err = res.stderr.decode("utf-8", "replace")
    if res.returncode != 0:
        reason = _ffmpeg_problem(err) or \
            f"ffmpeg cannot read it ({stderr_tail(err, 1) or 'exit code ' + str(res.returncode)})"
        raise VideoInputError(label, reason)
    return res.stdout.decode("utf-8", "replace"), err


def _rates(err: str, vrest: str, count: int, span: Fraction, label: str) -> tuple[Fraction, int, bool, Fraction | None]:
    """(fps, frames, vfr, nominal rate) from ``count`` packets spanning ``span`` seconds."""
    # Exact rates: the stream's nominal rate from the decoder graph ("fr:30000/1001"), else "tbr".
    nominal: Fraction | None = None
    if gm := _RE_GRAPH_FR.search(err):
        num, den = int(gm.group(1)), int(gm.group(2))
        nominal = Fraction(num, den) if num > 0 and den > 0 else None
    if nominal is None and (tm := _RE_TBR.search(vrest)):
        value = float(tm.group(1)) * (1000 if tm.group(2) else 1)
        nominal = _snap_rate(Fraction(value).limit_denominator(1001)) if value > 0 else None
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
    return fps, frames, vfr, nominal


def _display(err: str, input_part: str, vrest: str, label: str) -> tuple[int, int, int, Fraction | None]:
    """(width, height, rotation, sample aspect ratio) as decoded frames arrive, after auto-rotation."""
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
    # The decoder's output stream (after auto-rotation); else the coded size swapped by the rotation.
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
    return width, height, rotation, (sar or None)


def probe(path: str | os.PathLike, timeout: float | None = None) -> VideoInfo:
    """Read a video's container (no full decode): rate, count, size, rotation, audio. Raises VideoInputError."""
    path = Path(path)
    label = os.fspath(path)
    _check_file(path, label)
    out, err = _run_probe(path, label, timeout)
    input_part = err.split("Stream mapping:", 1)[0]
    m = _RE_INPUT_FORMAT.search(input_part)
    format_name = m.group(1) if m else "?"
    streams = [(int(s), kind, codec.rstrip(","), rest) for _, s, kind, codec, rest in _RE_STREAM.findall(input_part)]
    videos = [s for s in streams if s[1] == "Video" and "attached pic" not in s[3]]
    if not videos:
        raise VideoInputError(label, "has no video stream")
    _, _, codec, vrest = videos[0]
    if _STILL_FORMATS.match(format_name.split(",")[0]):
        raise VideoInputError(label, "is a still image, not a video")
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
    span = Fraction(v_end - v_first) * tb if v_end > v_first else Fraction(0)
    fps, frames, vfr, nominal = _rates(err, vrest, count, span, label)
    width, height, rotation, sar = _display(err, input_part, vrest, label)

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
                     video_start=max(0.0, float(v_first * tb) - file_start), vfr=vfr, nominal_fps=nominal, codec=codec,
                     sar=sar, container_duration=duration, format_name=format_name, notes=tuple(notes))


_COMMON_RATES = [Fraction(n * 1000, 1001) for n in (24, 30, 48, 60, 120, 240)] + \
                [Fraction(n) for n in (8, 10, 12, 15, 24, 25, 30, 48, 50, 60, 72, 90, 100, 120, 144, 240)] + \
                [Fraction(25, 2), Fraction(15000, 1001)]


def _snap_rate(rate: Fraction, tolerance: Fraction = Fraction(1, 2000)) -> Fraction:
    """A rate within ``tolerance`` (relative) of a common one (23.976…, 29.97…, 25, 30, …) becomes exactly that."""
    for r in _COMMON_RATES:
        if abs(rate - r) <= tolerance * r:
            return r
    return rate

