"""The MetaStyle nodes: thin shells that turn ComfyUI's values into metastyle_batch calls.

ComfyUI's conventions (its nodes.py): an IMAGE is a float tensor (B, H, W, C) in [0, 1], a MASK (B, H, W) or
(H, W) in [0, 1]; a node declares INPUT_TYPES, RETURN_TYPES, FUNCTION and CATEGORY, and IS_CHANGED returns what
changes when a file behind an input changes (LoadImage: the file's sha256). A batch is stylized as the
``video`` command stylizes a clip: strength and the palette map from the first image, each image's style from
the schedule. The engine (ONNX Runtime on the CPU, PyTorch on a GPU when ComfyUI has one) is loaded once and keeps
the style codes and generated networks of the styles it has seen.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from metastyle_batch.codes import StyleCode, mix
from metastyle_batch.color import PALETTE_STRENGTH
from metastyle_batch.video.compute import stylize_frames
from metastyle_batch.video.schedule import Keyframe, build_schedule, parse_position

STYLE = "METASTYLE_STYLE"  # a style code, or a schedule of them across a batch
CATEGORY = "image/MetaStyle"
_ENGINE = None


def engine():
    """The shared engine: the GPU's (PyTorch) when ComfyUI's torch sees one, else ONNX Runtime on the CPU."""
    global _ENGINE
    if _ENGINE is None:
        from metastyle_batch.runtime import open_stylizer

        _ENGINE = open_stylizer(device="cuda" if torch.cuda.is_available() else "cpu")
    return _ENGINE


@dataclass(frozen=True)
class Schedule:
    """Styles placed across a batch: positions as frame numbers ("12") or percentages ("50%")."""

    positions: tuple[str, ...]
    codes: tuple[StyleCode, ...]
    ease: str = "linear"


def _file_hash(path: str) -> str:
    try:
        with open(os.path.expanduser(path), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return "missing"


class LoadStyle:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {},
                "optional": {"image": ("IMAGE",),
                             "path": ("STRING", {"default": "", "tooltip": "A style image file (instead of image)."})}}

    RETURN_TYPES = (STYLE,)
    RETURN_NAMES = ("style",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "A style image (the first of an IMAGE batch, or a file) → its style code for the MetaStyle nodes."

    @classmethod
    def IS_CHANGED(cls, image=None, path=""):
        return _file_hash(path) if path else ""

    @classmethod
    def VALIDATE_INPUTS(cls, image=None, path=""):
        if path and not os.path.isfile(os.path.expanduser(path)):
            return f"style image not found: {path}"
        return True

    def load(self, image=None, path=""):
        if path:
            return (engine().encode(os.path.expanduser(path)),)
        if image is None:
            raise ValueError("Load Style needs an image or a path")
        return (engine().encode(np.ascontiguousarray(image[0, :, :, :3].float().cpu().numpy())),)


class MixStyles:
    @classmethod
    def INPUT_TYPES(cls):
        weight = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.05})
        return {"required": {"style_1": (STYLE,), "weight_1": weight, "style_2": (STYLE,), "weight_2": weight},
                "optional": {"style_3": (STYLE,), "weight_3": weight, "style_4": (STYLE,), "weight_4": weight}}

    RETURN_TYPES = (STYLE,)
    RETURN_NAMES = ("style",)
    FUNCTION = "mix"
    CATEGORY = CATEGORY
    DESCRIPTION = "Blend styles in the meta network's hidden space (weights are normalised to sum to one)."

    def mix(self, style_1, weight_1, style_2, weight_2, style_3=None, weight_3=1.0, style_4=None, weight_4=1.0):
        pairs = [(s, w) for s, w in ((style_1, weight_1), (style_2, weight_2), (style_3, weight_3),
                                     (style_4, weight_4)) if s is not None]
        if any(isinstance(s, Schedule) for s, _ in pairs):
            raise ValueError("Mix Styles takes styles, not schedules: mix first, then schedule")
        return (mix([s for s, _ in pairs], [w for _, w in pairs]),)


class StyleSchedule:
    @classmethod
    def INPUT_TYPES(cls):
        position = ("STRING", {"default": "0"})
        return {"required": {"style_1": (STYLE,), "at_1": position, "style_2": (STYLE,),
                             "at_2": ("STRING", {"default": "100%"}), "ease": (["linear", "smooth"],)},
                "optional": {"style_3": (STYLE,), "at_3": ("STRING", {"default": "50%"}),
                             "style_4": (STYLE,), "at_4": ("STRING", {"default": "75%"})}}

    RETURN_TYPES = (STYLE,)
    RETURN_NAMES = ("schedule",)
    FUNCTION = "schedule"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Keyframes across a batch (a video's frames): each style at a frame number or a percentage; the "
                   "frames in between move between the styles in the meta network's hidden space.")

    def schedule(self, style_1, at_1, style_2, at_2, ease, style_3=None, at_3="50%", style_4=None, at_4="75%"):
        keys = [(a, s) for s, a in ((style_1, at_1), (style_2, at_2), (style_3, at_3), (style_4, at_4))
                if s is not None]
        if any(isinstance(s, Schedule) for _, s in keys):
            raise ValueError("Style Schedule takes styles, not schedules")
        for at, _ in keys:
            if parse_position(at)[1] == "s":
                raise ValueError(f"position {at!r}: a batch has no frame rate; use a frame number or a percentage")
        return (Schedule(tuple(a for a, _ in keys), tuple(s for _, s in keys), ease),)


class Stylize:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "style": (STYLE,),
                             "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                             "palette": ("FLOAT", {"default": PALETTE_STRENGTH, "min": 0.0, "max": 1.0, "step": 0.05}),
                             "preserve_color": ("BOOLEAN", {"default": False})},
                "optional": {"mask": ("MASK", {"tooltip": "Where to stylize (1) and where to keep the image (0)."})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "stylize"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Stylize an IMAGE batch: one style, or a Style Schedule across the batch (a video's frames); "
                   "strength, palette and colour keeping as in metastyle-batch.")

    def stylize(self, images, style, strength, palette, preserve_color, mask=None):
        frames = images[..., :3].float().cpu().numpy()
        if isinstance(style, Schedule):
            keys = [Keyframe(*parse_position(a), code, a) for a, code in zip(style.positions, style.codes)]
            ease = style.ease
        else:
            keys, ease = [Keyframe(0, "f", style, "0")], "linear"
        schedule = build_schedule(engine(), keys, len(frames), Fraction(1), ease)
        out = torch.from_numpy(np.ascontiguousarray(stylize_frames(engine(), frames, schedule, strength=strength,
                                                                   preserve_color=preserve_color, palette=palette)))
        if mask is not None:
            m = mask.float().cpu().reshape(-1, *mask.shape[-2:])
            if m.shape[-2:] != out.shape[1:3]:
                raise ValueError(f"the mask is {m.shape[-1]}x{m.shape[-2]} but the images are "
                                 f"{out.shape[2]}x{out.shape[1]}")
            m = m[..., None].clamp(0, 1)
            out = images[..., :3].float().cpu() * (1 - m) + out * m
        return (out,)


NODE_CLASS_MAPPINGS = {"MetaStyleLoadStyle": LoadStyle, "MetaStyleMixStyles": MixStyles,
                       "MetaStyleSchedule": StyleSchedule, "MetaStyleStylize": Stylize}
NODE_DISPLAY_NAME_MAPPINGS = {"MetaStyleLoadStyle": "Load Style (MetaStyle)", "MetaStyleMixStyles": "Mix Styles (MetaStyle)",
                              "MetaStyleSchedule": "Style Schedule (MetaStyle)", "MetaStyleStylize": "Stylize (MetaStyle)"}
