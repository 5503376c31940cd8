"""Distillation between radiance-field architectures (PVD, "One is All", Fang et al. 2023;
KiloNeRF's recipe, Reiser et al. 2021): a trained field (the teacher) teaches a student of
another architecture (`fields.nerf.MODELS`: ngp, vanilla, planes, kilo) in two stages.

1. Matching (the first `DistillConfig.stage1` of the budget): each step draws points where
   the teacher says the scene is, half along training rays (the teacher's occupancy grid
   marches them; samples behind opaque content, transmittance below the teacher's threshold,
   are dropped; each sample at a random place in its step) and half uniform in the teacher's
   occupied cells with random view directions, and the student learns the teacher's density
   and colour there: a Huber loss on the log of each sample's opacity per marching step,
   ``log(sigma * step + 1e-4)`` (the teacher's capped at 10: beyond that a sample is opaque
   either way), plus the squared colour difference. The student's occupancy grid is the
   teacher's.
2. Fine-tuning (the rest): the photometric loss on the training images, as `NerfTask` trains,
   plus the same density term on fewer teacher samples (a kilo student fine-tuned on the
   images alone grew soft surfaces and haze that its renderer could not skip: 3x the density
   evaluations per frame, and 1.2 dB lower held-out PSNR, with its own grid updated),
   rendering through the teacher's occupancy grid (KiloNeRF's recipe).

The learning-rate schedule (warm-up, decay) runs once in each stage. The result is an
ordinary NeRF checkpoint of the student's architecture.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from fields.config import dataclass_from_dict
from fields.data.dataset import SceneData, Split
from fields.nerf.model import LoadedNerf, NerfConfig, NerfTask, render_camera
from fields.nn.backend import scope
from fields.render.volrend import prune_in_rounds


@dataclass
class DistillConfig:
    """`stage1`: fraction of the budget spent matching the teacher (the rest fine-tunes on the
    images); `points`: samples per matching step; `ray_fraction`: the share of them along
    training rays (the rest uniform in the occupied cells); `density_weight`: the density
    term's weight against the colour term; `fine_tune_density_points`: teacher samples per
    fine-tuning step on which the density keeps matching the teacher's (the same term and
    weight; 0: images only), so that surfaces stay as opaque and space as empty as the
    teacher's, which is what lets rays terminate early; `keep_teacher_grid`: the student
    renders through the teacher's occupancy grid, never updated (KiloNeRF's recipe), rather
    than updating its own while fine-tuning; `fine_tune_colour_weight`: the weight of the
    colour matching on those same teacher samples (their random view directions) while
    fine-tuning (0: the density only), which holds the student's view-dependent colour to the
    teacher's in directions the training images do not show; None: 4 for KiloNeRF's tiny
    networks (each cell's colour network sees its cell from the few training views that
    reach it), 0 for the other students."""

    stage1: float = 0.5
    points: int = 2**16
    ray_fraction: float = 0.5
    density_weight: float = 0.1
    fine_tune_density_points: int = 2**14
    keep_teacher_grid: bool = True
    fine_tune_colour_weight: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.stage1 <= 1.0:
            raise ValueError(f"DistillConfig: stage1 must be a fraction in [0, 1], got "
                             f"{self.stage1}")
        if not 0.0 <= self.ray_fraction <= 1.0:
            raise ValueError(f"DistillConfig: ray_fraction must be in [0, 1], got "
                             f"{self.ray_fraction}")
        if isinstance(self.points, bool) or not isinstance(self.points, int) or \
                self.points < 64:
            raise ValueError(f"DistillConfig: points must be an integer >= 64, got "
                             f"{self.points!r}")
        if not self.density_weight >= 0.0:
            raise ValueError(f"DistillConfig: density_weight must be >= 0, got "
                             f"{self.density_weight}")
        if self.fine_tune_colour_weight is not None and not self.fine_tune_colour_weight >= 0.0:
            raise ValueError(f"DistillConfig: fine_tune_colour_weight must be >= 0, got "
                             f"{self.fine_tune_colour_weight}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistillConfig:
        """The config with the keys of `d` (ValueError naming unknown keys or bad values)."""
        return dataclass_from_dict(cls, d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def opacity_log(sigma: torch.Tensor, step: float) -> torch.Tensor:
    """log(sigma * step + 1e-4): what the matching stage compares densities by."""
    return torch.log(sigma * step + 1e-4)


class DistillTask(NerfTask):
    """A `NerfTask` for the student whose first stage learns from the teacher's samples (see
    the module's doc)."""

    def __init__(self, data: SceneData, config: NerfConfig, teacher: LoadedNerf,
                 distill: DistillConfig, seed: int = 0, device: str | torch.device = "cpu"
                 ) -> None:
        super().__init__(data, config, seed=seed, device=device)
        if teacher.info["unbounded"] != data.unbounded:
            raise ValueError("the teacher was fitted to an "
                             f"{'un' if teacher.info['unbounded'] else ''}bounded scene, these "
                             f"images are {'un' if data.unbounded else ''}bounded")
        self.teacher = teacher
        teacher.model.to(self.device)
        teacher.grid.to(self.device)
        for p in teacher.model.parameters():
            p.requires_grad_(False)
        if distill.fine_tune_colour_weight is None:
            distill = replace(distill, fine_tune_colour_weight=4.0 if config.kilo else 0.0)
        self.distill = distill
        self.stage = 1 if distill.stage1 > 0 else 2
        self.stage2_step = 0
        self.teacher_rays = 1024
        self._copy_teacher_grid()
        self.update_grid = not distill.keep_teacher_grid

    @property
    def objective_version(self) -> int:
        """1 in the matching stage, 2 when fine-tuning (the divergence guard starts anew)."""
        return self.stage

    def _copy_teacher_grid(self) -> None:
        """The student's occupancy grid: the teacher's (resampled when the sizes differ)."""
        t, s = self.teacher.grid, self.grid
        with torch.no_grad():
            if t.resolution == s.resolution:
                s.density.copy_(t.density)
                s.occupied.copy_(t.occupied)
                return
            r = s.resolution
            cells = torch.arange(r ** 3, device=s.density.device)
            pts = s.cell_points(cells, self.generator)
            dens = torch.cat([self.teacher.model.density(p) * self.settings.step_size
                              for p in pts.split(2**16)])
            s.density.copy_(dens.reshape(r, r, r))
            s.occupied.copy_(s.density > min(self.config.occupancy_threshold,
                                             float(s.density.mean())))

    def learning_rate(self, step: int, progress: float) -> float:
        """The schedule of `NerfConfig` run once per stage."""
        c = self.distill.stage1
        if self.stage == 1:
            return super().learning_rate(step, progress / max(c, 1e-9))
        return super().learning_rate(step - self.stage2_step,
                                     (progress - c) / max(1.0 - c, 1e-9))

    def teacher_samples(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """About n points (P, 3) and unit view directions (P, 3): along training rays where the
        teacher's renderer keeps samples, and uniform in its occupied cells."""
        t = self.teacher
        g = self.generator
        n_ray = round(n * self.distill.ray_fraction)
        xs, ds = [], []
        if n_ray > 0:
            with scope("phase:teacher rays"):
                o, d, _, _ = self.rays.sample(self.teacher_rays, g, False, False)
                o, d = o.to(self.device), d.to(self.device)
                ri, ts, te, offsets = t.grid.sample(o, d, t.settings.near, t.settings.far,
                                                    t.settings.step_size,
                                                    cone_angle=t.settings.cone_angle)
                if ri.numel():
                    u = torch.rand(ts.shape, generator=g).to(self.device)
                    x = o.index_select(0, ri) + d.index_select(0, ri) * \
                        (ts + u * (te - ts))[:, None]
                    keep = prune_in_rounds(lambda i: t.model.density(x.index_select(0, i)),
                                           ts, te, ri, offsets,
                                           transmittance_threshold=t.settings
                                           .transmittance_threshold)
                    xs.append(x.index_select(0, keep)[:n_ray])
                    ds.append(d.index_select(0, ri.index_select(0, keep))[:n_ray])
                got = int(xs[0].shape[0]) if xs else 0
                per_ray = max(int(keep.numel()) if ri.numel() else 0, 1) / self.teacher_rays
                self.teacher_rays = int(min(2**16, max(256, 1.1 * n_ray / per_ray)))
                n_ray = got
        n_uni = n - n_ray
        occupied = t.grid.occupied.reshape(-1).nonzero().squeeze(1)
        if n_uni > 0 and occupied.numel():
            pick = torch.randint(0, occupied.numel(), (n_uni,), generator=g).to(self.device)
            cells = occupied.index_select(0, pick)
            xs.append(t.grid.cell_points(cells.cpu(), g).to(self.device))
            dirs = torch.randn(n_uni, 3, generator=g).to(self.device)
            ds.append(dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-9))
        if not xs:
            raise ValueError("the teacher's occupancy grid is empty: nothing to distil")
        return torch.cat(xs), torch.cat(ds)

    def train_step(self, step: int, progress: float) -> dict[str, float]:
        if self.stage == 1 and progress >= self.distill.stage1:
            self.stage = 2
            self.stage2_step = step
        if self.stage == 2:
            return super().train_step(step, progress)
        return self._match_step(step, progress)

    def density_loss(self, x: torch.Tensor, sigma_s: torch.Tensor,
                     sigma_t: torch.Tensor | None = None) -> torch.Tensor:
        """The Huber loss between the student's and the teacher's log opacity per step at x."""
        if sigma_t is None:
            with torch.no_grad(), scope("phase:teacher"):
                sigma_t = self.teacher.model.density(x)
        delta = self.settings.step_size
        target = opacity_log(sigma_t.clamp(max=10.0 / delta), delta)
        return F.huber_loss(opacity_log(sigma_s, delta), target)

    def extra_loss(self) -> torch.Tensor | None:
        """While fine-tuning: the density matching on `fine_tune_density_points` teacher
        samples, weighted as in the first stage, and with `fine_tune_colour_weight` the colour
        matching there too."""
        n = self.distill.fine_tune_density_points
        wd, wc = self.distill.density_weight, self.distill.fine_tune_colour_weight or 0.0
        if self.stage != 2 or n <= 0 or (wd == 0 and wc == 0):
            return None
        x, d = self.teacher_samples(n)
        if wc == 0:
            return wd * self.density_loss(x, self.model.density(x))
        with torch.no_grad(), scope("phase:teacher"):
            sigma_t, rgb_t = self.teacher.model(x, d)
        sigma_s, rgb_s = self.model(x, d)
        return (wd * self.density_loss(x, sigma_s, sigma_t)
                + wc * (rgb_s - rgb_t).square().mean())

    def _match_step(self, step: int, progress: float) -> dict[str, float]:
        lr = self.learning_rate(step, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, d = self.teacher_samples(self.distill.points)
        with torch.no_grad(), scope("phase:teacher"):
            sigma_t, rgb_t = self.teacher.model(x, d)
        sigma_s, rgb_s = self.model(x, d)
        density_loss = self.density_loss(x, sigma_s, sigma_t)
        colour_mse = (rgb_s - rgb_t).square().mean()
        loss = colour_mse + self.distill.density_weight * density_loss
        self.optimizer.zero_grad(set_to_none=True)
        with scope("phase:backward"):
            loss.backward()
        with scope("phase:optimiser"):
            self.optimizer.step()
        self.samples_trained += int(x.shape[0])
        colour_mse, density_loss = float(colour_mse.detach()), float(density_loss.detach())
        return {"loss": float(loss.detach()), "colour_mse": colour_mse,
                "density_loss": density_loss,
                "psnr": -10.0 * math.log10(max(colour_mse, 1e-10)),
                "samples": float(x.shape[0]), "lr": lr}

    def state_dict(self) -> dict[str, object]:
        """`NerfTask`'s, and the stage."""
        return {**super().state_dict(), "stage": self.stage, "stage2_step": self.stage2_step,
                "teacher_rays": self.teacher_rays}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restores what `state_dict` gave."""
        state = dict(state)
        self.stage = int(state.pop("stage", self.stage))  # type: ignore[arg-type]
        self.stage2_step = int(state.pop("stage2_step", 0))  # type: ignore[arg-type]
        self.teacher_rays = int(state.pop("teacher_rays", 1024))  # type: ignore[arg-type]
        super().load_state_dict(state)

    def checkpoint_extra(self) -> dict[str, Any]:
        extra = super().checkpoint_extra()
        extra["nerf"] = {**extra["nerf"], "distilled": {"config": self.distill.to_dict()}}
        return extra


def teacher_psnr(teacher: LoadedNerf, split: Split, background: torch.Tensor) -> list[float]:
    """The teacher's PSNR on every view of `split` (its held-out views)."""
    from fields.metrics import psnr

    cameras = teacher.aligned(split.cameras)
    out = []
    with torch.no_grad():
        for i in range(len(split)):
            r = render_camera(teacher.model, teacher.grid, cameras, i, teacher.settings,
                              background)
            out.append(psnr(r["rgb"], split.images[i]))
    return out
