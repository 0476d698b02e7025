"""ffmpeg command lines: the bundled binary, the H.264 output settings, audio carry-over, the output container.

Everything goes through the ffmpeg binary that ``imageio-ffmpeg`` bundles (``imageio_ffmpeg.get_ffmpeg_exe()``).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .probe import VideoInfo

__all__ = ["ffmpeg_exe", "format_fps", "quality_to_crf", "output_format", "h264_output_args", "audio_args",
           "stderr_tail", "OUTPUT_FORMATS", "DEFAULT_QUALITY", "DEFAULT_PRESET"]

DEFAULT_QUALITY = 65  # → CRF 18, visually near-lossless
DEFAULT_PRESET = "medium"
# Output container by extension (H.264 is not allowed in WebM, so no .webm).
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
# Audio codecs an MP4/MOV can carry as-is; others are re-encoded to AAC (Matroska takes anything).
_MP4_AUDIO = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac", "mp2"}
_MOV_AUDIO = {"aac", "mp3", "alac", "ac3", "eac3", "mp2", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be",
              "pcm_f32le", "pcm_s32le"}


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def format_fps(fps: Fraction) -> str:
    """``Fraction(30000, 1001)`` → ``"30000/1001"``, ``Fraction(25)`` → ``"25"``."""
    return str(fps)


def quality_to_crf(quality: int) -> int:
    """Quality 1–100 (higher is better) → x264 CRF 50–0: 65 → 18, 55 → 23 (x264's default)."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be an integer from 1 to 100, got {quality!r}")
    return round(51 * (100 - int(quality)) / 100)


def output_format(path: str | os.PathLike) -> str:
    """The ffmpeg muxer for an output file name (``.mp4`` → ``mp4``); ValueError for other extensions."""
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"{os.fspath(path)}: unsupported output extension {Path(path).suffix or '(none)'!r}; "
                         f"use {', '.join(OUTPUT_FORMATS)}")
    return fmt


def h264_output_args(quality: int = DEFAULT_QUALITY, preset: str = DEFAULT_PRESET, sar: Fraction | None = None,
                     fmt: str = "mp4") -> list[str]:
    """Video encoder settings shared by :func:`~metastyle_batch.video.stylize_video` and the benchmarks' plain
    transcode.

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


def audio_args(info: VideoInfo, fmt: str, video_seconds: float) -> tuple[list[str], list[str], list[str]]:
    """(input args, output args, warnings) for carrying the source's first audio stream over as input 1."""
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


def stderr_tail(text: str, n: int = 3) -> str:
    """The last ``n`` meaningful lines of an ffmpeg log, joined with `` | `` (progress lines dropped)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("frame=", "size="))]
    return " | ".join(lines[-n:]) if lines else ""
