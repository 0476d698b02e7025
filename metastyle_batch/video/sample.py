"""A few frames spread over a clip, for training on its own footage (``video --refine``)."""

from __future__ import annotations

import os
import subprocess

import numpy as np

from . import ffmpeg
from .errors import VideoInputError
from .probe import VideoInfo


def sample_frames(info: VideoInfo, n: int = 16, max_side: int = 512) -> list[np.ndarray]:
    """Up to ``n`` (H, W, 3) uint8 frames at evenly spaced times, as displayed (rotation applied), longer side at
    most ``max_side``. Each is one fast seek (``-ss`` before ``-i``), so a long clip is not decoded whole."""
    scale = min(1.0, max_side / max(info.width, info.height))
    w, h = max(2, round(info.width * scale)), max(2, round(info.height * scale))
    frames = []
    for i in range(min(n, max(1, info.frames))):
        t = info.video_start + (i + 0.5) * info.duration / min(n, max(1, info.frames))
        cmd = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-ss", f"{t:.3f}",
               "-i", os.fspath(info.path), "-map", "0:V:0", "-frames:v", "1", "-an", "-sn", "-dn",
               "-vf", f"scale={w}:{h}:flags=area", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False).stdout
        if len(out) >= w * h * 3:
            frames.append(np.frombuffer(out[:w * h * 3], np.uint8).reshape(h, w, 3))
    if not frames:
        raise VideoInputError(os.fspath(info.path), "no frame could be read to train on")
    return frames
