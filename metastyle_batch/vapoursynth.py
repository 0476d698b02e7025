"""VapourSynth: ``stylize(clip, style=…)`` in a ``.vpy`` script, the same frames as ``metastyle-batch video``.

    import vapoursynth as vs
    from metastyle_batch.vapoursynth import stylize
    clip = vs.core.bs.VideoSource("in.mp4")
    clip = vs.core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s="709")
    clip = stylize(clip, style="wave.jpg", to="scream.jpg")
    clip = vs.core.resize.Bicubic(clip, format=vs.YUV420P8, matrix_s="709")
    clip.set_output()

A thin shell over the video path's :class:`~metastyle_batch.video.compute.FrameCompute` and the torch-free engine:
the schedule (one style, ``to``, or keyframes, each frame's hidden state interpolated), strength and the palette
map resolved once from frame 0 as the CLI does, then every frame through the engine on VapourSynth's own parallel
frame requests (ONNX Runtime sessions are thread-safe; each request runs with one thread). Input RGBS or RGBH,
output the same format and size. No stabilizer: it needs the frames in order.
"""

from __future__ import annotations

import threading
from fractions import Fraction
from typing import Any

import numpy as np

from .color import PALETTE_STRENGTH
from .video.compute import FrameCompute
from .video.schedule import Keyframe, build_schedule, fixed_style, parse_keyframes, transition

__all__ = ["stylize"]

_ENGINES: dict[Any, Any] = {}  # model → engine: styles and networks stay cached between calls
_LOCK = threading.Lock()


def _engine(model):
    from .runtime import open_stylizer

    with _LOCK:
        if model not in _ENGINES:
            _ENGINES[model] = open_stylizer(model, "cpu", threads=1)
        return _ENGINES[model]


def _keyframes(style, to, keyframes) -> list[Keyframe]:
    if keyframes is not None:
        keys = parse_keyframes(keyframes) if isinstance(keyframes, str) else list(keyframes)
        return ([Keyframe(0, "f", style, "style")] if style is not None else []) + keys
    if style is None:
        raise ValueError("give a style: style=, or keyframes=")
    return transition(style, to) if to is not None else fixed_style(style)


def stylize(clip, style=None, to=None, keyframes=None, strength: float = 1.0, palette: float = PALETTE_STRENGTH,
            preserve_color: bool = False, ease: str = "linear", model=None):
    """The stylized clip: ``style`` a path, bytes or style code for the whole clip; ``to`` a second style reached
    at the last frame; or ``keyframes``, ``"0:a.jpg,5s:b.jpg,80%:c.jpg"`` or a list of
    :class:`~metastyle_batch.video.schedule.Keyframe`, with ``style`` (if given) at frame 0. ``strength``,
    ``palette``, ``preserve_color``, ``ease`` and ``model`` as in ``metastyle-batch video``."""
    import vapoursynth as vs

    if clip.format is None or clip.format.id not in (vs.RGBS, vs.RGBH):
        name = "variable" if clip.format is None else clip.format.name
        raise ValueError(f"metastyle_batch.vapoursynth.stylize needs RGBS or RGBH, not {name}; convert first, e.g. "
                         "core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s='709')")
    if clip.width == 0 or clip.height == 0 or clip.num_frames == 0:
        raise ValueError("metastyle_batch.vapoursynth.stylize needs a clip of constant size with frames")
    engine = _engine(model)
    fps = Fraction(clip.fps.numerator, clip.fps.denominator) if clip.fps.numerator else Fraction(25)
    schedule = build_schedule(engine, _keyframes(style, to, keyframes), clip.num_frames, fps, ease)
    compute = FrameCompute(engine, schedule, strength=strength, preserve_color=preserve_color, palette=palette,
                           measure_flicker=False, threads=1)

    def read(frame) -> np.ndarray:
        return np.stack([np.asarray(frame[p], np.float32) for p in range(3)])[None]

    def run(n: int, frame) -> np.ndarray:
        x, job = compute.prepare_array(read(frame), n)
        return compute.finish_array(x, compute.forward(x, job))[0]

    run(0, clip.get_frame(0))  # frame 0 first: it fixes the strength and the clip's palette map, as in the CLI

    def selector(n: int, f):
        out = f.copy()
        for p, plane in enumerate(run(n, f)):
            np.copyto(np.asarray(out[p]), plane, casting="unsafe")
        return out

    return clip.std.ModifyFrame(clips=clip, selector=selector)
