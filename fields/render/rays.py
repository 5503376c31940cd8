"""Ray batches: random training rays through the pixels of posed images.

`RayBatcher` holds every training pixel of a split (its camera, its position, its colour and
alpha) and draws batches of rays through them; radiance fields (`fields.nerf`) and NeuS
(`fields.sdf.neus`) train on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # the data layer reads images into splits; rays need only its shape
    from fields.data.dataset import Split


class RayBatcher:
    """All training pixels and random batches of rays through them.

    Holds each pixel's camera and integer position, its colour (P, 3) composited on the data
    set's background and, when the images had alpha, alpha (P, 1) for random backgrounds.
    Rays are made per batch: through the pixel centre, or (`jitter`) through a uniformly
    random point of the pixel, so that the field learns the pixel's footprint rather than
    one point of it (instant-ngp does the same)."""

    def __init__(self, split: Split, background: torch.Tensor) -> None:
        """`split`: the training images (n, H, W, 3), optional alpha (n, H, W, 1) and their
        cameras; `background`: (3,) the colour the images were composited on."""
        self.cameras = split.cameras
        n, h, w = len(split), self.cameras.height, self.cameras.width
        self.hw = (h, w)
        self.colors = split.images.reshape(-1, 3).contiguous()
        self.alpha = None if split.alpha is None else split.alpha.reshape(-1, 1).contiguous()
        self.background = background
        self.n = n * h * w
        # the pixels to train on (Split.mask), or None for all of them
        self.valid = None if split.mask is None else \
            torch.nonzero(split.mask.reshape(-1)).reshape(-1)
        if self.valid is not None and self.valid.numel() == 0:
            raise ValueError("RayBatcher: the masks leave no pixel to train on")

    def sample(
        self, n_rays: int, generator: torch.Generator, random_background: bool,
        jitter: bool = True, part: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`n_rays` = R random training pixels: origins (R, 3), unit directions (R, 3),
        target colours (R, 3) and the background, (R, 3) random colours with
        `random_background` (when the images have alpha), else the (3,) data set's. Which
        pixels (R,) is kept as `last_index` (for per-pixel targets such as masks). With the
        split's `mask`, only its pixels are drawn. `part` = (start, stop): the whole batch is
        drawn (the same draws from `generator`), and only its rays [start, stop) are made and
        returned (a rank's share, `fields.distributed.shard_bounds`)."""
        if self.valid is None:
            idx = torch.randint(0, self.n, (n_rays,), generator=generator)
        else:
            idx = self.valid[torch.randint(0, self.valid.numel(), (n_rays,),
                                           generator=generator)]
        if jitter:
            offset = torch.rand(2, n_rays, generator=generator)
        else:
            offset = torch.full((2, n_rays), 0.5)
        rand_bg = random_background and self.alpha is not None
        bg = torch.rand(n_rays, 3, generator=generator) if rand_bg else self.background
        if part is not None:
            lo, hi = part
            idx, offset = idx[lo:hi], offset[:, lo:hi]
            if rand_bg:
                bg = bg[lo:hi]
        self.last_index = idx  # which pixels (for per-pixel targets such as masks)
        h, w = self.hw
        cam = idx // (h * w)
        pix = idx % (h * w)
        u = (pix % w).float() + offset[0]
        v = (pix // w).float() + offset[1]
        origins, directions = self.cameras.rays(cam, u, v)
        target = self.colors[idx]
        if rand_bg:
            a = self.alpha[idx]
            target = target + (1.0 - a) * (bg - self.background)
        return origins, directions, target, bg


class RayBatchState:
    """What ray-batch training tasks share (a mixin of `fields.nerf.NerfTask` and
    `fields.dynamic.DynamicTask`): the learning-rate schedule of their `config` (`lr`,
    `warmup_steps`, `lr_decay_start`, `lr_decay`), and what they keep besides the module and
    optimiser, for resume: the adaptive batch size `n_rays`, the counts `rays_trained` /
    `samples_trained` and the sampling `generator`."""

    config: Any
    n_rays: int
    rays_trained: int
    samples_trained: int
    generator: torch.Generator

    def learning_rate(self, step: int, progress: float) -> float:
        """Linear warm-up over `warmup_steps`, then from `lr_decay_start` of the budget an
        exponential decay to `lr * lr_decay` at its end."""
        c = self.config
        warm = min(1.0, (step + 1) / max(c.warmup_steps, 1))
        late = max(0.0, progress - c.lr_decay_start) / max(1.0 - c.lr_decay_start, 1e-9)
        return c.lr * warm * c.lr_decay**late

    def state_dict(self) -> dict[str, object]:
        """The counters and the generator's state."""
        return {"n_rays": self.n_rays, "rays_trained": self.rays_trained,
                "samples_trained": self.samples_trained,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restores what `state_dict` gave."""
        self.n_rays = int(state["n_rays"])  # type: ignore[call-overload]
        self.rays_trained = int(state["rays_trained"])  # type: ignore[call-overload]
        self.samples_trained = int(state["samples_trained"])  # type: ignore[call-overload]
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]
