"""Run by torchrun in test_train.py: a few DDP steps on gloo, then each rank dumps its replica."""

import os
import sys
from pathlib import Path

import torch

from metastyle_batch.train.loop import TrainConfig, train

content, style, out = sys.argv[1:4]
cfg = TrainConfig(content_dir=content, style_dir=style, out_dir=str(Path(out) / "run"), crop=32, batch=2,
                  style_every=2, steps=3, ckpt_every=3, sample_every=100, device="cpu")
meta = train(cfg, progress=False)
torch.save(meta.state_dict(), Path(out) / f"rank{os.environ['RANK']}.pt")
