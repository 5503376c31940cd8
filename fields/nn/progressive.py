"""Progressive frequency masking: reveal coarse levels first, finer ones over training.

One schedule for every encoding with levels (frequencies of `Frequency` / `TriangleWave`, bands
of `SphericalHarmonics`, resolutions of the grids and triplanes), as in BARF (Lin et al. 2021),
Nerfies' coarse-to-fine positional encoding (Park et al. 2021) and the coarse-to-fine hash
levels of Neuralangelo (Li et al. 2023); SAPE (Hertz et al. 2021) reveals frequencies
progressively in the same spirit (per point; here the schedule is global).

``alpha(step)`` grows linearly from `start_levels` at `start_step` to all levels at
`end_step`; level k is weighted by ``(1 - cos(pi * clamp(alpha - k, 0, 1))) / 2``.

    schedule = CoarseToFine(start_step=0, end_step=2000, start_levels=2)
    for step in range(n_steps):
        schedule.apply(model, step)   # sets the progress of every encoding in `model`
        ...
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fields.nn.encoding import InputEncoding


@dataclass
class CoarseToFine:
    start_step: int = 0
    end_step: int = 1000
    start_levels: float = 1.0

    def __post_init__(self) -> None:
        if self.end_step <= self.start_step:
            raise ValueError(
                f"CoarseToFine: end_step ({self.end_step}) must be after start_step "
                f"({self.start_step})"
            )
        if self.start_levels < 0:
            raise ValueError(f"CoarseToFine: start_levels must be >= 0, got {self.start_levels}")

    def alpha(self, step: int, n_levels: int) -> float | None:
        """The progress for an encoding of n_levels at `step` (None once all are revealed)."""
        t = (step - self.start_step) / (self.end_step - self.start_step)
        if t >= 1.0:
            return None
        t = max(t, 0.0)
        return self.start_levels + (n_levels - self.start_levels) * t

    def apply(self, module: nn.Module, step: int) -> None:
        """Sets the progress of every encoding with levels inside `module`."""
        for m in module.modules():
            if isinstance(m, InputEncoding) and m.n_levels > 0:
                m.set_progress(self.alpha(step, m.n_levels))
