"""Surfaces from posed images: NeuS (Wang et al. 2021) on a hash grid (instant-nsr-pl style).

The SDF network (hash grid + 2 x 64 ReLU `FusedMLP`, a sphere prior added to its first
output) also gives geometric features; the colour network sees them with the normal and the
view direction (degree-4 spherical harmonics). Along a ray, a sample section [t0, t1] with SDF
f at its middle and the cosine c between ray and gradient gets NeuS's discrete opacity

    alpha = (Phi_s(f_prev) - Phi_s(f_next)) / Phi_s(f_prev),   f_prev/next = f -/+ c (t1 - t0)/2

with Phi_s the logistic sigmoid of learned sharpness s, and c NeuS's annealed cosine: from
(c - 1) / 2 (never 0: every section is seen as entering) to min(c, 0) over the first
`cos_anneal_steps`; compositing then follows the radiance-field renderer (alpha
passed as the density -log(1 - alpha) / dt). Samples come from the occupancy grid and ray
marcher of `fields.render`, the grid marking cells where |f| is within a band. Gradients are
tetrahedral finite differences (4 evaluations give the SDF and its gradient), so only first
derivatives run through the kernels. Losses: L1 colour, eikonal, and the mask (binary cross
entropy of the opacity) when the images have alpha.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from fields.config import dataclass_from_dict, require_positive
from fields.nn.config import from_config
from fields.nn.encoding_config import encoding_from_config, hash_grid_config
from fields.render.occupancy import OccupancyGrid
from fields.render.rays import RayBatcher
from fields.render.volrend import composite, offsets_from_indices, prune_samples

# tetrahedron vertices: sum_i k_i f(x + h k_i) / (4 h) is the gradient, their mean f(x)
_TETRA = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])


@dataclass
class NeusConfig:
    """A NeuS run: the SDF's hash grid, the networks, the sampling and the losses
    (`fields fit neus --config` overrides these fields)."""

    finest_resolution: int = 1024
    log2_hashmap_size: int = 19
    n_levels: int = 16
    n_features: int = 15
    lr: float = 1e-2
    render_steps: int = 384  # marching step: the box diagonal / render_steps
    grid_resolution: int = 64
    occupancy_every: int = 16
    target_samples: int = 2**15
    initial_rays: int = 1024
    max_rays: int = 2**13
    eikonal_weight: float = 0.1
    mask_weight: float = 0.1
    init_variance: float = 0.3  # s = exp(10 variance)
    cos_anneal_steps: int = 500

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NeusConfig:
        """The config with the keys of `d` (the others default); ValueError naming unknown
        keys, values of the wrong type and sizes or rates that are not positive."""
        cfg = dataclass_from_dict(cls, d)
        require_positive("NeusConfig", cfg, (
            "lr", "finest_resolution", "log2_hashmap_size", "n_levels", "render_steps",
            "grid_resolution", "occupancy_every", "target_samples", "initial_rays",
            "max_rays"))
        return cfg


class NeusField(nn.Module):
    """SDF, geometric features and colour over a box `aabb` (2, 3)."""

    def __init__(self, aabb: torch.Tensor, config: NeusConfig) -> None:
        super().__init__()
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3))
        self.config = config
        extent = float((self.aabb[1] - self.aabb[0]).max())
        self.encoding = encoding_from_config(3, hash_grid_config(
            config.finest_resolution, config.log2_hashmap_size, config.n_levels, 2, 16))
        mlp = {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "None",
               "n_neurons": 64, "n_hidden_layers": 2}
        self.sdf_network = from_config(mlp, self.encoding.n_output_dims, 1 + config.n_features)
        self.direction_encoding = encoding_from_config(3, {"otype": "SphericalHarmonics",
                                                           "degree": 4})
        self.color_network = from_config(
            {**mlp, "output_activation": "Sigmoid"},
            self.direction_encoding.n_output_dims + 3 + config.n_features, 3)
        self.variance = nn.Parameter(torch.tensor(float(config.init_variance)))
        self.init_radius = 0.35 * extent
        self.eps = extent / config.finest_resolution  # finite-difference step

    def sharpness(self) -> torch.Tensor:
        return torch.exp(10.0 * self.variance).clamp(1e-6, 1e6)

    def sdf_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = ((x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])).clamp(0.0, 1.0)
        h = self.sdf_network(self.encoding(u))
        prior = (x - self.aabb.mean(0)).norm(dim=-1) - self.init_radius
        return h[:, 0] + prior, h[:, 1:]

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        return self.sdf_features(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The signed distance (as `SDFField`), for meshing, sphere tracing and viewing."""
        return self.sdf(x)

    def sdf_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sdf (N,), gradient (N, 3), features (N, F)) by tetrahedral differences."""
        k = _TETRA.to(x)
        pts = (x[:, None] + self.eps * k).reshape(-1, 3)
        f, feat = self.sdf_features(pts)
        f = f.reshape(-1, 4)
        grad = (f[..., None] * k).sum(1) / (4 * self.eps)
        return f.mean(1), grad, feat.reshape(-1, 4, feat.shape[-1]).mean(1)

    def view_encoding(self, d: torch.Tensor) -> torch.Tensor:
        """The encoded view directions (R, D) of unit directions (R, 3)."""
        return self.direction_encoding((d + 1.0) * 0.5)

    def color(self, view: torch.Tensor, normals: torch.Tensor,
              feat: torch.Tensor) -> torch.Tensor:
        """Colour (S, 3) from encoded view directions (`view_encoding`), normals, features."""
        return self.color_network(torch.cat((view, normals, feat), dim=-1))


def vertex_colours(field: NeusField, vertices: torch.Tensor,
                   chunk: int = 2**15) -> Any:
    """(V, 3) uint8 colours of mesh vertices from the radiance head, each seen from outside
    along its normal."""
    parts = []
    with torch.no_grad():
        for v in vertices.float().split(chunk):
            _, g, feat = field.sdf_gradient(v)
            n = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-9)
            parts.append(field.color(field.view_encoding(-n), n, feat))
    return (torch.cat(parts).clamp(0, 1).numpy() * 255 + 0.5).astype("uint8")


def neus_alpha(sdf: torch.Tensor, grad: torch.Tensor, dirs: torch.Tensor, dt: torch.Tensor,
               s: torch.Tensor, anneal: float = 1.0) -> torch.Tensor:
    """NeuS's discrete opacity (S,) of sections of length dt (S,) with SDF `sdf` at their
    middles; `anneal` in [0, 1] blends the cosine from -relu((1 - c) / 2) = (c - 1) / 2 to
    -relu(-c) = min(c, 0) (NeuS's schedule)."""
    cos = (dirs * grad).sum(-1)
    iter_cos = -(torch.relu(-cos * 0.5 + 0.5) * (1.0 - anneal) + torch.relu(-cos) * anneal)
    prev = torch.sigmoid((sdf - iter_cos * dt * 0.5) * s)
    nxt = torch.sigmoid((sdf + iter_cos * dt * 0.5) * s)
    return ((prev - nxt + 1e-5) / (prev + 1e-5)).clamp(0.0, 1.0)


class NeusTask:
    """One NeuS run for `fields.train.train` on a `SceneData` (bounded scenes)."""

    def __init__(self, data: Any, config: NeusConfig, seed: int = 0,
                 evaluate_fn: Any = None) -> None:
        if data.unbounded:
            raise ValueError(f"{data.name}: fields fit neus handles bounded scenes (an object "
                             "in a box); this one is unbounded")
        self.data, self.config = data, config
        self.field = NeusField(data.aabb, config)
        self.grid = OccupancyGrid(data.aabb.reshape(6), config.grid_resolution, "none")
        self.module = nn.ModuleDict({"field": self.field, "grid": self.grid})
        self.step_size = float((data.aabb[1] - data.aabb[0]).norm()) / config.render_steps
        self.optimizer = torch.optim.Adam(self.field.parameters(), lr=config.lr,
                                          betas=(0.9, 0.99), eps=1e-15)
        self.rays = RayBatcher(data.train, data.background)
        self.n_rays = config.initial_rays
        self.generator = torch.Generator().manual_seed(seed)
        self.evaluate_fn = evaluate_fn
        self.band = 2.0 * float((data.aabb[1] - data.aabb[0]).max()) / config.grid_resolution
        self.anneal = 0.0

    def occupancy(self, x: torch.Tensor) -> torch.Tensor:
        """What the grid thresholds: 1 on the surface, 0 a band (2 cells) away from it."""
        return (1.0 - self.field.sdf(x).abs() / self.band).clamp_min(0.0)

    def render_rays(self, o: torch.Tensor, d: torch.Tensor, bg: torch.Tensor,
                    with_grad: bool = True) -> dict[str, torch.Tensor]:
        n = o.shape[0]
        ri, ts, te, offsets = self.grid.sample(o, d, self.data.near, min(self.data.far, 1e9),
                                               self.step_size)
        s = self.field.sharpness()
        if ri.shape[0] > 0:  # drop what lies behind opaque samples (a cheap no-grad pass:
            # one evaluation per sample, the ray taken as meeting the surface head on)
            with torch.no_grad():
                x = o[ri] + d[ri] * (0.5 * (ts + te))[:, None]
                f = self.field.sdf(x)
                a = neus_alpha(f, -d[ri], d[ri], te - ts, s, 1.0)
                sig = -torch.log1p(-a.clamp(max=1 - 1e-6)) / (te - ts).clamp_min(1e-10)
                keep = prune_samples(sig, ts, te, ri, offsets, transmittance_threshold=1e-3)
            ri, ts, te = ri[keep], ts[keep], te[keep]
            offsets = offsets_from_indices(ri, n)
        x = o[ri] + d[ri] * (0.5 * (ts + te))[:, None]
        with torch.set_grad_enabled(with_grad):
            f, g, feat = self.field.sdf_gradient(x)
            normals = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-9)
            a = neus_alpha(f, g, d[ri], te - ts, s, self.anneal)
            sig = -torch.log1p(-a.clamp(max=1 - 1e-6)) / (te - ts).clamp_min(1e-10)
            with torch.no_grad():  # per ray, not per sample
                view = self.field.view_encoding(d)
            rgb = self.field.color(view[ri], normals, feat)
            out = composite(sig, rgb, ts, te, ri, offsets, bg)
        out["grad"] = g
        out["n_samples"] = torch.tensor(ri.shape[0])
        return out

    def train_step(self, step: int, progress: float) -> dict[str, float]:
        c = self.config
        if step % c.occupancy_every == 0:
            self.grid.update(step, self.occupancy, occ_thre=0.01, warmup_steps=64)
        self.anneal = min(1.0, step / max(c.cos_anneal_steps, 1))
        lr = c.lr * (0.1 ** max(0.0, (progress - 0.5) / 0.5))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        o, d, target, bg = self.rays.sample(self.n_rays, self.generator, False, True)
        idx = self.rays.last_index
        out = self.render_rays(o, d, bg)
        l1 = (out["rgb"] - target).abs().mean()
        eik = ((out["grad"].norm(dim=-1) - 1.0).square().mean() if out["grad"].shape[0]
               else torch.zeros(()))
        loss = l1 + c.eikonal_weight * eik
        if c.mask_weight > 0 and self.rays.alpha is not None:
            mask = self.rays.alpha[idx].clamp(0, 1)
            op = out["opacity"].clamp(1e-4, 1 - 1e-4)
            loss = loss + c.mask_weight * nn.functional.binary_cross_entropy(op, mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        n_samples = int(out["n_samples"])
        per_ray = max(n_samples, 1) / self.n_rays
        self.n_rays = int(min(c.max_rays, max(256, c.target_samples / per_ray)))
        mse = float((out["rgb"].detach() - target).square().mean())
        return {"loss": loss.item(), "psnr": -10 * math.log10(max(mse, 1e-10)),
                "s": self.field.sharpness().item(), "rays": float(o.shape[0])}

    def evaluate(self, final: bool) -> dict[str, float]:
        return {} if self.evaluate_fn is None else self.evaluate_fn(self.field, final)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "n_rays": self.n_rays}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.n_rays = int(state["n_rays"])
