"""Radiance fields that move: density and colour at (x, t), seen along d.

Two models (`DynamicConfig.model`), and a baseline:

- ``"planes"`` (K-Planes, Fridovich-Keil et al. 2023; HexPlane, Cao and Johnson 2023): the
  space-time point (x, y, z, t) is encoded by six multiresolution feature planes (xy, xz, yz,
  xt, yt, zt; `fields.nn.triplane` as ``"KPlanes"``: dense 2-D grids on the C++ kernels),
  multiplied per level, decoded by a small density MLP and a view-dependent colour MLP. The
  planes are regularised by total variation, time smoothness and sparse motion (L1 of the
  space-time planes from 1), with the papers' weights.
- ``"deform"`` (D-NeRF, Pumarola et al. 2021, with a grid: a 4-D hash grid of (x, t) and an
  MLP give an offset into a canonical space, where a static instant-ngp field (3-D hash grid,
  density and colour MLPs) is evaluated.
- ``"static"``: the canonical field alone, time ignored: what a static radiance field makes
  of the same images on the same training and rendering code (the baseline that shows what
  time adds; `fields bench dynamic`).

Empty space is skipped at every time by an occupancy grid over space whose cells hold the
largest density seen at any time (`TimeOccupancy`: each refresh evaluates every visited cell
at `occupancy_times` stratified random times, and the running maximum keeps what any time
had), so one marching pass serves rays of any time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from fields.config import dataclass_from_dict, require_positive
from fields.data.dataset import SceneData, Split
from fields.nn.backend import scope
from fields.nn.config import from_config
from fields.nn.encoding_config import encoding_from_config, hash_grid_config
from fields.render.occupancy import OccupancyGrid, contract
from fields.render.rays import RayBatchState
from fields.render.volrend import composite, offsets_from_indices, prune_in_rounds

MODELS = ("planes", "deform", "static")


def _mlp(width: int, hidden: int, out: str = "None") -> dict[str, Any]:
    return {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": out,
            "n_neurons": width, "n_hidden_layers": hidden}


@dataclass
class DynamicConfig:
    """A dynamic radiance field and how it is rendered and trained.

    Model: `model` "planes" (`planes`: a KPlanes encoding config; when not set, its
    `resolution` puts the finest level at half the training images' longer side, within
    32..512, and its time_resolution is half the training times) or "deform"
    (`deform_encoding`: a 4-D grid of (x, t) -> `deform_network` -> offset, times
    `deform_scale`, into the canonical `encoding`; None: a hash grid sized as the static
    model's) or "static" (the canonical `encoding` alone, time ignored: the baseline); then
    `density_network` -> log-density + `geo_features`, and with the
    `direction_encoding` -> `color_network` -> RGB.

    Regularisers (planes): `tv_weight` (total variation of every plane), `time_smooth_weight`
    (second differences along time), `time_l1_weight` (|1 - feature| of the space-time
    planes); (deform): `deform_weight` x mean squared offset.

    Rendering and training as the static model's (`fields.nerf.NerfConfig`): occupancy grid of
    `grid_resolution`^3 cells refreshed every `occupancy_every` steps at `occupancy_times`
    times, `render_steps` steps across the box's diagonal, a ray batch aiming at
    `target_samples` samples, Adam with `lr` decaying from `lr_decay_start` of the budget to
    `lr * lr_decay`.
    """

    model: str = "planes"
    planes: dict[str, Any] = field(default_factory=lambda: {
        "otype": "KPlanes", "n_features": 8, "n_levels": 3, "per_level_scale": 2.0})
    deform_encoding: dict[str, Any] = field(default_factory=lambda: {
        "otype": "HashGrid", "n_levels": 8, "n_features_per_level": 2,
        "log2_hashmap_size": 17, "base_resolution": 4, "per_level_scale": 1.5})
    deform_network: dict[str, Any] = field(default_factory=lambda: _mlp(64, 1))
    deform_scale: float = 0.25
    encoding: dict[str, Any] | None = None
    density_network: dict[str, Any] = field(default_factory=lambda: _mlp(64, 1))
    direction_encoding: dict[str, Any] = field(
        default_factory=lambda: {"otype": "SphericalHarmonics", "degree": 4})
    color_network: dict[str, Any] = field(default_factory=lambda: _mlp(64, 2, "Sigmoid"))
    geo_features: int = 15
    density_bias: float = -1.0
    tv_weight: float = 2e-4
    time_smooth_weight: float = 1e-3
    time_l1_weight: float = 1e-4
    deform_weight: float = 1e-3
    grid_resolution: int = 64
    occupancy_every: int = 16
    occupancy_warmup: int = 256
    occupancy_threshold: float = 0.01
    occupancy_times: int = 4
    render_steps: int = 512
    transmittance_threshold: float = 1e-4
    target_samples: int = 2**16
    initial_rays: int = 4096
    max_rays: int = 2**14
    lr: float = 1e-2
    lr_decay: float = 0.05
    lr_decay_start: float = 0.5
    warmup_steps: int = 100
    weight_decay: float = 1e-6
    random_background: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DynamicConfig:
        """The config with the keys of `d` (others default); ValueError naming unknown keys,
        values of the wrong type, a model not in `MODELS` and sizes that are not positive."""
        cfg = dataclass_from_dict(cls, d)
        if cfg.model not in MODELS:
            raise ValueError(f"DynamicConfig: model must be one of {', '.join(MODELS)}, got "
                             f"{cfg.model!r}")
        require_positive("DynamicConfig", cfg, (
            "lr", "grid_resolution", "render_steps", "target_samples", "initial_rays",
            "max_rays", "occupancy_times", "occupancy_every"))
        for key in ("tv_weight", "time_smooth_weight", "time_l1_weight", "deform_weight"):
            if getattr(cfg, key) < 0:
                raise ValueError(f"DynamicConfig: {key} must be >= 0, got {getattr(cfg, key)}")
        return cfg

    def resolved(self, n_times: int | None = None,
                 image_size: int | None = None) -> DynamicConfig:
        """This config with what depends on the data filled in: the planes' spatial resolution
        (`plane_resolution` of the images' longer side `image_size`; without it, the
        encoding's own default), their time resolution (half the `n_times` distinct training
        times, at least 4, as K-Planes) and the canonical hash grid (deform model)."""
        out = self
        if out.encoding is None:
            out = replace(out, encoding=hash_grid_config(256, log2_hashmap_size=18))
        if image_size is not None and out.planes.get("resolution") is None:
            out = replace(out, planes={**out.planes, "resolution": plane_resolution(
                image_size, int(out.planes.get("n_levels", 3)),
                float(out.planes.get("per_level_scale", 2.0)))})
        if n_times is not None and out.planes.get("time_resolution") is None:
            res = int(out.planes.get("resolution", 32))
            out = replace(out, planes={**out.planes,
                                       "time_resolution": max(2, min(res, max(4, n_times // 2)))})
        return out


def plane_resolution(image_size: int, n_levels: int, per_level_scale: float) -> int:
    """The base resolution of `n_levels` plane levels growing by `per_level_scale` whose finest
    level is half the images' longer side `image_size`, kept within 32..512. Finer planes
    overfit the training views: on the built-in 96-pixel scene (3 levels), finest levels of
    48, 64, 96, 128 and 256 cells gave held-out PSNRs of 28.65, 28.49, 28.26, 28.06 and
    27.75 dB after 5 minutes (one run each, 2026-12-05; K-Planes' DyNeRF setting is 512 for
    676-pixel images)."""
    finest = min(512, max(32, int(image_size) // 2))
    return max(2, round(finest / per_level_scale ** max(n_levels - 1, 0)))


class DynamicField(nn.Module):
    """Density and view-dependent colour at world points x (P, 3) and times t (P,) (see
    `DynamicConfig`): in a bounded scene box (`contraction` "none"), or everywhere with
    space outside the box contracted ("mipnerf360", unbounded captures)."""

    def __init__(self, aabb: torch.Tensor, config: DynamicConfig,
                 contraction: str = "none") -> None:
        super().__init__()
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3))
        self.contraction = contraction
        self.config = config = config.resolved()
        if config.model == "planes":
            self.encoding = encoding_from_config(4, config.planes, "DynamicConfig.planes")
            if not hasattr(self.encoding, "total_variation"):
                raise ValueError("DynamicConfig.planes: expected a KPlanes (or Triplane) "
                                 f"encoding, got {config.planes.get('otype')!r}")
        else:
            if config.model == "deform":
                self.deform_encoding = encoding_from_config(4, config.deform_encoding,
                                                            "DynamicConfig.deform_encoding")
                self.deform_network = from_config(config.deform_network,
                                                  self.deform_encoding.n_output_dims, 3)
            self.encoding = encoding_from_config(3, config.encoding, "DynamicConfig.encoding")
        self.density_network = from_config(config.density_network, self.encoding.n_output_dims,
                                           1 + config.geo_features)
        self.direction_encoding = encoding_from_config(3, config.direction_encoding)
        self.color_network = from_config(
            config.color_network, self.direction_encoding.n_output_dims + config.geo_features, 3)
        self.last_offsets: torch.Tensor | None = None

    def _features(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = contract(x, self.aabb.reshape(6), self.contraction)
        inside = ((g >= 0) & (g <= 1)).all(dim=-1)
        g = g.clamp(0.0, 1.0)
        gt = torch.cat((g, t.reshape(-1, 1).to(g.dtype)), dim=-1) \
            if self.config.model != "static" else g
        if self.config.model == "planes":
            e = self.encoding(gt)
        elif self.config.model == "static":
            e = self.encoding(g)
        else:
            off = self.deform_network(self.deform_encoding(gt)) * self.config.deform_scale
            self.last_offsets = off
            e = self.encoding((g + off).clamp(0.0, 1.0))
        h = self.density_network(e)
        sigma = torch.exp(torch.clamp(h[:, 0] + self.config.density_bias, max=15.0))
        if self.contraction == "none":
            sigma = sigma * inside
        return sigma, h[:, 1:]

    def density(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Density (P,) at points x (P, 3) and times t (P,)."""
        return self._features(x, t)[0]

    def view_features(self, d: torch.Tensor) -> torch.Tensor:
        return self.direction_encoding((d + 1.0) * 0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor, view: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Density (P,) and colour (P, 3) at x (P, 3), t (P,) with `view_features` (P, ...)."""
        sigma, feat = self._features(x, t)
        return sigma, self.color_network(torch.cat((view, feat), dim=-1))

    def regulariser(self) -> torch.Tensor:
        """The weighted regularisers of the model (see `DynamicConfig`), a scalar."""
        c = self.config
        if c.model == "planes":
            enc = self.encoding
            return (c.tv_weight * enc.total_variation()
                    + c.time_smooth_weight * enc.time_smoothness()
                    + c.time_l1_weight * enc.time_l1())
        if self.last_offsets is None or c.deform_weight == 0:
            return self.aabb.new_zeros(())
        return c.deform_weight * self.last_offsets.square().sum(-1).mean()


class TimeOccupancy(OccupancyGrid):
    """An occupancy grid valid at every time: `update_over_time` gives each visited cell the
    largest density of `times` stratified random times (one in each of `times` equal
    intervals of [0, 1]); the grid's running maximum (instant-ngp's decaying max) then holds
    what any recent time had; and the occupied cells are dilated by one cell, so that a cell
    that content only grazes (its random point missed it) or that content reaches between
    the sampled times, next to one where it was found, is marched too."""

    def update_over_time(self, step: int, density_fn: Any, times: int,
                         generator: torch.Generator | None = None, **kwargs: Any) -> None:
        """`density_fn(x (P, 3), t (P,)) -> (P,)`; other arguments as `OccupancyGrid.update`."""
        u = torch.rand(times, generator=generator)
        stamps = ((torch.arange(times) + u) / times).tolist()

        def over_time(x: torch.Tensor) -> torch.Tensor:
            out = None
            for s in stamps:  # a few times, each over every point at once
                sigma = density_fn(x, torch.full((x.shape[0],), s, device=x.device))
                out = sigma if out is None else torch.maximum(out, sigma)
            return out

        self.update(step, over_time, generator=generator, **kwargs)
        grown = torch.nn.functional.max_pool3d(self.occupied[None, None].float(), 3, 1, 1)
        self.occupied.copy_(grown[0, 0] > 0)


@dataclass
class DynamicSettings:
    """How rays are marched: `step_size` (world units), the transmittance threshold, and for
    unbounded scenes the `cone_angle` (steps growing with distance) and near / far planes."""

    step_size: float
    transmittance_threshold: float = 1e-4
    cone_angle: float = 0.0
    near: float = 0.0
    far: float = 1e10

    @classmethod
    def for_scene(cls, aabb: torch.Tensor, config: DynamicConfig, unbounded: bool = False,
                  near: float = 0.0, far: float = 1e10) -> DynamicSettings:
        diag = float((aabb[1] - aabb[0]).norm())
        if unbounded and far > 1e9:
            far = 1e3 * diag
        return cls(diag / config.render_steps, config.transmittance_threshold,
                   1.0 / 256 if unbounded else 0.0, near, far)


def render_rays_at(field_: DynamicField, grid: OccupancyGrid, origins: torch.Tensor,
                   directions: torch.Tensor, times: torch.Tensor, settings: DynamicSettings,
                   background: torch.Tensor) -> dict[str, torch.Tensor]:
    """Renders rays (R, 3) + unit directions (R, 3) at times (R,) on `background` ((3,) or
    (R, 3)): {"rgb", "opacity", "depth", "n_samples"} as `fields.nerf.render_rays`. Samples
    behind opaque content are pruned without gradients before the field is evaluated."""
    n_rays = origins.shape[0]
    background = background.to(origins.device)
    with scope("phase:marching"):
        ray_indices, t_starts, t_ends, offsets = grid.sample(
            origins, directions, settings.near, settings.far, settings.step_size,
            cone_angle=settings.cone_angle)

    def points(ri: torch.Tensor, ts: torch.Tensor, te: torch.Tensor) -> torch.Tensor:
        return origins.index_select(0, ri) + directions.index_select(0, ri) * \
            (0.5 * (ts + te))[:, None]

    if ray_indices.shape[0] > 0:
        with scope("phase:pruning"), torch.no_grad():
            def density(i: torch.Tensor) -> torch.Tensor:
                ri = ray_indices.index_select(0, i)
                return field_.density(points(ri, t_starts.index_select(0, i),
                                             t_ends.index_select(0, i)),
                                      times.index_select(0, ri))

            keep = prune_in_rounds(density, t_starts, t_ends, ray_indices, offsets,
                                   transmittance_threshold=settings.transmittance_threshold)
            ray_indices, t_starts, t_ends = (v.index_select(0, keep)
                                             for v in (ray_indices, t_starts, t_ends))
            offsets = offsets_from_indices(ray_indices, n_rays)
    with scope("phase:field forward"):
        view = field_.view_features(directions).index_select(0, ray_indices)
        sigmas, rgbs = field_(points(ray_indices, t_starts, t_ends),
                              times.index_select(0, ray_indices), view)
    with scope("phase:compositing"):
        out = composite(sigmas, rgbs, t_starts, t_ends, ray_indices, offsets, background)
    out["n_samples"] = torch.tensor(ray_indices.shape[0])
    return out


def render_camera_at(field_: DynamicField, grid: OccupancyGrid, cameras: Any, index: int,
                     time: float, settings: DynamicSettings, background: torch.Tensor,
                     chunk: int = 2**14) -> dict[str, torch.Tensor]:
    """One camera's image at `time`: {"rgb": (H, W, 3), "depth": (H, W, 1), "opacity"}."""
    origins, dirs = cameras.pixel_rays(index)
    parts: dict[str, list[torch.Tensor]] = {"rgb": [], "depth": [], "opacity": []}
    with torch.no_grad():
        for o, d in zip(origins.split(chunk), dirs.split(chunk), strict=True):
            t = torch.full((o.shape[0],), float(time))
            out = render_rays_at(field_, grid, o, d, t, settings, background)
            for k in parts:
                parts[k].append(out[k])
    h, w = cameras.height, cameras.width
    return {k: torch.cat(v).reshape(h, w, -1) for k, v in parts.items()}


def require_times(data: SceneData, where: str) -> None:
    """ValueError naming `where` unless every split of `data` has per-image times."""
    missing = [name for name, s in data.splits.items() if s.times is None]
    if missing:
        raise ValueError(f"{where}: split(s) {', '.join(missing)} have no per-frame 'time' "
                         "(a dynamic scene needs a time in [0, 1] on every frame: D-NeRF's "
                         "transforms_*.json or nerfstudio's transforms.json with 'time')")


class DynamicTask(RayBatchState):
    """One dynamic radiance-field training run for `fields.train.train`."""

    def __init__(self, data: SceneData, config: DynamicConfig, seed: int = 0,
                 eval_views: int = 4, eval_pixels: int = 2**13) -> None:
        from fields.render.rays import RayBatcher

        require_times(data, f"scene {data.name!r}")
        self.data = data
        cams = data.train.cameras
        self.config = config = config.resolved(len(set(data.train.times.tolist())),
                                                max(cams.width, cams.height))
        contraction = "mipnerf360" if data.unbounded else "none"
        self.model = DynamicField(data.aabb, config, contraction)
        self.grid = TimeOccupancy(data.aabb.reshape(6), config.grid_resolution, contraction)
        self.module = nn.ModuleDict({"field": self.model, "grid": self.grid})
        self.settings = DynamicSettings.for_scene(data.aabb, config, data.unbounded, data.near,
                                                  data.far)
        nets = [p for n, p in self.model.named_parameters() if "network" in n]
        net_ids = {id(p) for p in nets}
        rest = [p for p in self.model.parameters() if id(p) not in net_ids]
        self.optimizer = torch.optim.Adam(
            [{"params": rest, "weight_decay": 0.0},
             {"params": nets, "weight_decay": config.weight_decay}],
            lr=config.lr, betas=(0.9, 0.99), eps=1e-15)
        self.rays = RayBatcher(data.train, data.background)
        self.train_times = data.train.times
        self.n_rays = config.initial_rays
        self.generator = torch.Generator().manual_seed(seed)
        self.eval_views = eval_views
        self.eval_pixels = eval_pixels
        self.last_eval_images: list[dict[str, torch.Tensor]] = []
        self.rays_trained = 0
        self.samples_trained = 0

    def train_step(self, step: int, progress: float) -> dict[str, float]:
        c = self.config
        if step % c.occupancy_every == 0:
            with scope("phase:grid update"):
                self.grid.update_over_time(
                    step, lambda x, t: self.model.density(x, t) * self.settings.step_size,
                    1 if c.model == "static" else c.occupancy_times, generator=self.generator,
                    occ_thre=c.occupancy_threshold, warmup_steps=c.occupancy_warmup)
        lr = self.learning_rate(step, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        o, d, target, bg = self.rays.sample(self.n_rays, self.generator, c.random_background,
                                            False)
        image = self.rays.last_index // (self.rays.hw[0] * self.rays.hw[1])
        times = self.train_times.index_select(0, image)
        out = render_rays_at(self.model, self.grid, o, d, times, self.settings, bg)
        mse = (out["rgb"] - target).square().mean()
        n_samples = int(out["n_samples"])
        self.optimizer.zero_grad(set_to_none=True)
        reg = self.model.regulariser() if n_samples > 0 else mse.new_zeros(())
        if n_samples > 0:
            (mse + reg).backward()
            self.optimizer.step()
        rays = self.n_rays
        self.rays_trained += rays
        self.samples_trained += n_samples
        per_ray = max(n_samples, 1) / rays
        self.n_rays = int(min(c.max_rays, max(256, c.target_samples / per_ray)))
        loss = mse.item()
        return {"loss": loss, "psnr": -10.0 * math.log10(max(loss, 1e-10)),
                "reg": float(reg.detach()), "rays": float(rays), "samples": float(n_samples),
                "lr": lr}

    # -- evaluation --
    def render(self, split: Split, index: int) -> dict[str, torch.Tensor]:
        assert split.times is not None
        return render_camera_at(self.model, self.grid, split.cameras, index,
                                float(split.times[index]), self.settings, self.data.background)

    def evaluate(self, final: bool) -> dict[str, Any]:
        """PSNR (and SSIM when final) on held-out views at held-out times ("test"): every
        view when final (and the "val" split's seen views at held-out times, as
        ``psnr_seen_views``), else `eval_views` views spread over the split, on
        `eval_pixels` fixed pixels each."""
        from fields.metrics import mean_or_none, psnr, ssim

        split = self.data.eval_split()
        if not final:
            n = len(split)
            idx = torch.linspace(0, n - 1, min(self.eval_views, n)).round().long().unique()
            return {"psnr": sum(self._sampled_psnr(split, int(i)) for i in idx) / len(idx)}
        psnrs, ssims = [], []
        self.last_eval_images = []
        for i in range(len(split)):
            out = self.render(split, i)
            gt = split.images[i]
            psnrs.append(psnr(out["rgb"], gt))
            ssims.append(ssim(out["rgb"], gt))
            self.last_eval_images.append({**out, "gt": gt, "time": float(split.times[i])})
        scores: dict[str, Any] = {"psnr": sum(psnrs) / len(psnrs),
                                  "ssim": mean_or_none(ssims), "psnr_per_view": psnrs}
        val = self.data.splits.get("val")
        if val is not None and val is not split:
            seen = [psnr(self.render(val, i)["rgb"], val.images[i]) for i in range(len(val))]
            scores["psnr_seen_views"] = sum(seen) / len(seen)
        return scores

    def _sampled_psnr(self, split: Split, i: int) -> float:
        from fields.metrics import psnr

        h, w = split.cameras.height, split.cameras.width
        idx = torch.randperm(h * w, generator=torch.Generator().manual_seed(i))
        idx = idx[: self.eval_pixels] if 0 < self.eval_pixels < h * w else idx
        o, d = split.cameras.rays(torch.full_like(idx, i), (idx % w).float() + 0.5,
                                  (idx // w).float() + 0.5)
        t = split.times[i].expand(idx.shape[0])
        rgb = render_rays_at(self.model, self.grid, o, d, t, self.settings,
                             self.data.background)["rgb"]
        return psnr(rgb, split.images[i].reshape(-1, 3)[idx])

    # -- resume state: `RayBatchState` --
    def checkpoint_extra(self) -> dict[str, Any]:
        return {"kind": "dynamic", "dynamic": dynamic_info(self.data, self.config)}


def dynamic_info(data: SceneData, config: DynamicConfig) -> dict[str, Any]:
    """What rendering a checkpoint needs besides the weights: the config, the box, the
    background, the held-out cameras' intrinsics, an orbit (centre, radius, up) and the
    training times."""
    cams = data.train.cameras
    centres = cams.c2w[:, :, 3]
    up = cams.c2w[:, :, 1].mean(0)
    up = up / up.norm().clamp_min(1e-9)
    centre = data.aabb.mean(0)
    ec = data.eval_split().cameras
    times = data.train.times if data.train.times is not None else torch.zeros(0)
    return {
        "config": config.to_dict(),
        "aabb": data.aabb.tolist(),
        "unbounded": data.unbounded,
        "near": data.near,
        "far": min(data.far, 1e10),
        "background": data.background.tolist(),
        "scene": data.name,
        "camera": {"width": ec.width, "height": ec.height, "fx": float(ec.fx[0]),
                   "fy": float(ec.fy[0]), "cx": float(ec.cx[0]), "cy": float(ec.cy[0])},
        "orbit": {"centre": centre.tolist(),
                  "radius": float((centres - centre).norm(dim=-1).median()),
                  "up": up.tolist()},
        "times": sorted({round(float(t), 6) for t in times.tolist()}),
    }


class LoadedDynamic:
    """A dynamic checkpoint, ready to render at any time: model, grid, settings, info."""

    def __init__(self, path: str) -> None:
        from fields.checkpoint import read_kind_checkpoint

        payload, info = read_kind_checkpoint(path, "dynamic", "dynamic", "a dynamic-field")
        self.info = info
        self.config = DynamicConfig.from_dict(info["config"])
        aabb = torch.tensor(info["aabb"])
        unbounded = bool(info.get("unbounded", False))
        contraction = "mipnerf360" if unbounded else "none"
        self.model = DynamicField(aabb, self.config, contraction)
        self.grid = TimeOccupancy(aabb.reshape(6), self.config.grid_resolution, contraction)
        module = nn.ModuleDict({"field": self.model, "grid": self.grid})
        try:
            module.load_state_dict(payload["state_dict"])
        except RuntimeError as e:
            raise ValueError(f"{path}: field 'state_dict' does not match the model: {e}") from e
        module.eval()
        self.settings = DynamicSettings.for_scene(aabb, self.config, unbounded,
                                                  float(info.get("near", 0.0)),
                                                  float(info.get("far", 1e10)))
        self.background = torch.tensor(info["background"])
