"""What the video code raises: all :class:`~metastyle_batch.errors.MetastyleError` (one line, ``exit_code``)."""

from __future__ import annotations

from ..errors import MetastyleError, OutputExistsError

__all__ = ["VideoError", "VideoInputError", "VideoOutputError", "VideoExistsError", "KeyframeError"]


class VideoError(MetastyleError):
    """Processing failed; ``str(e)`` is one line, ``"<file>: <what is wrong>"``."""

    exit_code = 1


class VideoInputError(VideoError):
    """The input is missing, unreadable, not a video, or truncated (a usage error for the CLI)."""

    exit_code = 2


class VideoOutputError(VideoError):
    """The output cannot go where asked: it is the input file (a usage error for the CLI)."""

    exit_code = 2


class VideoExistsError(VideoOutputError, OutputExistsError):
    """The output is already there (``overwrite`` was not given), or is a folder."""


class KeyframeError(MetastyleError, ValueError):
    """A bad keyframe spec (syntax, position past the end, two keyframes on one frame)."""

    exit_code = 2
