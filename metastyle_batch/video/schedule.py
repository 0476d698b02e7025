"""Per-frame style schedules: keyframes such as ``"0:a.jpg,5s:b.jpg,80%:c.jpg"`` → one style code per frame.

:func:`parse_keyframes` / :func:`build_schedule` turn the spec into a :class:`StyleSchedule` (the meta network's
hidden state at each keyframe, interpolated linearly or with smoothstep easing in between).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np

from ..codes import StyleCode
from .errors import KeyframeError

__all__ = ["Keyframe", "parse_position", "parse_keyframes", "resolve_keyframes", "StyleSchedule", "build_schedule",
           "fixed_style", "transition"]


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
        raise KeyframeError("empty keyframe spec; expected e.g. \"0:a.jpg,5s:b.jpg,80%:c.jpg\"")
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
        self._codes = np.stack([c.hidden for _, c in self.keys])

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

    def hidden(self, indices: Sequence[int]) -> np.ndarray:
        """(len(indices), D) float32 codes."""
        rows = []
        for i in indices:
            a, b, t = self.weights(i)
            rows.append(self._codes[a] if t == 0 else self._codes[a] * (1 - t) + self._codes[b] * t)
        return np.stack(rows)

    def code(self, index: int) -> StyleCode:
        """The frame's code, colours included (blended like the hidden state)."""
        a, b, t = self.weights(index)
        left, right = self.keys[a][1], self.keys[b][1]
        code = left if t == 0 else left * (1 - t) + right * t
        return code


def build_schedule(stylizer, keyframes: Sequence[Keyframe], frames: int, fps: Fraction, ease: str = "linear") -> StyleSchedule:
    """Resolve positions and encode every keyframe style (cached by the stylizer)."""
    placed = resolve_keyframes(keyframes, frames, fps)
    return StyleSchedule([(idx, stylizer.encode(k.style)) for idx, k in placed], ease)


def fixed_style(style) -> list[Keyframe]:
    """One style for the whole video."""
    return [Keyframe(0, "f", style, "0")]


def transition(style_a, style_b) -> list[Keyframe]:
    """A transition: style A at the first frame, B at the last."""
    return [Keyframe(0, "f", style_a, "start"), Keyframe(100, "%", style_b, "end")]

