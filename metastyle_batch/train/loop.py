"""Train the meta network: the paper's Algorithm 1 (one style for k steps of m content images, then the next).

Runs on one device, or on several under ``torchrun`` with DistributedDataParallel (NCCL on GPUs, gloo on CPU).
Checkpoints hold model, optimizer, step and RNG state, and all data sampling is derived from (seed, step, rank),
so ``resume`` continues exactly where the run stopped.
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..tensors import pick_device
from ..model.io import save_model
from ..model.meta import MetaNet
from ..model.transform import transform
from ..model.vgg import VGG16, STYLE_LAYERS, load_vgg, style_vector
from . import data
from .bank import StyleBank, bank_key, build_bank
from .config import TrainConfig
from .distill import PairSet, distill_losses, open_or_build, pairs_folder, teacher_models
from .losses import PALETTE_SIZE, Objective, SpikeMeter, style_targets
from ..metrics import lab_points
from ..paths import atomic_path


LOGGED = ("content", "style", "tv", "palette", "tone", "flat", "spike", "pixel", "coarse", "edge", "texture", "colour")  # the loss terms in log.csv


class StyleTransferModel(nn.Module):
    """The trainable graph (meta network → generated TransformNet → image), one module so DDP can wrap it."""

    def __init__(self, meta: MetaNet, spikes: bool = False):
        super().__init__()
        self.meta = meta
        self.spikes = spikes  # measure the spike term (an extra pass over every map: only when it is trained)

    def forward(self, style_vec: torch.Tensor, content: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(images, spike term or None) for ``style_vec`` (S, 1920): S == 1 styles the whole batch, else each run
        of B/S content images its own."""
        hidden = self.meta.encode_features(style_vec)
        if len(hidden) > 1:
            hidden = hidden.repeat_interleave(len(content) // len(hidden), dim=0)
        if not self.spikes:
            return transform(content, self.meta.network(hidden), self.meta.base), None
        meter = SpikeMeter()
        return transform(content, self.meta.network(hidden), self.meta.base, ops=meter), meter.total


def _has_bf16(device: torch.device) -> bool:
    """Native bf16 only: oneDNN also "supports" bf16 on plain AVX-512 by emulating it, and there a training step
    took 1.8x as long as in float32 (Intel Xeon without AVX512-BF16, 2 cores; on AVX2 it is 25x)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    native = any(getattr(cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return device.type == "cpu" and native and torch.backends.mkldnn.is_available()


def _dist_info() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, vgg: VGG16 | None = None) -> MetaNet:
    """Run training to ``cfg.steps``; rank 0 writes ``out_dir/model.safetensors``. Returns this rank's network."""
    rank, world, local_rank = _dist_info()
    if cfg.batch % cfg.styles_per_step:
        raise ValueError(f"batch {cfg.batch} is not a multiple of styles_per_step {cfg.styles_per_step}")
    if cfg.distill and not (pairs_folder(cfg.out_dir, cfg.distill_dir) / "key.txt").is_file():
        teacher_models()  # before minutes of loading images: say now that the teacher is missing
    device = pick_device(cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    out = Path(cfg.out_dir)
    is_main = rank == 0
    if is_main:
        (out / "samples").mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    meta = _initial_network(cfg).to(device)
    model: nn.Module = StyleTransferModel(meta, spikes=cfg.spike_weight > 0)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    vgg = (vgg or load_vgg(cfg.vgg, log=print if is_main else None)).to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        vgg = vgg.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(meta.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    step = 0
    ckpt_path = out / "checkpoint.pt"
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"{ckpt_path}: no checkpoint to resume from")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        meta.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        torch.set_rng_state(state["rng"])
        step = int(state["step"])

    contents = data.load_folder(cfg.content_dir)
    styles = data.load_folder(cfg.style_dir)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and _has_bf16(device))
    pairs = _pairs(cfg, out, contents, styles, vgg, device, is_main, world) if cfg.distill else None
    bank = _style_bank(vgg, styles, cfg, out / "style_bank.pt", device, amp, is_main) if cfg.style_bank and not pairs else None
    if not resume and not cfg.init:
        meta.set_feature_stats(torch.from_numpy(pairs.vectors.copy()) if pairs else bank.vectors if bank
                               else _style_vectors(vgg, styles, cfg, device))
    objective = Objective.from_config(asdict(cfg), meta.feat_std.clone())
    if is_main:
        print(f"training base-{cfg.base} meta network on {len(contents)} content and {len(styles)} style images, "
              f"{world} process(es) on {device}, steps {step}→{cfg.steps}")

    log_file = open(out / "log.csv", "a", newline="") if is_main else None
    writer = csv.writer(log_file) if log_file else None
    if writer and log_file.tell() == 0:
        writer.writerow(["step", "loss", *LOGGED, "grad_norm", "skipped", "seconds"])
    bar = _progress(progress and is_main, step, cfg.steps)
    t0 = time.time()
    style_vec = targets = style_lab = None
    per_style = cfg.batch // cfg.styles_per_step
    try:
        while step < cfg.steps:
            if pairs:
                content, target, style_vec, style_lab = (t.to(device) for t in pairs.sample(
                    cfg.batch, cfg.crop, data.generator(cfg.seed, 2, step, rank)))
                with amp:
                    out_img, spike = model(style_vec, content)
                terms = distill_losses(out_img, target, content, style_lab, data.generator(cfg.seed, 8, step))
                if spike is not None:
                    terms["spike"] = spike
                # terms at weight 0 are logged but left out of the graph: no backward pass through them
                loss = sum((w * value for name, value in terms.items() if (w := getattr(cfg, f"{name}_weight"))),
                           0.0 * terms["pixel"])
            else:
                if style_vec is None or step % cfg.style_every == 0:
                    g = data.generator(cfg.seed, 1, step // cfg.style_every)  # same style on every rank
                    if bank:
                        style_vec, style_lab = bank.sample(cfg.styles_per_step, g)
                        style_vec = style_vec.to(device)
                    else:
                        style_img = data.sample_batch(styles, cfg.styles_per_step, cfg.crop, g).to(device)
                        with torch.no_grad(), amp:
                            style_vec = style_targets(vgg(style_img, STYLE_LAYERS))
                        style_lab = lab_points(style_img, PALETTE_SIZE)
                    targets = style_vec.repeat_interleave(per_style, dim=0)
                    style_lab = style_lab.to(device).repeat_interleave(per_style, dim=0)
                content = data.sample_batch(contents, cfg.batch, cfg.crop, data.generator(cfg.seed, 2, step, rank)).to(device)
                if channels_last:
                    content = content.contiguous(memory_format=torch.channels_last)
                with torch.no_grad(), amp:
                    content_feat = vgg(content, (cfg.content_layer,))[cfg.content_layer]
                with amp:
                    out_img, spike = model(style_vec, content)
                    loss, terms = objective(vgg, out_img, content, content_feat, targets, style_lab,
                                            data.generator(cfg.seed, 8, step))
                    if spike is not None:
                        terms["spike"] = spike
                        loss = loss + cfg.spike_weight * spike
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(meta.parameters(), cfg.clip_grad))
            skipped = not math.isfinite(grad_norm)
            if not skipped:  # a non-finite step would poison Adam's moments: drop it (same on every rank)
                opt.step()
            step += 1
            if writer and (step % cfg.log_every == 0 or step == cfg.steps):
                writer.writerow([step, f"{loss.item():.5g}"]
                                + [f"{terms[k].item():.5g}" if k in terms else "" for k in LOGGED]
                                + [f"{grad_norm:.4g}", int(skipped), f"{time.time() - t0:.1f}"])
                log_file.flush()
            if bar:
                bar.advance_to(step, loss.item())
            if is_main and step % cfg.sample_every == 0:
                _sample_grid(meta, vgg, contents, styles, cfg, out / "samples" / f"step_{step:07d}.png", device)
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                if is_main:
                    _save_checkpoint(ckpt_path, meta, opt, step, cfg)
    finally:
        if bar:
            bar.stop()
        if log_file:
            log_file.close()
    elapsed = time.time() - t0
    model_path = out / "model.safetensors"
    if is_main:
        save_model(meta, model_path, {"style_size": cfg.crop, "steps": step, "config": asdict(cfg)})
        print(f"done: {step} steps, {elapsed:.0f} s this run → {model_path}")
    if world > 1:
        dist.barrier()
    return meta


def _initial_network(cfg: TrainConfig) -> MetaNet:
    """A fresh network, or a trained one to go on from (its input standardisation included)."""
    if not cfg.init:
        return MetaNet(cfg.base)
    from ..model.io import load_model

    meta, _ = load_model(cfg.init)
    if meta.base != cfg.base:
        raise ValueError(f"{cfg.init}: a base-{meta.base} model, but training base {cfg.base}")
    return meta.requires_grad_(True).train()


def _pairs(cfg: TrainConfig, out: Path, contents, styles, vgg: VGG16, device, is_main: bool, world: int) -> PairSet:
    """The distillation pairs: rank 0 builds them once (the others wait), every rank reads them."""
    folder = pairs_folder(out, cfg.distill_dir)
    if is_main:
        open_or_build(folder, cfg.distill, contents, styles, vgg, cfg.crop, device)
    if world > 1:
        dist.barrier()
    return PairSet.open(folder)


def _style_bank(vgg: VGG16, styles: list[torch.Tensor], cfg: TrainConfig, path: Path, device, amp, is_main: bool) -> StyleBank:
    """The run's style bank: built once (every rank builds the same one), kept in the run folder and reused
    while it was built from the same styles, crop size and count."""
    if path.is_file():
        bank = StyleBank.load(path)
        if bank.key == bank_key(styles, cfg.style_bank, cfg.crop):
            return bank
    if is_main:
        print(f"precomputing style targets: {len(styles)} styles × {cfg.style_bank} crops")
    t0, shown = time.perf_counter(), [0]

    def progress(done: int, total: int) -> None:  # every tenth: minutes of silence otherwise on a CPU
        if is_main and done * 10 // total > shown[0]:
            shown[0] = done * 10 // total
            print(f"  style targets {done}/{total} ({time.perf_counter() - t0:.0f} s)", flush=True)

    bank = build_bank(vgg, styles, cfg.style_bank, cfg.crop, device, amp, progress=progress)
    if is_main:
        bank.save(path)
    return bank


@torch.no_grad()
def _style_vectors(vgg: VGG16, styles: list[torch.Tensor], cfg: TrainConfig, device, n: int = 256) -> torch.Tensor:
    """Style statistics of up to ``n`` training-style crops (identical on every rank: a fixed generator)."""
    g = data.generator(cfg.seed, 4)
    vecs = [style_vector(vgg(data.sample_batch(styles, 1, cfg.crop, g).to(device), STYLE_LAYERS)).float()
            for _ in range(min(n, max(2, len(styles))))]
    return torch.cat(vecs)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for ``step``: a pure function of the step, so resumed runs follow the same schedule."""
    start = cfg.steps - cfg.lr_decay_steps
    if cfg.lr_decay_steps <= 0 or step < start:
        return cfg.lr
    return cfg.lr * (1.0 - 0.9 * (step - start) / cfg.lr_decay_steps)


def _save_checkpoint(path: Path, meta: MetaNet, opt, step: int, cfg: TrainConfig) -> None:
    with atomic_path(path) as tmp:
        torch.save({"model": meta.state_dict(), "optim": opt.state_dict(), "step": step,
                    "rng": torch.get_rng_state(), "config": asdict(cfg)}, tmp)


@torch.no_grad()
def _sample_grid(meta, vgg, contents, styles, cfg, path: Path, device) -> None:
    """A grid: first row the styles, then each content stylized by each style."""
    from ..grid import save_grid

    g = data.generator(cfg.seed, 3)
    size = min(cfg.crop, 256)
    c = data.sample_batch(contents, 4, size, g).to(device)
    s = data.sample_batch(styles, 4, size, g).to(device)
    was_training = meta.training
    meta.eval()
    hidden = meta.encode_features(style_vector(vgg(s, STYLE_LAYERS)).float())
    rows = [[None] + list(s.cpu())]
    for img in c:
        outs = transform(img[None].expand(4, -1, -1, -1), meta.network(hidden), cfg.base).clamp(0, 1)
        rows.append([img.cpu()] + list(outs.cpu()))
    meta.train(was_training)
    save_grid(rows, path)


def _progress(enabled: bool, start: int, total: int):
    """A rich progress bar showing loss, it/s and ETA; None when disabled (other ranks, tests)."""
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4g}"),
                   TextColumn("{task.fields[rate]:.2f} it/s"), TimeRemainingColumn())
    task = bar.add_task("train", total=total, completed=start, loss=float("nan"), rate=0.0)
    t0 = time.time()
    bar.start()
    bar.advance_to = lambda step, loss: bar.update(task, completed=step, loss=loss,
                                                   rate=(step - start) / max(time.time() - t0, 1e-9))
    return bar


def export_checkpoint(checkpoint: str | Path, model_path: str | Path) -> str:
    """Turn a training checkpoint into a shippable model file (float16 safetensors + sha256); returns the sha256."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = TrainConfig.from_dict(state["config"])
    meta = MetaNet(cfg.base)
    meta.load_state_dict(state["model"])
    return save_model(meta, model_path, {"style_size": cfg.crop, "steps": int(state["step"]), "config": asdict(cfg)})
