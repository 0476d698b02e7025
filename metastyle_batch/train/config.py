"""Training settings as plain values (no torch import, so the CLI can show them in --help instantly)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class TrainConfig:
    content_dir: str
    style_dir: str
    out_dir: str = "runs/metanet"
    base: int = 8
    steps: int = 20000
    crop: int = 256
    batch: int = 8  # m: content images per step (per process)
    style_every: int = 20  # k: steps per style
    styles_per_step: int = 1  # >1: the batch is split between this many styles (per-sample generated networks)
    lr: float = 1e-3
    lr_decay_steps: int = 0  # linear decay to lr/10 over the last N steps: a calmer final model
    weight_decay: float = 1e-5
    clip_grad: float = 5.0
    init: str | None = None  # start from this model file's weights (fine-tune: fresh optimiser, step 0)
    bf16: bool = True  # bf16 autocast on CUDA, and on CPUs with native bf16 (1.7x faster here, AVX512-BF16)
    style_bank: int = 8  # precompute style targets for this many random crops of each style (0: one per step)
    content_layer: str = "relu2_2"
    content_weight: float = 1.0
    style_norm: bool = True  # statistics divided by their spread over the training styles, layers equal
    style_weight: float = 10.0  # of the normalised loss (the raw one, --raw-style-loss, wants ~15-50)
    tv_weight: float = 1.0
    palette_weight: float = 30.0  # sliced Wasserstein distance of Lab colours to the style's (losses.palette_loss)
    tone_weight: float = 1.0  # 1 - correlation of coarse luminance with the content's (losses.tone_loss)
    flat_weight: float = 0.0  # contrast invented where the photo is flat: blobs in skies and walls (losses.flat_loss)
    distill: int = 0  # >0: train on this many teacher pairs (train/distill.py), no VGG-16 in the loop
    distill_dir: str = ""  # where the pairs are built once and kept (default: out_dir/pairs)
    pixel_weight: float = 1.0  # distillation: L1 of the pixels against the teacher's
    coarse_weight: float = 0.0  # ... of the pixels at a quarter of the size (shapes and colours, not strokes)
    edge_weight: float = 1.0  # ... of neighbouring-pixel differences
    texture_weight: float = 0.0  # sliced Wasserstein distance of 5x5 patches at 3 scales (strokes, unaligned)
    colour_weight: float = 0.0  # sliced Wasserstein distance of the Lab colours to the teacher's (its saturation)
    spike_weight: float = 0.0  # against lone instance-norm spikes (losses.SpikeMeter); 0.003 looked worse
    seed: int = 0
    ckpt_every: int = 200
    sample_every: int = 500
    log_every: int = 10
    vgg: str | None = None
    device: str = "auto"

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
