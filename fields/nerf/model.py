"""Radiance fields (NeRF): the model, rendering rays through an occupancy grid, and fitting.

The default model is instant-ngp's (Müller et al. 2022): a 3-D multiresolution hash grid over
the scene box, a small density network whose first output is the log-density and whose other
outputs (15 features) feed, with a spherical-harmonics encoding of the view direction, a
colour network. All networks are `FusedMLP`s, all encodings come from tiny-cuda-nn style
configs, so any part can be swapped in `NerfConfig`. `vanilla_config()` is the original
NeRF's layout (frequency encodings, a wide MLP) for comparison.

Rendering (`render_rays`): rays are marched through an `OccupancyGrid` (C++ kernel, packed
samples); a no-grad pass evaluates the density of every marched sample so that samples behind
opaque content (transmittance < 1e-4) are dropped before the pass with gradients; the
survivors are composited (`fields.render.volrend`). Unbounded scenes use the mip-NeRF 360
contraction and cone-angle stepping.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from fields import _ext, distributed
from fields.config import dataclass_from_dict, require_positive
from fields.data.dataset import SceneData, Split
from fields.nerf.kilo import KiloField, KiloSpec
from fields.nerf.poses import (
    ColourCorrection,
    PoseRefinement,
    apply_similarity,
    coarse_to_fine_alpha,
    fit_colour,
    similarity_between,
)
from fields.nn.activations import trunc_exp
from fields.nn.backend import scope
from fields.nn.config import from_config
from fields.nn.encoding_config import encoding_from_config, hash_grid_config
from fields.nn.mlp import use_cuda_kernels
from fields.render.occupancy import OccupancyGrid, contract
from fields.render.rays import RayBatcher, RayBatchState
from fields.render.volrend import composite, offsets_from_indices, prune_in_rounds

CONTRACTIONS = ("none", "mipnerf360")


def auto_finest_resolution(data: SceneData, factor: float = 2.0) -> int:
    """The finest grid resolution a scene needs: `factor` grid cells per pixel footprint at the
    scene (camera distance to the box centre / focal length) across the box, rounded to a
    power of two in [64, 4096]. 128-pixel views of the built-in scene give 128; 800-pixel
    NeRF-synthetic views give 2048, instant-ngp's choice for them.

    Two cells per footprint: a finer grid learns detail the pixels cannot constrain (each
    pixel is the mean over its footprint; a ray samples its centre), which fits the training
    views and aliases in new ones. On the built-in scene the old factor, 3 (finest level 256),
    lost held-out PSNR as training went on (30.4 dB after a 5-minute fit); 128 ends at
    31.9-32.0 dB (three seeds) and still rising (README, Benchmarks)."""
    cams = data.train.cameras
    centre = data.aabb.mean(0)
    dist = (cams.c2w[:, :, 3] - centre).norm(dim=-1).median()
    footprint = float(dist / cams.fx.median())
    width = float((data.aabb[1] - data.aabb[0]).max())
    if data.unbounded:
        width *= 2.0  # the inner box fills half of the contracted cube
    cells = factor * width / max(footprint, 1e-9)
    return int(2 ** min(12, max(6, round(math.log2(max(cells, 1.0))))))


@dataclass
class NerfConfig:
    """The model and how it is rendered and trained (defaults: instant-ngp on a CPU budget).

    Model: `encoding` (position, on contracted coordinates in [0, 1]^3; None: a hash grid
    sized for the data by `auto_finest_resolution`) -> `density_network`
    -> 1 log-density + `geo_features`; `direction_encoding` (unit view direction, as
    (d + 1) / 2) and the features -> `color_network` -> RGB (sigmoid).

    Rendering: `grid_resolution`^3 occupancy cells; `render_steps` marching steps across the
    scene box's diagonal; `cone_angle` (0 for bounded scenes: constant steps; unbounded scenes
    default to 1/256, steps growing with distance); `transmittance_threshold` for early ray
    termination.

    Training: each step draws rays so that about `target_samples` samples are evaluated
    (starting from `initial_rays`, at most `max_rays`); Adam (betas 0.9/0.99, eps 1e-15) with
    learning rate `lr`, constant until `lr_decay_start` of the budget, then decaying
    exponentially to `lr * lr_decay` at its end, after
    `warmup_steps` of linear warm-up; L2 `weight_decay` on the networks;
    `grid_weight_decay` x the sum over the hash grid's levels of the mean squared entry
    (Zip-NeRF's normalised weight decay: every level weighs alike, so coarse levels are held
    tighter; `add_grid_decay`; off by default: on the built-in scene with the finest level
    at 256, 0.1 raised 5-minute held-out PSNR by 0.45 dB and lowered SSIM by 0.005; the
    coarser finest level of `auto_finest_resolution` since gained 1.4 dB and raised SSIM,
    README); random background
    colours when the images have alpha; rays through random points of their pixels
    (`pixel_jitter`, off by default: rays through pixel centres fit anti-aliased images
    better when evaluated the same way); occupancy-grid updates every `occupancy_every` steps.

    `kilo` (a `fields.nerf.kilo.KiloSpec` as a dict) replaces the encoding and both networks
    by KiloNeRF's grid of tiny networks (`KiloField`; `kilo_config()`).

    Real captures (`fields.nerf.poses`): `refine_poses` (off by default: structure from
    motion's poses are better than a short refinement leaves them) optimises an SE(3)
    correction per training camera (Adam; the rate rises linearly over the first
    `pose_warmup` of the budget, while the field takes shape, to `pose_lr`, and decays
    exponentially to `pose_lr_final` at the end) while the position encoding's levels are
    revealed coarse to fine (from `coarse_to_fine_levels` levels at the first fraction of the
    budget in `coarse_to_fine` to all at the second); `appearance` (None: on for captures,
    `is_capture`) gives each training image an affine colour transform (exposure, white
    balance) learnt at `appearance_lr`.
    """

    encoding: dict[str, Any] | None = None
    density_network: dict[str, Any] = field(
        default_factory=lambda: {
            "otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "None",
            "n_neurons": 64, "n_hidden_layers": 1,
        }
    )
    direction_encoding: dict[str, Any] = field(
        default_factory=lambda: {"otype": "SphericalHarmonics", "degree": 4}
    )
    color_network: dict[str, Any] = field(
        default_factory=lambda: {
            "otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "Sigmoid",
            "n_neurons": 64, "n_hidden_layers": 2,
        }
    )
    geo_features: int = 15
    density_bias: float = -1.0
    grid_resolution: int = 128
    render_steps: int = 512
    cone_angle: float | None = None
    transmittance_threshold: float = 1e-4
    target_samples: int = 2**17
    initial_rays: int = 4096
    max_rays: int = 2**15
    lr: float = 1e-2
    lr_decay: float = 0.05
    lr_decay_start: float = 0.5
    warmup_steps: int = 100
    weight_decay: float = 1e-6
    grid_weight_decay: float = 0.0
    random_background: bool = True
    pixel_jitter: bool = False
    occupancy_every: int = 16
    occupancy_warmup: int = 256
    occupancy_threshold: float = 0.01
    refine_poses: bool = False
    pose_lr: float = 5e-3
    pose_lr_final: float = 5e-5
    pose_warmup: float = 0.15
    coarse_to_fine: tuple[float, float] = (0.1, 0.5)
    coarse_to_fine_levels: float = 2.0
    appearance: bool | None = None
    appearance_lr: float = 1e-3
    kilo: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NerfConfig:
        """The config with the keys of `d` (the others default); ValueError naming unknown
        keys, values of the wrong type and sizes or rates that are not positive."""
        cfg = dataclass_from_dict(cls, d)
        require_positive("NerfConfig", cfg, ("lr", "grid_resolution", "render_steps",
                                             "target_samples", "initial_rays", "max_rays",
                                             "pose_lr", "pose_lr_final", "appearance_lr"))
        c2f = tuple(float(v) for v in cfg.coarse_to_fine)
        if len(c2f) != 2 or not 0.0 <= c2f[0] < c2f[1] <= 1.0:
            raise ValueError("NerfConfig: coarse_to_fine must be two fractions of the budget "
                             f"0 <= start < end <= 1, got {list(cfg.coarse_to_fine)}")
        cfg.coarse_to_fine = c2f  # type: ignore[assignment]
        if cfg.kilo is not None:
            KiloSpec.from_dict(dict(cfg.kilo))
            if cfg.refine_poses:
                raise ValueError("NerfConfig: refine_poses needs a position encoding to reveal "
                                 "coarse to fine; the kilo model has none")
        if cfg.coarse_to_fine_levels < 0:
            raise ValueError("NerfConfig: coarse_to_fine_levels must be >= 0, got "
                             f"{cfg.coarse_to_fine_levels}")
        return cfg

    def resolved(self, data: SceneData) -> NerfConfig:
        """This config with what depends on the data filled in: the hash grid's size, and
        appearance on for captures (`is_capture`) unless set."""
        capture = is_capture(data)
        return replace(
            self,
            encoding=self.encoding if self.encoding is not None or self.kilo is not None
            else hash_grid_config(auto_finest_resolution(data)),
            appearance=capture if self.appearance is None else self.appearance,
        )


def is_capture(data: SceneData) -> bool:
    """Whether the scene's cameras and colours come from a real capture (structure from
    motion: COLMAP, LLFF, nerfstudio, `fields process`) rather than a renderer."""
    return data.meta.get("format") in ("colmap", "llff", "nerfstudio") or \
        data.meta.get("transform") is not None


def vanilla_config() -> NerfConfig:
    """The original NeRF's model (Mildenhall et al. 2020) on this engine: 10 / 4 frequency
    bands for position / direction, an 8 x 256 ReLU density MLP (here without the skip
    connection and the separate 128-wide colour layer), rendered with the same sampler.
    Very slow on a CPU: for comparisons."""
    return NerfConfig(
        encoding={"otype": "Frequency", "n_frequencies": 10},
        density_network={
            "otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "None",
            "n_neurons": 256, "n_hidden_layers": 8,
        },
        direction_encoding={"otype": "Frequency", "n_frequencies": 4},
        color_network={
            "otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "Sigmoid",
            "n_neurons": 128, "n_hidden_layers": 1,
        },
        geo_features=255,
        density_bias=0.0,
        lr=5e-4,
        lr_decay=0.1,
        target_samples=2**15,
        initial_rays=1024,
        weight_decay=0.0,
    )


def planes_config() -> NerfConfig:
    """A tri-plane factorisation (K-Planes' static model, Fridovich-Keil et al. 2023): three
    levels of axis-aligned feature planes (64, 128, 256), multiplied per level, instead of
    the hash grid."""
    return NerfConfig(
        encoding={"otype": "Triplane", "resolution": 64, "n_features": 8, "n_levels": 3,
                  "per_level_scale": 2.0, "reduce": "product"},
    )


def kilo_config() -> NerfConfig:
    """KiloNeRF's model (Reiser et al. 2021): 16^3 cells, each with tiny networks of width 32
    (`fields.nerf.kilo`); bounded scenes."""
    return NerfConfig(kilo=asdict(KiloSpec()), lr=5e-3)


MODELS: dict[str, Callable[[], NerfConfig]] = {
    "ngp": NerfConfig, "vanilla": vanilla_config, "planes": planes_config, "kilo": kilo_config}


def build_field(aabb: torch.Tensor, contraction: str, config: NerfConfig) -> nn.Module:
    """The field a config describes: `KiloField` when `config.kilo` is set, else
    `RadianceField`."""
    if config.kilo is not None:
        return KiloField(aabb, contraction, config)
    return RadianceField(aabb, contraction, config)


class RadianceField(nn.Module):
    """Density and view-dependent colour over a scene box (see `NerfConfig`).

    Args:
        aabb: (2, 3) scene box; positions are mapped to [0, 1]^3 by `contract`.
        contraction: "none" (bounded: zero density outside the box) or "mipnerf360".
        config: the model's configs.
    """

    def __init__(self, aabb: torch.Tensor, contraction: str, config: NerfConfig) -> None:
        super().__init__()
        if contraction not in CONTRACTIONS:
            raise ValueError(f"RadianceField: contraction {contraction!r} not in {CONTRACTIONS}")
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3))
        self.contraction = contraction
        self.config = config
        if config.encoding is None:
            raise ValueError("RadianceField: config.encoding is None; call config.resolved(data)")
        self.encoding = encoding_from_config(3, config.encoding)
        self.density_network = from_config(
            config.density_network, self.encoding.n_output_dims, 1 + config.geo_features
        )
        self.direction_encoding = encoding_from_config(3, config.direction_encoding)
        self.color_network = from_config(
            config.color_network,
            self.direction_encoding.n_output_dims + config.geo_features,
            3,
        )

    def _features(self, x: torch.Tensor, encoded: torch.Tensor | None = None,
                  keep: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if (x.device.type == "cpu" and x.dtype == torch.float32 and _ext.available()
                and not (torch.is_grad_enabled() and x.requires_grad)):
            # one pass for the contraction, the clamp and the inside test (the torch ops'
            # values: bit for bit without contraction, within an ulp with it)
            with scope("kernel:contract"):
                gc, inside = _ext.extension().contract_points_cpu(
                    x, self.aabb, CONTRACTIONS.index(self.contraction))
        else:
            g = contract(x, self.aabb.reshape(6), self.contraction)
            gc = g.clamp(0.0, 1.0)
            inside = ((g >= 0) & (g <= 1)).all(dim=-1)
        if encoded is not None:
            e = self.encoding.forward_given(gc, encoded)
        else:
            raw = self.encoding.kernel_output(gc) if keep is not None else None
            if raw is not None:
                keep.append(raw)
                e = self.encoding.forward_given(gc, raw)
            else:
                e = self.encoding(gc)
        h = self.density_network(e)
        sigma = trunc_exp(h[:, 0] + self.config.density_bias)
        if self.contraction == "none":
            sigma = sigma * inside
        return sigma, h[:, 1:]

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Density (P,) at world points x (P, 3)."""
        return self._features(x)[0]

    def density_and_encoding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Density (P,) at world points x (P, 3) and the position encoding's kernel output
        there (for `forward(..., encoded=)` on the same points), or None when the encoding
        cannot hand it back (not a grid on the CPU kernels)."""
        if not hasattr(self.encoding, "kernel_output"):
            return self._features(x)[0], None
        kept: list[torch.Tensor] = []
        sigma = self._features(x, keep=kept)[0]
        return sigma, (kept[0] if kept else None)

    def view_features(self, d: torch.Tensor) -> torch.Tensor:
        """The direction encoding of unit directions d (P, 3), as `forward` computes it."""
        return self.direction_encoding((d + 1.0) * 0.5)

    def forward(self, x: torch.Tensor, d: torch.Tensor | None,
                encoded: torch.Tensor | None = None, view: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Density (P,) and colour (P, 3) at points x (P, 3) seen along unit directions d;
        `encoded`: the position encoding's output at x from `density_and_encoding` (saves
        evaluating it again); `view`: `view_features(d)` given instead of d (rendering
        encodes each ray's direction once, not once per sample)."""
        sigma, feat = self._features(x, encoded)
        if view is None:
            if d is None:
                raise ValueError("RadianceField.forward: give the directions d or view")
            view = self.view_features(d)
        rgb = self.color_network(torch.cat((view, feat), dim=-1))
        return sigma, rgb


@dataclass
class RenderSettings:
    """How rays are marched: `step_size` (world units), `cone_angle`, near / far planes."""

    step_size: float
    cone_angle: float
    near: float
    far: float
    transmittance_threshold: float = 1e-4

    @classmethod
    def for_scene(cls, aabb: torch.Tensor, unbounded: bool, config: NerfConfig,
                  near: float = 0.0, far: float = 1e10) -> RenderSettings:
        diag = float((aabb[1] - aabb[0]).norm())
        cone = config.cone_angle if config.cone_angle is not None else (
            1.0 / 256 if unbounded else 0.0
        )
        if unbounded and far > 1e9:
            far = 1e3 * diag
        return cls(diag / config.render_steps, cone, near, far, config.transmittance_threshold)


def render_rays(
    model: RadianceField,
    grid: OccupancyGrid,
    origins: torch.Tensor,
    directions: torch.Tensor,
    settings: RenderSettings,
    background: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Renders rays (R, 3) + unit directions (R, 3) on `background` ((3,) or (R, 3)).

    Returns {"rgb": (R, 3), "opacity": (R, 1), "depth": (R, 1), "n_samples": () int64 samples
    evaluated with gradients, "n_marched": () int64 samples marched}."""
    n_rays = origins.shape[0]
    outer_grad = torch.is_grad_enabled()
    background = background.to(origins.device)
    # a field with a renderer of its own (KiloNeRF's tiny networks: marching, networks and
    # compositing in one C++ pass) renders where that can run
    fused = None if outer_grad else getattr(model, "render_fused", None)
    if fused is not None:
        out = fused(grid, origins, directions, settings, background)
        if out is not None:
            return out
    with scope("phase:marching"):
        ray_indices, t_starts, t_ends, offsets = grid.sample(
            origins, directions, settings.near, settings.far, settings.step_size,
            cone_angle=settings.cone_angle,
        )
    n_marched = ray_indices.shape[0]

    def points(ri: torch.Tensor, ts: torch.Tensor, te: torch.Tensor) -> torch.Tensor:
        return (origins.index_select(0, ri)
                + directions.index_select(0, ri) * (0.5 * (ts + te))[:, None])

    fast = origins.device.type == "cpu" and _ext.available()
    encoded = kept_sigmas = kept_rgbs = None
    if n_marched > 0:
        with scope("phase:pruning"), torch.no_grad():
            # the encoding of every evaluated sample is kept (row[i]: its row in the rounds'
            # outputs), so that the kept ones are not encoded twice
            raws: list[torch.Tensor] = []
            colours: list[torch.Tensor] = []  # the one pass's colours (raws: its sigmas)
            row = torch.empty(n_marched, dtype=torch.long, device=ray_indices.device)
            if fast:
                o_c, d_c = origins.detach().contiguous(), directions.detach().contiguous()
            # a model that takes each sample's colour with its density (KiloNeRF's tiny
            # networks): one pass, its (sigma, rgb) kept as the raw rows
            one_pass = (not outer_grad and hasattr(model, "colours_while_pruning")
                        and model.colours_while_pruning(origins))
            ray_view = model.view_features(directions) if one_pass else None

            def density(i: torch.Tensor) -> torch.Tensor:
                if fast:
                    p = _ext.extension().sample_points_cpu(o_c, d_c, ray_indices, t_starts,
                                                           t_ends, i)
                else:
                    p = points(*(v.index_select(0, i) for v in (ray_indices, t_starts, t_ends)))
                if one_pass:
                    sigma, rgb = model.sample_colours(p, ray_view, ray_indices.index_select(0, i))
                    raws.append(sigma[:, None])
                    colours.append(rgb)
                    return sigma
                sigma, raw = model.density_and_encoding(p)
                if raw is not None:
                    raws.append(raw)
                return sigma

            keep = prune_in_rounds(
                density, t_starts, t_ends, ray_indices, offsets,
                transmittance_threshold=settings.transmittance_threshold, row=row,
            )
            if raws:
                at = row.index_select(0, keep)

                def gather(rows: list[torch.Tensor]) -> torch.Tensor:
                    if fast:
                        with scope("kernel:gather rows"):
                            return _ext.extension().gather_rows_cpu(rows, at)
                    return torch.cat(rows).index_select(0, at)

                if one_pass:
                    kept_sigmas, kept_rgbs = gather(raws).reshape(-1), gather(colours)
                else:
                    encoded = gather(raws)
            ray_indices, t_starts, t_ends = (
                v.index_select(0, keep) for v in (ray_indices, t_starts, t_ends))
            offsets = offsets_from_indices(ray_indices, n_rays)
    if kept_sigmas is not None:  # the kept samples' sigma and rgb from the pruning pass
        sigmas, rgbs = kept_sigmas, kept_rgbs
    else:
        with scope("phase:field forward"):
            # one direction encoding per ray, gathered for its samples
            view = model.view_features(directions).index_select(0, ray_indices)
            if fast and not (origins.requires_grad or directions.requires_grad):
                x = _ext.extension().sample_points_cpu(origins.contiguous(),
                                                       directions.contiguous(), ray_indices,
                                                       t_starts, t_ends, None)
            else:
                x = points(ray_indices, t_starts, t_ends)
            sigmas, rgbs = model(x, None, encoded=encoded, view=view)
    with scope("phase:compositing"):
        out = composite(sigmas, rgbs, t_starts, t_ends, ray_indices, offsets, background)
    out["n_samples"] = torch.tensor(ray_indices.shape[0])
    out["n_marched"] = torch.tensor(n_marched)
    return out


def render_camera(
    model: RadianceField,
    grid: OccupancyGrid,
    cameras: Any,
    index: int,
    settings: RenderSettings,
    background: torch.Tensor,
    chunk: int = 2**14,
) -> dict[str, torch.Tensor]:
    """Renders one camera's image: {"rgb": (H, W, 3), "depth": (H, W, 1), "opacity": (H, W, 1)}."""
    origins, dirs = cameras.pixel_rays(index)
    device = grid.occupied.device  # rays go to the field's device, pixels come back
    parts: dict[str, list[torch.Tensor]] = {"rgb": [], "depth": [], "opacity": []}
    with torch.no_grad():
        for o, d in zip(origins.split(chunk), dirs.split(chunk), strict=True):
            out = render_rays(model, grid, o.to(device), d.to(device), settings, background)
            for k in parts:
                parts[k].append(out[k].cpu())
    h, w = cameras.height, cameras.width
    return {k: torch.cat(v).reshape(h, w, -1) for k, v in parts.items()}


def grid_decay_slices(model: nn.Module) -> list[tuple[torch.Tensor, int, int]]:
    """(table, start, end) of every level of every grid encoding in `model`: the slices
    `add_grid_decay` normalises by."""
    from fields.nn.grid import GridEncoding

    out = []
    for m in model.modules():
        if isinstance(m, GridEncoding):
            nf = m.n_features_per_level
            out += [(m.params, lv.offset * nf, (lv.offset + lv.size) * nf)
                    for lv in m.layout.levels]
    return out


def add_grid_decay(slices: list[tuple[torch.Tensor, int, int]], weight: float) -> None:
    """Adds the gradient of Zip-NeRF's normalised weight decay on the grids,
    `weight` * sum over levels of mean(level values^2), to the tables' gradients (creating
    them where the batch touched none): every level counts alike, however many entries it
    has, so the coarse levels are held tighter than the fine ones."""
    with torch.no_grad():
        for p, a, b in slices:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad[a:b].add_(p[a:b], alpha=2.0 * weight / (b - a))


def _param_groups(model: RadianceField, weight_decay: float) -> list[dict[str, Any]]:
    """The encodings' tables without weight decay, the networks' weights with it."""
    nets = [p for m in (model.density_network, model.color_network) for p in m.parameters()]
    net_ids = {id(p) for p in nets}
    rest = [p for p in model.parameters() if id(p) not in net_ids]
    return [{"params": rest, "weight_decay": 0.0}, {"params": nets, "weight_decay": weight_decay}]


class NerfTask(RayBatchState):
    """One NeRF training run for `fields.train.train`: model + occupancy grid, Adam, the
    adaptive ray batch, evaluation on held-out views."""

    def __init__(
        self, data: SceneData, config: NerfConfig, seed: int = 0, eval_views: int = 4,
        eval_pixels: int = 2**14, device: str | torch.device = "cpu",
    ) -> None:
        """`device`: where the field trains ("cpu", "cuda", "cuda:1"); the images stay in
        host memory and each step's rays go to the device."""
        self.device = torch.device(device)
        self.data = data
        config = config.resolved(data)
        self.config = config
        self.contraction = "mipnerf360" if data.unbounded else "none"
        self.model = build_field(data.aabb, self.contraction, config)
        self.grid = OccupancyGrid(
            data.aabb.reshape(6), config.grid_resolution, self.contraction
        )
        parts: dict[str, nn.Module] = {"field": self.model, "grid": self.grid}
        self.poses: PoseRefinement | None = None
        self.colour: ColourCorrection | None = None
        if config.refine_poses:
            self.poses = PoseRefinement(data.train.cameras.c2w, data.aabb.mean(0))
            parts["poses"] = self.poses
        if config.appearance:
            self.colour = ColourCorrection(len(data.train))
            parts["colour"] = self.colour
        self.module = nn.ModuleDict(parts)
        self.module.to(self.device)
        if self.device.type == "cuda":
            use_cuda_kernels(self.module)
        self.settings = RenderSettings.for_scene(
            data.aabb, data.unbounded, config, data.near, data.far
        )
        groups = _param_groups(self.model, config.weight_decay)
        if self.poses is not None:
            groups.append({"params": list(self.poses.parameters()), "weight_decay": 0.0,
                           "name": "poses"})
        if self.colour is not None:
            groups.append({"params": list(self.colour.parameters()), "weight_decay": 0.0,
                           "name": "colour"})
        self.optimizer = torch.optim.Adam(
            groups, lr=config.lr, betas=(0.9, 0.99), eps=1e-15, fused=True,
        )
        self.decay_slices = grid_decay_slices(self.model) if config.grid_weight_decay else []
        self.rays = RayBatcher(data.train, data.background)
        self.n_rays = config.initial_rays
        self.generator = torch.Generator().manual_seed(seed)
        self.eval_views = eval_views
        self.eval_pixels = eval_pixels
        self.last_eval_images: list[dict[str, torch.Tensor]] = []
        # False: the occupancy grid stays as it is (a distilled student keeps its teacher's)
        self.update_grid = True
        self.rays_trained = 0
        self.samples_trained = 0

    # -- training --
    def occupancy_density(self, x: torch.Tensor) -> torch.Tensor:
        """What the occupancy grid thresholds: the opacity of one marching step at x."""
        return self.model.density(x) * self.settings.step_size

    def train_step(self, step: int, progress: float) -> dict[str, float]:
        c = self.config
        ranks = distributed.active()  # torchrun: each rank takes its share of the work
        if self.update_grid and step % c.occupancy_every == 0:
            with scope("phase:grid update"):
                self.grid.update(
                    step, self.occupancy_density, occ_thre=c.occupancy_threshold,
                    warmup_steps=c.occupancy_warmup, shard=ranks,
                )
        lr = self.learning_rate(step, progress)
        rates = {"poses": c.pose_lr * (c.pose_lr_final / c.pose_lr) ** min(progress, 1.0)
                 * min(1.0, progress / c.pose_warmup if c.pose_warmup > 0 else 1.0),
                 "colour": lr / c.lr * c.appearance_lr}
        for group in self.optimizer.param_groups:
            group["lr"] = rates.get(group.get("name", ""), lr)
        with scope("phase:ray generation"):
            o, d, target, bg = self.rays.sample(
                self.n_rays, self.generator, c.random_background, c.pixel_jitter,
                part=distributed.shard_bounds(self.n_rays) if ranks else None,
            )
            image = self.rays.last_index // (self.rays.hw[0] * self.rays.hw[1])
            if self.device.type != "cpu":
                o, d, target, bg, image = (t.to(self.device, non_blocking=True)
                                           for t in (o, d, target, bg, image))
            if self.poses is not None:
                self.model.encoding.set_progress(coarse_to_fine_alpha(
                    progress, self.model.encoding.n_levels, *c.coarse_to_fine,
                    c.coarse_to_fine_levels))
                o, d = self.poses(image, o, d)
        out = render_rays(self.model, self.grid, o, d, self.settings, bg)
        with scope("phase:loss"):
            rgb = out["rgb"]
            if self.colour is not None:  # on the premultiplied foreground, not the background
                fg = rgb - (1.0 - out["opacity"]) * bg
                rgb = self.colour(image, fg) + (1.0 - out["opacity"]) * bg \
                    - (1.0 - out["opacity"]) * self.colour.offset[image]
            mse = (rgb - target).square().mean()
            extra = self.extra_loss()
        self.optimizer.zero_grad(set_to_none=True)
        n_samples = int(out["n_samples"])
        total = n_samples
        if ranks:  # the global batch's samples (the ray budget, and whether anyone steps)
            total = int(distributed.all_sum([n_samples])[0])
        if total > 0:
            if n_samples > 0:
                with scope("phase:backward"):
                    (mse if extra is None else mse + extra).backward()
            with scope("phase:optimiser"):
                if self.decay_slices:
                    add_grid_decay(self.decay_slices, c.grid_weight_decay)
                self.optimizer.step()  # gradients averaged over the ranks first
        n_samples = total
        rays = self.n_rays
        self.rays_trained += rays
        self.samples_trained += n_samples
        # aim at target_samples evaluated samples per step
        per_ray = max(n_samples, 1) / rays
        self.n_rays = int(min(c.max_rays, max(256, c.target_samples / per_ray)))
        loss = mse.item()
        return {
            "loss": loss,
            "psnr": -10.0 * math.log10(max(loss, 1e-10)),
            "rays": float(rays),
            "samples": float(n_samples),
            "lr": lr,
        }

    def extra_loss(self) -> torch.Tensor | None:
        """A term added to the photometric loss of each step (None here; a distillation
        student's density matching, `fields.nerf.distill`)."""
        return None

    # -- evaluation --
    def refined_cameras(self) -> torch.Tensor:
        """The training cameras (N, 3, 4) as refined so far (the given ones without
        refinement)."""
        if self.poses is None:
            return self.data.train.cameras.c2w
        with torch.no_grad():
            return self.poses.corrected().cpu()

    def aligned(self, cameras: Any) -> Any:
        """Held-out `cameras` moved into the frame of the refined training poses (the
        similarity from the given training centres to the refined ones); unchanged without
        pose refinement."""
        if self.poses is None:
            return cameras
        return align_cameras(cameras, self.data.train.cameras.c2w, self.refined_cameras())

    def render(self, split: Split, index: int, background: torch.Tensor | None = None):
        bg = self.data.background if background is None else background
        cams = split.cameras if split is self.data.train else self.aligned(split.cameras)
        return render_camera(self.model, self.grid, cams, index, self.settings, bg)

    def evaluate(self, final: bool) -> dict[str, float]:
        """Mean per-view PSNR (and SSIM when final) over held-out views: every view of the
        evaluation split when final, else the first `eval_views` of "val" (or of it), each on
        `eval_pixels` of its pixels (the same ones every time; all of them for views that
        small, or with 0), so that evaluating during training costs little on large images."""
        from fields.metrics import mean_or_none, psnr, ssim, ssim_note

        if final:
            split = self.data.eval_split()
            views = range(len(split))
        else:
            split = self.data.splits.get("val", self.data.eval_split())
            views = range(min(self.eval_views, len(split)))
        psnrs, ssims, corrected = [], [], []
        self.last_eval_images = []
        h, w = split.cameras.height, split.cameras.width
        sampled = not final and 0 < self.eval_pixels < h * w
        for i in views:
            gt = split.images[i]
            keep = split.mask[i, ..., 0] if split.mask is not None else \
                torch.ones(gt.shape[:2], dtype=torch.bool)  # only the pixels the masks keep
            if sampled:
                out, gt, keep = self._sampled_view(split, i, gt, keep)
            else:
                out = self.render(split, i)
            psnrs.append(psnr(out["rgb"][keep], gt[keep]))
            if self.colour is not None:  # a held-out image's exposure is unknown to the fit
                corrected.append(psnr(fit_colour(out["rgb"][keep], gt[keep]), gt[keep]))
            if final:
                ssims.append(ssim(out["rgb"], gt))
                self.last_eval_images.append({**out, "gt": gt})
        scores = {"psnr": sum(psnrs) / len(psnrs)}
        if corrected:
            scores["psnr_colour_corrected"] = sum(corrected) / len(corrected)
        if final:
            scores["ssim"] = mean_or_none(ssims)  # type: ignore[assignment]
            scores["psnr_per_view"] = psnrs  # type: ignore[assignment]
            note = ssim_note(split.cameras.height, split.cameras.width)
            if note is not None:
                scores["notes"] = [note]  # type: ignore[assignment]
        return scores

    def _sampled_view(self, split: Split, i: int, gt: torch.Tensor, keep: torch.Tensor
                      ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """`eval_pixels` fixed pixels of held-out view i, rendered: ({"rgb": (P, 3)}, their
        colours (P, 3), their mask (P,))."""
        h, w = split.cameras.height, split.cameras.width
        idx = torch.randperm(h * w, generator=torch.Generator().manual_seed(i))
        idx = idx[: self.eval_pixels]
        cams = split.cameras if split is self.data.train else self.aligned(split.cameras)
        o, d = cams.rays(torch.full_like(idx, i), (idx % w).float() + 0.5,
                         (idx // w).float() + 0.5)
        dev = self.device
        rgb = torch.cat([render_rays(self.model, self.grid, oo.to(dev), dd.to(dev),
                                     self.settings, self.data.background)["rgb"].cpu()
                         for oo, dd in zip(o.split(2**14), d.split(2**14), strict=True)])
        return {"rgb": rgb}, gt.reshape(-1, 3)[idx], keep.reshape(-1)[idx]

    # -- resume state: `RayBatchState`; what a checkpoint needs to rebuild the renderer --
    def checkpoint_extra(self) -> dict[str, Any]:
        return {"kind": "nerf", "nerf": scene_info(self.data, self.config)}


def align_cameras(cameras: Any, given: torch.Tensor, refined: torch.Tensor) -> Any:
    """`cameras` moved by the similarity that maps the `given` training cameras' centres
    (N, 3, 4) onto the `refined` ones (`fields.nerf.poses.similarity_between`)."""
    from fields.render.cameras import Cameras

    s, r, t = similarity_between(given.numpy(), refined.detach().numpy())
    c2w = torch.from_numpy(apply_similarity(cameras.c2w.numpy(), s, r, t)).float()
    return Cameras(c2w, cameras.fx, cameras.fy, cameras.cx, cameras.cy, cameras.width,
                   cameras.height, cameras.distortion, cameras.model)


def scene_info(data: SceneData, config: NerfConfig) -> dict[str, Any]:
    """Everything besides the weights that rendering a checkpoint needs: the config, the box,
    near / far, the evaluation cameras' intrinsics and an orbit (centre, radius, up)."""
    split = data.eval_split()
    cams = data.train.cameras
    centres = cams.c2w[:, :, 3]
    up = cams.c2w[:, :, 1].mean(0)
    up = up / up.norm().clamp_min(1e-9)
    centre = data.aabb.mean(0) if not data.unbounded else centres.mean(0) * 0
    radius = float((centres - centre).norm(dim=-1).median())
    ec = split.cameras
    return {
        "config": config.to_dict(),
        "aabb": data.aabb.tolist(),
        "unbounded": data.unbounded,
        "near": data.near,
        "far": min(data.far, 1e10),
        "background": data.background.tolist(),
        "scene": data.name,
        "camera": {
            "width": ec.width, "height": ec.height, "fx": float(ec.fx[0]), "fy": float(ec.fy[0]),
            "cx": float(ec.cx[0]), "cy": float(ec.cy[0]),
        },
        "orbit": {"centre": centre.tolist(), "radius": radius, "up": up.tolist()},
        "views": _views(cams),
        # every training camera (exports), and the capture's transform when the data has one
        "cameras": {**_views(cams, max_views=len(cams)), "names": list(data.train.names)},
        "transform": data.meta.get("transform"),
    }


def _views(cams: Any, max_views: int = 64) -> dict[str, Any]:
    """Up to `max_views` training cameras (evenly picked), for visibility tests in meshing."""
    sub = cams[_view_indices(len(cams), max_views)]
    return {
        "c2w": sub.c2w.tolist(), "fx": sub.fx.tolist(), "fy": sub.fy.tolist(),
        "cx": sub.cx.tolist(), "cy": sub.cy.tolist(), "width": sub.width,
        "height": sub.height, "distortion": sub.distortion.tolist(), "model": sub.model,
    }


def _view_indices(n: int, max_views: int = 64) -> torch.Tensor:
    """Which of n training cameras `scene_info` keeps as "views" (evenly picked)."""
    return torch.linspace(0, n - 1, min(max_views, n)).round().long().unique()


def views_from_info(info: dict[str, Any]) -> Any:
    """The `Cameras` stored by `scene_info` (None for checkpoints without them)."""
    from fields.render.cameras import Cameras

    v = info.get("views")
    if not v:
        return None
    return Cameras(
        torch.tensor(v["c2w"]), torch.tensor(v["fx"]), torch.tensor(v["fy"]),
        torch.tensor(v["cx"]), torch.tensor(v["cy"]), v["width"], v["height"],
        torch.tensor(v["distortion"]), v.get("model", "perspective"),
    )


class LoadedNerf:
    """A NeRF checkpoint, ready to render: model, grid, settings and the scene info."""

    def __init__(self, path: str) -> None:
        from fields.checkpoint import read_kind_checkpoint

        payload, info = read_kind_checkpoint(path, "nerf", "nerf", "a NeRF")
        self.info = info
        self.config = NerfConfig.from_dict(info["config"])
        aabb = torch.tensor(info["aabb"])
        contraction = "mipnerf360" if info["unbounded"] else "none"
        self.model = build_field(aabb, contraction, self.config)
        self.grid = OccupancyGrid(aabb.reshape(6), self.config.grid_resolution, contraction)
        parts: dict[str, nn.Module] = {"field": self.model, "grid": self.grid}
        self.poses: PoseRefinement | None = None
        cams = info.get("cameras")
        if self.config.refine_poses and cams:
            self.poses = PoseRefinement(torch.tensor(cams["c2w"]), aabb.mean(0))
            parts["poses"] = self.poses
        if self.config.appearance and cams:
            parts["colour"] = ColourCorrection(len(cams["c2w"]))
        module = nn.ModuleDict(parts)
        try:
            module.load_state_dict(payload["state_dict"])
        except RuntimeError as e:
            raise ValueError(f"{path}: field 'state_dict' does not match the model: {e}") from e
        module.eval()
        if self.poses is not None:  # exports and meshing see the refined cameras
            with torch.no_grad():
                refined = self.poses.corrected()
            self.info = info = {**info, "given_c2w": cams["c2w"],
                                "cameras": {**cams, "c2w": refined.tolist()}}
            idx = _view_indices(len(refined))
            info["views"] = {**info["views"], "c2w": refined[idx].tolist()}
        self.settings = RenderSettings.for_scene(
            aabb, info["unbounded"], self.config, info["near"], info["far"]
        )
        self.background = torch.tensor(info["background"])
        self.payload = payload

    def aligned(self, cameras: Any) -> Any:
        """Cameras of the given frame (held-out views) moved into the refined poses' frame
        (unchanged when the poses were not refined)."""
        if self.poses is None:
            return cameras
        return align_cameras(cameras, torch.tensor(self.info["given_c2w"]),
                             torch.tensor(self.info["cameras"]["c2w"]))


def depth_image(depth: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) grey picture of a depth map: near is bright, far dark, empty pixels white."""
    hit = opacity[..., 0] > 0.5
    d = depth[..., 0]
    if hit.any():
        lo, hi = d[hit].min(), d[hit].max()
        v = 1.0 - 0.8 * ((d - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
    else:
        v = torch.zeros_like(d)
    v = torch.where(hit, v, torch.ones_like(v))
    return v[..., None].expand(*v.shape, 3)


def render_path(
    model: RadianceField,
    grid: OccupancyGrid,
    settings: RenderSettings,
    info: dict[str, Any],
    path: str = "orbit",
    n_frames: int = 48,
    background: torch.Tensor | None = None,
    scale: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
    cameras: Any = None,
) -> list[torch.Tensor]:
    """Frames (H, W, 3) along an orbit or spiral around the scene (see `fields.render.paths`)
    with the evaluation cameras' intrinsics (times `scale`), or through `cameras` (then
    `path`, `n_frames` and `scale` are unused)."""
    from fields.render.cameras import Cameras
    from fields.render.paths import PATHS, orbit_path

    if cameras is not None:
        cams, n_frames = cameras, len(cameras)
    else:
        if path not in PATHS:
            raise ValueError(f"unknown camera path {path!r}; expected one of {sorted(PATHS)}")
        o = info["orbit"]
        c2w = orbit_path(torch.tensor(o["centre"]), o["radius"], torch.tensor(o["up"]),
                         n_frames, spiral_deg=PATHS[path])
        cam = info["camera"]
        cams = Cameras(
            c2w, cam["fx"] * scale, cam["fy"] * scale, cam["cx"] * scale, cam["cy"] * scale,
            round(cam["width"] * scale), round(cam["height"] * scale),
        )
    bg = torch.tensor(info["background"]) if background is None else background
    frames = []
    for i in range(n_frames):  # one frame at a time; rays inside a frame are batched
        frames.append(render_camera(model, grid, cams, i, settings, bg)["rgb"])
        if progress is not None:
            progress(i + 1, n_frames)
    return frames


def carve_hidden_space(
    volume: torch.Tensor,
    level: float,
    model: RadianceField,
    grid: OccupancyGrid,
    settings: RenderSettings,
    cameras: Any,
    aabb: torch.Tensor,
    tolerance: float,
    scale: float = 0.5,
    chunk: int = 2**20,
) -> torch.Tensor:
    """Space carving from rendered depth, to mesh only what the cameras saw.

    A grid vertex (of `volume`, (res, res, res) over `aabb`, as `fields.mesh.sample_grid`) is
    free if some camera sees it in front of the rendered surface: it projects into the
    image where the rendered opacity is < 0.5, or its distance along the ray is less than the
    rendered depth minus `tolerance`. Vertices seen by some camera but free in none lie
    behind every observed surface (inside opaque objects, where a radiance field's density is
    never constrained): their density is raised to 2 * `level`, so that marching cubes at
    `level` keeps only the outer surface. Vertices no camera sees are left as they are.
    Depth maps are rendered at `scale` times the cameras' resolution."""
    from fields.render.cameras import Cameras

    res = volume.shape[0]
    small = Cameras(
        cameras.c2w, cameras.fx * scale, cameras.fy * scale, cameras.cx * scale,
        cameras.cy * scale, max(1, round(cameras.width * scale)),
        max(1, round(cameras.height * scale)), cameras.distortion, cameras.model,
    )
    maps = []
    for i in range(len(small)):  # a loop over cameras; pixels are batched
        out = render_camera(model, grid, small, i, settings, torch.zeros(3))
        maps.append((out["depth"][..., 0], out["opacity"][..., 0]))
    axes = [torch.linspace(float(aabb[0, k]), float(aabb[1, k]), res) for k in range(3)]
    flat = volume.reshape(-1).clone()
    for start in range(0, res**3, chunk):  # chunks of grid vertices, each fully vectorised
        idx = torch.arange(start, min(start + chunk, res**3))
        pts = torch.stack((axes[0][idx // (res * res)], axes[1][(idx // res) % res],
                           axes[2][idx % res]), -1)
        seen = torch.zeros(idx.shape[0], dtype=torch.bool)
        free = torch.zeros(idx.shape[0], dtype=torch.bool)
        for i, (d_map, o_map) in enumerate(maps):
            uv, depth = small.project(pts, i)
            u, v = uv[:, 0].floor().long(), uv[:, 1].floor().long()
            inside = (u >= 0) & (u < small.width) & (v >= 0) & (v < small.height) & (depth > 0)
            ui, vi = u.clamp(0, small.width - 1), v.clamp(0, small.height - 1)
            ray_len = (pts - small.c2w[i, :, 3]).norm(dim=-1)
            seen |= inside
            free |= inside & ((o_map[vi, ui] < 0.5) | (ray_len < d_map[vi, ui] - tolerance))
        hidden = seen & ~free
        flat[idx[hidden]] = torch.clamp_min(flat[idx[hidden]], 2.0 * level)
    return flat.reshape(volume.shape)


def extract_nerf_mesh(
    model: RadianceField,
    aabb: torch.Tensor,
    resolution: int = 256,
    threshold: float = 10.0,
    grid: OccupancyGrid | None = None,
    settings: RenderSettings | None = None,
    views: Any = None,
) -> tuple[Any, Any, Any]:
    """Mesh of the density iso-surface `threshold` over the box, with vertex colours from
    the radiance head seen along the vertex normals: (vertices, faces, colours uint8).

    Cleaning: with `views` (training `Cameras`, plus the `grid` and `settings` to render
    them) space no camera saw into is filled (`carve_hidden_space`), which removes the
    iso-surfaces a radiance field has inside opaque objects; then floaters and sealed
    cavities are removed (`fields.mesh.clean_density_volume`)."""
    import numpy as np

    from fields.mesh import clean_density_volume, marching_cubes, sample_grid

    device = next(model.parameters()).device  # points go to the field, densities come back

    def density(p: torch.Tensor) -> torch.Tensor:
        return model.density(p.to(device)).cpu()

    vol = sample_grid(density, aabb, resolution)
    if views is not None and grid is not None and settings is not None:
        voxel = float((aabb[1] - aabb[0]).max()) / (resolution - 1)
        vol = carve_hidden_space(vol, threshold, model, grid, settings, views, aabb,
                                 tolerance=max(2 * voxel, settings.step_size))
    vol = clean_density_volume(vol, threshold)
    verts, faces = marching_cubes(vol, threshold, aabb)
    colours = None
    if len(verts):
        v = torch.from_numpy(verts)
        # colour seen from outside: along the negative density gradient, by finite differences
        eps = float((aabb[1] - aabb[0]).max()) / resolution
        with torch.no_grad():
            grad = torch.stack([density(v + e) - density(v - e)
                                for e in torch.eye(3) * eps], -1)
            n = -grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-9)
            rgb = torch.cat([model(p.to(device), -d.to(device))[1].cpu()
                             for p, d in zip(v.split(2**16), n.split(2**16), strict=True)])
        colours = (rgb.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return verts, faces, colours


def write_outputs(
    task: NerfTask,
    out_dir: Any,
    metrics: dict[str, Any],
    video_frames: int = 48,
    mesh_resolution: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Writes renders/ (each evaluation view: ground truth | render | error map | depth),
    orbit.mp4, mesh.ply (when `mesh_resolution`) and metrics.json into out_dir."""
    from pathlib import Path

    from fields.data.images import error_map, write_image
    from fields.data.pointclouds import write_ply
    from fields.io import write_json, write_video

    out = Path(out_dir)
    for i, view in enumerate(task.last_eval_images):
        row = torch.cat(
            (view["gt"], view["rgb"], error_map(view["rgb"], view["gt"], 1e-3, 0.3),
             depth_image(view["depth"], view["opacity"])), dim=1)
        write_image(out / "renders" / f"test_{i:03d}.png", row)
    written = {"renders": str(out / "renders")}
    if video_frames > 0:
        info = scene_info(task.data, task.config)
        frames = render_path(
            task.model, task.grid, task.settings, info, "orbit", video_frames,
            progress=(lambda i, n: progress("video", i, n)) if progress else None,
        )
        write_video(out / "orbit.mp4", frames)
        written["video"] = str(out / "orbit.mp4")
    if mesh_resolution:
        verts, faces, colours = extract_nerf_mesh(
            task.model, task.data.aabb, mesh_resolution, grid=task.grid,
            settings=task.settings, views=views_from_info(scene_info(task.data, task.config)),
        )
        write_ply(out / "mesh.ply", verts, faces, colours)
        written["mesh"] = str(out / "mesh.ply")
        metrics["mesh_faces"] = len(faces)
    write_json(out / "metrics.json", metrics)
    return written
