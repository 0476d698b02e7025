"""The layers of the generated TransformNet (no torch: both runtimes and the meta network read this)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where used: the CLI starts without it
    import numpy as np


@dataclass(frozen=True)
class ConvSpec:
    name: str
    cin: int
    cout: int
    k: int
    stride: int = 1
    upsample: bool = False
    generated: bool = True

    @property
    def n_params(self) -> int:
        return self.cout * self.cin * self.k * self.k + self.cout


def layer_specs(base: int = 8) -> list[ConvSpec]:
    b = base
    specs = [ConvSpec("conv_in", 3, b, 9, generated=False),
             ConvSpec("down1", b, 2 * b, 3, stride=2),
             ConvSpec("down2", 2 * b, 4 * b, 3, stride=2)]
    for i in range(1, 6):
        specs += [ConvSpec(f"res{i}a", 4 * b, 4 * b, 3), ConvSpec(f"res{i}b", 4 * b, 4 * b, 3)]
    specs += [ConvSpec("up1", 4 * b, 2 * b, 3, upsample=True),
              ConvSpec("up2", 2 * b, b, 3, upsample=True),
              ConvSpec("conv_out", b, 3, 9, generated=False)]
    return specs


def generated_specs(base: int = 8) -> list[ConvSpec]:
    return [s for s in layer_specs(base) if s.generated]


def flat_output(params, flat: "np.ndarray") -> "np.ndarray":
    """The network's exact output colour for each flat sample of a batch (``flat``: :func:`flat_samples`'s mask),
    (n flat, 3); one network for all, or G == batch networks, one each.

    A flat input keeps every map flat (reflect and edge padding), so each instance norm sees x - mean = 0 exactly
    and its layer gives relu(bias); the result is conv_out of a flat relu(up2.bias). Computed with float rounding
    instead, the norm divides rounding noise by sqrt(1e-5), layer after layer, and every implementation draws
    different noise; this is the answer they all approximate.
    """
    import numpy as np

    def array(v) -> np.ndarray:
        return np.asarray(v.detach().float().cpu().numpy() if hasattr(v, "detach") else v, np.float64)

    w = array(params["conv_out.weight"]).sum(axis=(-2, -1))  # (3, C), or (G, 3, C) when generated
    h = np.maximum(array(params["up2.bias"]), 0).reshape(-1, w.shape[-1])  # (G, C)
    y = np.einsum("goc,gc->go", np.broadcast_to(w, (h.shape[0], *w.shape[-2:])), h)
    y = y + array(params["conv_out.bias"]).reshape(-1, 3)
    return np.broadcast_to(y, (len(flat), 3))[flat]


def flat_samples(x) -> "np.ndarray":
    """Which samples of a (B, 3, H, W) batch (numpy or torch) are flat: every pixel equal to the first, in every
    channel. Checked 64 rows at a time, so a photo is told apart in its first rows, with no picture-size copy."""
    import numpy as np

    def flat(s) -> bool:
        first = s[:, :1, :1]
        return all(bool((s[:, r:r + 64] == first).all()) for r in range(0, s.shape[1], 64))

    return np.array([flat(s) for s in x], dtype=bool)
