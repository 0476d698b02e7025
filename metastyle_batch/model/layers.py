"""The layers of the generated TransformNet (no torch: both runtimes and the meta network read this)."""

from __future__ import annotations

from dataclasses import dataclass


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
