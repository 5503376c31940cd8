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

`SpatialProgress` is the spatially adaptive variant (SAPE): a dense grid of per-cell alphas
over [0, 1]^D; cells whose recent error stays above a threshold reveal further levels, so
detailed regions get high frequencies while smooth ones stay band-limited:

    progress = SpatialProgress(n_dims=2, n_levels=enc.n_levels, resolution=32)
    enc.set_progress(progress)
    ...  # per step, with per-sample errors err (N,):
    progress.update(x, err, threshold=1e-3, rate=0.05)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fields.nn.encoding import InputEncoding


@dataclass
class CoarseToFine:
    """A coarse-to-fine schedule: from `start_step` to `end_step` an encoding's levels are
    revealed linearly from `start_levels` to all of them (`apply(model, step)`)."""

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


class SpatialProgress(nn.Module):
    """Per-point progress from a dense grid of alphas over [0, 1]^n_dims (nearest cell).

    Pass it to `InputEncoding.set_progress`; call `update` with per-sample errors to advance
    the cells whose mean error exceeds a threshold. The alphas are a buffer, so they are saved
    with the model's state dict.
    """

    def __init__(
        self, n_dims: int, n_levels: int, resolution: int = 32, start_levels: float = 1.0
    ) -> None:
        super().__init__()
        if not 1 <= n_dims <= 4:
            raise ValueError(f"SpatialProgress: n_dims must be 1..4, got {n_dims}")
        if resolution < 1 or n_levels < 1:
            raise ValueError("SpatialProgress: resolution and n_levels must be positive")
        self.n_dims = n_dims
        self.n_levels = n_levels
        self.resolution = resolution
        self.register_buffer("alpha", torch.full((resolution**n_dims,), float(start_levels)))

    def cell(self, x: torch.Tensor) -> torch.Tensor:
        """Flat cell index (...) of points x (..., n_dims), clamped to the box."""
        r = self.resolution
        c = (x.detach().clamp(0.0, 1.0) * r).long().clamp(max=r - 1)
        strides = r ** torch.arange(self.n_dims, device=x.device)
        return (c * strides).sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha[self.cell(x)]


    @torch.no_grad()
    def update(
        self, x: torch.Tensor, error: torch.Tensor, threshold: float, rate: float = 0.05
    ) -> None:
        """Advances by `rate` levels every cell whose mean `error` over the samples x in it
        is above `threshold` (cells without samples stay)."""
        idx = self.cell(x).reshape(-1)
        err = error.detach().reshape(-1).to(self.alpha.dtype)
        total = torch.zeros_like(self.alpha).index_add_(0, idx, err)
        count = torch.zeros_like(self.alpha).index_add_(0, idx, torch.ones_like(err))
        above = (count > 0) & (total > threshold * count)
        self.alpha[above] = (self.alpha[above] + rate).clamp(max=float(self.n_levels))
