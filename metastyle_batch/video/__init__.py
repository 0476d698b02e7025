"""Video stylization: probe, per-frame style schedule, and a pipelined decode → stylize → encode run.

* :mod:`.probe` — :func:`probe` reads a clip once without decoding it (:class:`VideoInfo`: exact frame rate as a
  :class:`~fractions.Fraction`, frame count, display size after auto-rotation, audio, variable frame rate).
* :mod:`.ffmpeg` — the bundled ffmpeg binary and the command-line pieces: H.264 output settings
  (:func:`h264_output_args`, :func:`quality_to_crf`), audio carry-over, the output container by extension.
* :mod:`.schedule` — keyframes (``"0:a.jpg,5s:b.jpg,80%:c.jpg"``) → a per-frame style code (:class:`StyleSchedule`).
* :mod:`.temporal` — flicker measured on the fly, and the optional :class:`Stabilizer`.
* :mod:`.compute` — one batch of frames through the generated network(s): strength, colour preservation,
  stabilizer, flicker; on the CPU two batches at once, one thread each.
* :mod:`.pipeline` — :func:`stylize_video`: decode thread → batched compute on the device → encode thread,
  written atomically (temp file + rename).
* :mod:`.errors` — :class:`VideoError` and friends, all :class:`~metastyle_batch.errors.MetastyleError`.
"""

from __future__ import annotations

from .compute import FrameCompute
from .errors import (
    KeyframeError,
    VideoError,
    VideoExistsError,
    VideoInputError,
    VideoOutputError,
)
from .ffmpeg import (
    DEFAULT_PRESET,
    DEFAULT_QUALITY,
    OUTPUT_FORMATS,
    audio_args,
    ffmpeg_exe,
    format_fps,
    h264_output_args,
    output_format,
    quality_to_crf,
    stderr_tail,
)
from .pipeline import check_destination, stylize_video
from .probe import VideoInfo, probe
from .schedule import (
    Keyframe,
    StyleSchedule,
    build_schedule,
    fixed_style,
    parse_keyframes,
    parse_position,
    resolve_keyframes,
    transition,
)
from .temporal import FlickerMeter, Stabilizer

__all__ = [
    "VideoError", "VideoInputError", "VideoOutputError", "VideoExistsError", "KeyframeError",
    "VideoInfo", "Keyframe", "StyleSchedule",
    "ffmpeg_exe", "probe", "parse_keyframes", "parse_position", "resolve_keyframes", "build_schedule", "fixed_style",
    "transition", "stylize_video", "check_destination", "Stabilizer", "FlickerMeter", "FrameCompute",
    "h264_output_args", "quality_to_crf", "output_format", "format_fps", "audio_args", "stderr_tail",
    "OUTPUT_FORMATS", "DEFAULT_QUALITY", "DEFAULT_PRESET",
]
