"""The meta network's forward pass in numpy: style statistics → hidden state → a generated network's weights.

The same arithmetic as :class:`~metastyle_batch.model.meta.MetaNet` (which trains), from the same model file, for
the runtime that has no torch. It is three small matrix products, so numpy is all it needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import ModelError, read_state
from .layers import generated_specs

HIDDEN_PER_LAYER = 128
# Generated biases shift instance-normalised channels directly (no norm makes them scale-free, unlike the conv
# weights), and each one sums 128 hidden units: unscaled, Adam moves them ~100x faster than a plain bias.
BIAS_SCALE = 0.02
# Generated gains scale instance-normalised channels (conditional instance norm's gamma): the conv weights cannot,
# since the norm divides their scale away, so without a gain a style had no way to set its own contrast.
GAIN_SCALE = 0.02


class MetaWeights:
    """A model file's meta network as numpy arrays (float32)."""

    def __init__(self, state: dict[str, np.ndarray], base: int):
        self.base = base
        self.specs = generated_specs(base)
        self.state = state
        n = len(self.specs)
        for i, spec in enumerate(self.specs):
            if f"gains.{i}.weight" not in state:  # format 2: no gain heads, every gain 1
                state[f"gains.{i}.weight"] = np.zeros((spec.cout, HIDDEN_PER_LAYER), np.float32)
                state[f"gains.{i}.bias"] = np.zeros(spec.cout, np.float32)
        expected = {"feat_mean": (1920,), "feat_std": (1920,), "hidden.weight": (HIDDEN_PER_LAYER * n, 1920),
                    "hidden.bias": (HIDDEN_PER_LAYER * n,), "conv_in.weight": (base, 3, 9, 9), "conv_in.bias": (base,),
                    "conv_out.weight": (3, base, 9, 9), "conv_out.bias": (3,)}
        for i, spec in enumerate(self.specs):
            expected.update({f"heads.{i}.weight": (spec.n_params, HIDDEN_PER_LAYER), f"heads.{i}.bias": (spec.n_params,),
                             f"gains.{i}.weight": (spec.cout, HIDDEN_PER_LAYER), f"gains.{i}.bias": (spec.cout,)})
        for key, shape in expected.items():
            if key not in state or state[key].shape != shape:
                got = "missing" if key not in state else f"shape {state[key].shape}"
                raise ValueError(f"{key}: {got}, expected {shape}")
        if len(state) != len(expected):
            raise ValueError(f"unexpected tensors {sorted(set(state) - set(expected))[:3]}")

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> tuple["MetaWeights", dict]:
        state, info = read_state(path, verify)
        try:
            return cls(state, int(info["base"])), info
        except ValueError as e:
            raise ModelError(f"{path}: weights do not fit a base-{info['base']} meta network ({e})") from None

    @property
    def hidden_dim(self) -> int:
        return self.state["hidden.bias"].shape[0]

    def encode_features(self, style_vec: np.ndarray) -> np.ndarray:
        """(B, 1920) VGG mean/std statistics → (B, 128·L) hidden state."""
        s = self.state
        z = (np.asarray(style_vec, np.float32) - s["feat_mean"]) / s["feat_std"]
        return np.maximum(z @ s["hidden.weight"].T + s["hidden.bias"], 0)

    def network(self, hidden: np.ndarray) -> dict[str, np.ndarray]:
        """(G, 128·L) or (128·L,) hidden states → parameters of G TransformNets (leading dim G on generated layers)."""
        s = self.state
        hidden = np.atleast_2d(np.asarray(hidden, np.float32))
        params = {k: s[k] for k in ("conv_in.weight", "conv_in.bias", "conv_out.weight", "conv_out.bias")}
        for i, spec in enumerate(self.specs):
            h = hidden[:, i * HIDDEN_PER_LAYER:(i + 1) * HIDDEN_PER_LAYER]
            flat = h @ s[f"heads.{i}.weight"].T + s[f"heads.{i}.bias"]
            n_w = spec.cout * spec.cin * spec.k * spec.k
            params[f"{spec.name}.weight"] = flat[:, :n_w].reshape(-1, spec.cout, spec.cin, spec.k, spec.k)
            params[f"{spec.name}.bias"] = flat[:, n_w:] * np.float32(BIAS_SCALE)
            params[f"{spec.name}.gain"] = 1 + (h @ s[f"gains.{i}.weight"].T + s[f"gains.{i}.bias"]) * np.float32(GAIN_SCALE)
        return params

    def random_hidden(self, seed: int = 0, spread: float = 1.0) -> np.ndarray:
        """A random style: z ~ N(0, 1) in the standardised input space, through the hidden layer (ReLU)."""
        z = np.random.default_rng(seed).standard_normal((1, 1920)).astype(np.float32)
        s = self.state
        return self.encode_features(s["feat_mean"] + s["feat_std"] * z * np.float32(spread))[0]


def noise_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) Gaussian noise around mid-grey (std 0.25) in [0, 1]: what a generated network turns into a texture."""
    rng = np.random.default_rng(seed)
    return np.clip(0.5 + 0.25 * rng.standard_normal((height, width, 3), dtype=np.float32), 0, 1)
