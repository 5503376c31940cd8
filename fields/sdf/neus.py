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
entropy of the opacity) when the images have alpha; and (`photo_consistency`, on by default)
the multi-view photometric consistency of Geo-NeuS / NeuralWarp, pixel-wise on blurred
images: a pixel's surface point (at the rendered depth, with its gradient) is projected into
a nearby training view, and its colour there should be the pixel's.
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
from fields.nn.spherical_harmonics import spherical_harmonics
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
    variance_lr: float = 0.0  # the variance's learning rate (0: lr)
    cos_anneal_steps: int = 500
    # coarse to fine (Neuralangelo): the hash grid's levels revealed from `start_levels` to
    # all over the first `coarse_to_fine` of the run, the finite-difference step following
    # the finest revealed level (0: every level from the start)
    coarse_to_fine: float = 0.0
    start_levels: float = 4.0
    # Ref-NeuS (`fields fit neus --model ref-neus` sets `reflected`; the reflection score,
    # measured not to help at the scales this was tried at, is `reflection_score`):
    reflected: bool = False  # colour from the view direction mirrored about the normal
    split_radiance: bool = False  # with `reflected`: diffuse + Fresnel-weighted environment
    # the fraction of the run during which the colour loss reaches the normals through r
    # (0: never; 1: always, the paper's form)
    reflection_normal_grad: float = 0.0
    reflection_degree: int = 4  # SH bands of the reflected direction (1..8)
    reflection_score: bool = False  # down-weight pixels whose colour other views disagree with
    reflection_views: int = 8  # other training views a step's surface points are seen in
    reflection_scale: float = 0.05  # colour difference (0-1) at which a pixel's weight halves
    # scores up to this are a diffuse surface's noise (resampling, occlusion tests), not
    # down-weighted: the weight is 1 / (1 + max(score - threshold, 0) / scale)
    reflection_threshold: float = 0.0
    # the score takes the best match within this many pixels of the projection in each
    # other view (resampling and sub-pixel misregistration are not reflections)
    reflection_tolerance: float = 0.0
    reflection_start: float = 0.2  # fraction of the run trained before the score is used
    # multi-view photometric consistency (Geo-NeuS / NeuralWarp): the weight of the L1
    # difference between a pixel's colour and its surface point's colour in one of the
    # `consistency_views` nearest training views, both images blurred by a Gaussian of
    # `consistency_blur` pixels (halved after each third of the run); 0: off
    photo_consistency: float = 1.0
    consistency_views: int = 4
    consistency_blur: float = 2.0

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
            "max_rays", "reflection_views", "reflection_scale", "reflection_degree",
            "consistency_views"))
        for name in ("reflection_threshold", "reflection_tolerance"):
            if getattr(cfg, name) < 0:
                raise ValueError(f"NeusConfig.{name}: expected >= 0, got {getattr(cfg, name)}")
        if cfg.photo_consistency < 0 or cfg.consistency_blur < 0:
            raise ValueError("NeusConfig.photo_consistency / consistency_blur: expected >= 0, "
                             f"got {cfg.photo_consistency} / {cfg.consistency_blur}")
        if cfg.reflection_degree > 8:
            raise ValueError("NeusConfig.reflection_degree: expected 1..8 SH bands, got "
                             f"{cfg.reflection_degree}")
        if not 0.0 <= cfg.reflection_normal_grad <= 1.0:
            raise ValueError("NeusConfig.reflection_normal_grad: expected a fraction in [0, 1], "
                             f"got {cfg.reflection_normal_grad}")
        if not 0.0 <= cfg.coarse_to_fine < 1.0:
            raise ValueError("NeusConfig.coarse_to_fine: expected a fraction in [0, 1), got "
                             f"{cfg.coarse_to_fine}")
        if not 1.0 <= cfg.start_levels <= cfg.n_levels:
            raise ValueError(f"NeusConfig.start_levels: expected 1..n_levels ({cfg.n_levels}), "
                             f"got {cfg.start_levels}")
        if cfg.split_radiance and not cfg.reflected:
            raise ValueError("NeusConfig.split_radiance: needs reflected (the environment is "
                             "looked up in the reflected direction)")
        if not 0.0 <= cfg.reflection_start <= 1.0:
            raise ValueError("NeusConfig.reflection_start: expected a fraction in [0, 1], got "
                             f"{cfg.reflection_start}")
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
        # Ref-NeuS's radiance sees the reflected direction and n . w_o (as Ref-NeRF)
        n_direction = (config.reflection_degree ** 2 + 1 if config.reflected
                       else self.direction_encoding.n_output_dims)
        if config.split_radiance:  # `color`: the spatial head and the environment apart
            self.color_network = from_config(mlp, 3 + config.n_features, 8)
            self.environment_network = from_config(
                {**mlp, "output_activation": "Sigmoid"}, config.reflection_degree ** 2, 3)
        else:
            self.color_network = from_config(
                {**mlp, "output_activation": "Sigmoid"}, n_direction + 3 + config.n_features, 3)
        self.variance = nn.Parameter(torch.tensor(float(config.init_variance)))
        self.init_radius = 0.35 * extent
        self.extent = extent
        self.normal_grad = config.reflection_normal_grad > 0  # `NeusTask` sets it per step
        self.eps = extent / config.finest_resolution  # finite-difference step

    def reveal_levels(self, alpha: float | None) -> None:
        """Shows the hash grid's levels up to `alpha` (in [1, n_levels]; None: all) and sets
        the finite-difference step to the cell of the finest one shown (Neuralangelo)."""
        self.encoding.set_progress(alpha)
        finest = float(self.config.finest_resolution)
        if alpha is not None:  # level k's resolution: base * per_level_scale^k
            grid = self.encoding.to_config()
            finest = min(finest, grid["base_resolution"]
                         * grid["per_level_scale"] ** max(alpha - 1.0, 0.0))
        self.eps = self.extent / finest

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

    def direction_inputs(self, d: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
        """What the colour network sees of the direction at samples seen along unit d (S, 3)
        with unit normals (S, 3): the encoded view direction, or, with `reflected`, the
        `reflection_degree` SH bands of the view direction mirrored about the normal and
        n . w_o (w_o = -d). The mirrored direction takes the normals without their gradient
        unless `normal_grad` (set by `NeusTask` for the first `reflection_normal_grad` of the
        run): through the hash grid's normals the colour loss roughens the surface to paint
        reflections on it, though early on it also pulls a misplaced surface's normals
        towards the ones that reflect the scene consistently (README, Ref-NeuS); the normals
        still reach the colour network as an input of their own, as in NeuS."""
        if not self.config.reflected:
            return self.view_encoding(d)
        n = normals if self.normal_grad else normals.detach()
        wo = -d
        cos = (wo * n).sum(-1, keepdim=True)
        r = 2.0 * cos * n - wo
        return torch.cat((spherical_harmonics(r, self.config.reflection_degree), cos), -1)

    def color(self, view: torch.Tensor, normals: torch.Tensor,
              feat: torch.Tensor) -> torch.Tensor:
        """Colour (S, 3) from encoded directions (`direction_inputs`), normals, features.

        With `split_radiance`, the colour is a glossy surface's, as the glossy scene renders
        it: ``(1 - F) diffuse + F tint E(r)``. The spatial head (`color_network`) gives the
        diffuse colour, the tint and two reflectance scalars from the normal and the features
        only, so nothing of it changes with the view; E is one environment for the whole
        scene (`environment_network`), a function of the reflected direction r alone; and the
        view reaches the Fresnel weight only through n . w_o (Schlick's approximation,
        ``F = F0 + (1 - F0) g (1 - n . w_o)^5``, g in [0, 1] so that a diffuse surface need
        not turn into a mirror at grazing angles). A surface in the wrong place sees
        different parts of the scene from different cameras; this radiance cannot paint that
        on it, the unconstrained one can (the shape-radiance ambiguity)."""
        if not self.config.split_radiance:
            return self.color_network(torch.cat((view, normals, feat), dim=-1))
        h = self.color_network(torch.cat((normals, feat), dim=-1)).float()
        diffuse, tint = torch.sigmoid(h[:, :3]), torch.sigmoid(h[:, 3:6])
        f0, g = torch.sigmoid(h[:, 6:7] - 3.0), torch.sigmoid(h[:, 7:8] - 3.0)
        grazing = (1.0 - view[:, -1:].clamp(0.0, 1.0)) ** 5
        fresnel = f0 + (1.0 - f0) * g * grazing
        environment = self.environment_network(view[:, :-1])
        return (1.0 - fresnel) * diffuse + fresnel * tint * environment


def vertex_colours(field: NeusField, vertices: torch.Tensor,
                   chunk: int = 2**15) -> Any:
    """(V, 3) uint8 colours of mesh vertices from the radiance head, each seen from outside
    along its normal."""
    parts = []
    with torch.no_grad():
        for v in vertices.float().split(chunk):
            _, g, feat = field.sdf_gradient(v)
            n = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-9)
            parts.append(field.color(field.direction_inputs(-n, n), n, feat))
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


def _unoccluded(points: torch.Tensor, centres: torch.Tensor, sdf: Any, aabb: torch.Tensor,
                margin: float, samples: int) -> torch.Tensor:
    """Whether each point (P, 3) sees its camera centre (3,) or (P, 3): `sdf` positive at
    `samples` points on the segment from `margin` off the point towards the camera, clipped
    to `aabb` (an occluder thinner than the samples' spacing can slip between them)."""
    from fields.render.sphere_trace import ray_box

    with torch.no_grad():
        to_cam = centres - points
        length = to_cam.norm(dim=-1).clamp_min(1e-9)
        u = to_cam / length[:, None]
        far = torch.minimum(ray_box(points, u, aabb)[1], length).clamp_min(margin)
        frac = (torch.arange(samples, dtype=points.dtype) + 0.5) / samples
        t = margin + (far - margin)[:, None] * frac
        q = (points[:, None] + u[:, None] * t[..., None]).reshape(-1, 3)
        return sdf(q).reshape(-1, samples).min(-1).values > 0


def gather_bilinear(flat: torch.Tensor, views: torch.Tensor, hw: tuple[int, int],
                    uv: torch.Tensor) -> torch.Tensor:
    """Colours (P, C) of the flat pixels `flat` (n * H * W, C) of images `views` (P,) (one
    per point) at image coordinates uv (P, 2) (pixel centres at i + 0.5; clamped at the
    borders), bilinear and differentiable in uv. Needs H, W >= 2."""
    h, w = hw
    x = (uv[:, 0] - 0.5).clamp(0.0, w - 1.0)
    y = (uv[:, 1] - 0.5).clamp(0.0, h - 1.0)
    x0 = x.detach().floor().clamp(max=w - 2).long()
    y0 = y.detach().floor().clamp(max=h - 2).long()
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    i = views * (h * w) + y0 * w + x0
    return ((1 - fx) * (1 - fy) * flat[i] + fx * (1 - fy) * flat[i + 1]
            + (1 - fx) * fy * flat[i + w] + fx * fy * flat[i + w + 1])


def reprojected_colours(points: torch.Tensor, views: torch.Tensor, images: torch.Tensor,
                        hw: tuple[int, int], cameras: Any,
                        alpha: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The colours (P, 3) that points (P, 3) have in training views `views` (P,) (one per
    point) of the flat images `images` (n * H * W, 3), differentiable in the points, and
    whether each is seen there (P,): in front of the camera, inside the image and, with the
    flat coverage `alpha` (n * H * W, 1), on the object (alpha > 0.5). Occlusion is not
    tested (`_unoccluded`)."""
    h, w = hw
    uv, depth = cameras.project(points, views)  # each point in its own view
    depth = depth.detach()
    u, v_ = uv.detach().unbind(-1)
    seen = (depth > 0) & (u >= 0) & (u < w) & (v_ >= 0) & (v_ < h)
    if alpha is not None:
        seen &= gather_bilinear(alpha, views, hw, uv.detach())[:, 0] > 0.5
    return gather_bilinear(images, views, hw, uv), seen


def blurred_images(flat: torch.Tensor, n: int, hw: tuple[int, int],
                   sigma: float) -> torch.Tensor:
    """The flat pixels (n * H * W, C) of n images blurred by a Gaussian of `sigma` pixels
    (separable, borders replicated); the images themselves below 0.3 pixels."""
    if sigma < 0.3:
        return flat
    h, w = hw
    c = flat.shape[-1]
    r = math.ceil(3.0 * sigma)
    k = torch.exp(-torch.arange(-r, r + 1, dtype=flat.dtype) ** 2 / (2.0 * sigma * sigma))
    k = k / k.sum()
    img = flat.reshape(n, h, w, c).permute(0, 3, 1, 2).reshape(n * c, 1, h, w)
    img = nn.functional.conv2d(nn.functional.pad(img, (r, r, 0, 0), mode="replicate"),
                               k.view(1, 1, 1, -1))
    img = nn.functional.conv2d(nn.functional.pad(img, (0, 0, r, r), mode="replicate"),
                               k.view(1, 1, -1, 1))
    return img.reshape(n, c, h, w).permute(0, 2, 3, 1).reshape(-1, c).contiguous()


def nearest_views(c2w: torch.Tensor, centre: torch.Tensor, k: int) -> torch.Tensor:
    """(n, k) for each of n cameras (c2w (n, 3, 4)) the k others whose directions from
    `centre` (3,) make the smallest angles with its own (the nearest first)."""
    u = c2w[:, :, 3] - centre
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    cos = u @ u.T
    cos.fill_diagonal_(-float("inf"))
    return cos.topk(min(k, c2w.shape[0] - 1), dim=-1).indices


def reflection_scores(points: torch.Tensor, ref: torch.Tensor, own: torch.Tensor,
                      images: torch.Tensor, cameras: Any, views: torch.Tensor, sdf: Any,
                      aabb: torch.Tensor, alpha: torch.Tensor | None = None,
                      margin: float = 0.03, occlusion_samples: int = 8,
                      tolerance: float = 0.0) -> torch.Tensor:
    """Ref-NeuS's reflection score (P,) of pixels of colour `ref` (P, 3), seen in views
    `own` (P,), whose surface points are `points` (P, 3): how far the pixel's colour lies from
    the colours the same point has in the other training views `views` (K,). A point of a
    diffuse surface looks alike from everywhere (a score near 0); a reflection moves over the
    surface as the view changes, so its pixel is an outlier (a large score).

    `images` (n * H * W, 3) are the training images' pixels, flat (as `RayBatcher.colors`),
    `alpha` (n * H * W, 1) their coverage, `cameras` theirs. A point is projected into each
    view of `views` and counted there only when it lands inside the image, on the object
    (alpha > 0.5, when given) and unoccluded: `sdf` stays positive at `occlusion_samples`
    points on the segment from `margin` off the point towards the camera (clipped to
    `aabb`; an occluder thinner than the samples' spacing can slip between them). The score
    is the median over the counted views of the mean absolute RGB difference (with
    `tolerance` > 0, in each view the smallest of the projection's and its four neighbours'
    `tolerance` pixels away: resampling and sub-pixel misregistration are not reflections);
    0 where fewer than two views count. No gradients."""
    h, w = cameras.height, cameras.width
    n = points.shape[0]
    diffs = torch.full((n, len(views)), float("nan"))
    with torch.no_grad():
        for k, v in enumerate(views.tolist()):  # a few views; every point at once in each
            uv, depth = cameras.project(points, v)
            same = torch.full((n,), v, dtype=torch.long)  # every point looked up in view v
            ok = ((depth > 0) & (own != v) & (uv[:, 0] >= 0) & (uv[:, 0] < w)
                  & (uv[:, 1] >= 0) & (uv[:, 1] < h))
            if alpha is not None:
                ok &= gather_bilinear(alpha, same, (h, w), uv)[:, 0] > 0.5
            idx = torch.nonzero(ok).reshape(-1)
            if idx.numel() == 0:
                continue
            clear = _unoccluded(points[idx], cameras.c2w[v, :, 3], sdf, aabb, margin,
                                occlusion_samples)
            idx = idx[clear]
            diff = (gather_bilinear(images, same[idx], (h, w), uv[idx])
                    - ref[idx]).abs().mean(-1)
            if tolerance > 0:  # the best match within `tolerance` pixels (4 neighbours)
                for step in ((tolerance, 0.0), (-tolerance, 0.0), (0.0, tolerance),
                             (0.0, -tolerance)):
                    shifted = gather_bilinear(images, same[idx], (h, w),
                                              uv[idx] + uv.new_tensor(step))
                    diff = torch.minimum(diff, (shifted - ref[idx]).abs().mean(-1))
            diffs[idx, k] = diff
        counted = (~diffs.isnan()).sum(-1)
        score = diffs.nanmedian(dim=-1).values
        return torch.where(counted >= 2, score, torch.zeros_like(score))


def reflection_weights(score: torch.Tensor, threshold: float, scale: float) -> torch.Tensor:
    """Ref-NeuS's per-pixel weights (R,) of the colour loss from reflection scores (R,):
    ``1 / (1 + max(score - threshold, 0) / scale)``, 1 up to `threshold` (a diffuse
    surface's noise), a half at `threshold + scale`."""
    return 1.0 / (1.0 + (score - threshold).clamp_min(0.0) / scale)


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
        params: Any = self.field.parameters()
        if config.variance_lr > 0:  # the sharpness on a learning rate of its own
            rest = [p for p in self.field.parameters() if p is not self.field.variance]
            params = [{"params": rest},
                      {"params": [self.field.variance], "lr_scale": config.variance_lr / config.lr}]
        self.optimizer = torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.99), eps=1e-15)
        self.rays = RayBatcher(data.train, data.background)
        self.n_rays = config.initial_rays
        self.generator = torch.Generator().manual_seed(seed)
        self.evaluate_fn = evaluate_fn
        self.band = 2.0 * float((data.aabb[1] - data.aabb[0]).max()) / config.grid_resolution
        self.anneal = 0.0
        self.neighbours: torch.Tensor | None = None
        self._blur: tuple[float, torch.Tensor] | None = None  # (sigma, the blurred images)
        if config.photo_consistency > 0:
            h, w = self.rays.hw
            n = len(data.train)
            if n < 2 or h < 2 or w < 2:
                raise ValueError(f"{data.name}: NeusConfig.photo_consistency needs two or more "
                                 f"training views of 2 x 2 pixels or more, got {n} of {w} x {h} "
                                 "(--config '{\"photo_consistency\": 0}' turns it off)")
            self.neighbours = nearest_views(self.rays.cameras.c2w, data.aabb.mean(0),
                                            config.consistency_views)

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
            if self.field.config.reflected:  # per sample: it depends on the normal
                view = self.field.direction_inputs(d[ri], normals)
            else:
                with torch.no_grad():  # per ray, not per sample
                    view = self.field.view_encoding(d)[ri]
            rgb = self.field.color(view, normals, feat)
            out = composite(sig, rgb, ts, te, ri, offsets, bg)
        out["grad"] = g
        out["n_samples"] = torch.tensor(ri.shape[0])
        return out

    def train_step(self, step: int, progress: float) -> dict[str, float]:
        c = self.config
        if step % c.occupancy_every == 0:
            self.grid.update(step, self.occupancy, occ_thre=0.01, warmup_steps=64)
        self.anneal = min(1.0, step / max(c.cos_anneal_steps, 1))
        self.field.normal_grad = progress < c.reflection_normal_grad
        if c.coarse_to_fine > 0:
            t = progress / c.coarse_to_fine
            self.field.reveal_levels(
                None if t >= 1.0 else c.start_levels + (c.n_levels - c.start_levels) * t)
        lr = c.lr * (0.1 ** max(0.0, (progress - 0.5) / 0.5))
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        o, d, target, bg = self.rays.sample(self.n_rays, self.generator, False, True)
        idx = self.rays.last_index
        out = self.render_rays(o, d, bg)
        l1_rays = (out["rgb"] - target).abs().mean(-1)
        stats: dict[str, float] = {}
        if c.reflection_score and progress >= c.reflection_start:
            # Ref-NeuS: the colour as a distribution whose spread grows with the pixel's
            # reflection score, i.e. its L1 divided by 1 + score / scale
            weight = reflection_weights(self.pixel_scores(o, d, out, target, idx),
                                        c.reflection_threshold, c.reflection_scale)
            l1 = (weight * l1_rays).mean()
            stats["reflection_weight"] = float(weight.mean())
        else:
            weight, l1 = None, l1_rays.mean()
        if c.photo_consistency > 0:
            diff, seen = self.consistency(o, d, out, idx, progress)
            if weight is not None:  # a reflection is inconsistent at the true surface too
                diff = diff * weight
            pc = diff[seen].sum() / max(int(seen.sum()), 1)
            l1 = l1 + c.photo_consistency * pc
            stats["consistency"] = float(pc.detach())
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
                "s": self.field.sharpness().item(), "rays": float(o.shape[0]), **stats}

    def pixel_scores(self, o: torch.Tensor, d: torch.Tensor, out: dict[str, torch.Tensor],
                     target: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """`reflection_scores` (R,) of a batch's pixels `idx` at their rendered depth, against
        `reflection_views` training views drawn at random; 0 for rays that miss (opacity
        below 0.5)."""
        c = self.config
        h, w = self.rays.hw
        n_views = len(self.data.train)
        hit = torch.nonzero(out["opacity"].detach()[:, 0] > 0.5).reshape(-1)
        scores = torch.zeros(o.shape[0])
        if hit.numel() == 0 or n_views < 2:
            return scores
        views = torch.randperm(n_views, generator=self.generator)[:c.reflection_views]
        x = o[hit] + d[hit] * out["depth"].detach()[hit]
        scores[hit] = reflection_scores(
            x, target[hit], idx[hit] // (h * w), self.rays.colors, self.rays.cameras, views,
            self.field.sdf, self.field.aabb, self.rays.alpha, margin=4 * self.step_size,
            tolerance=c.reflection_tolerance)
        return scores

    def consistency(self, o: torch.Tensor, d: torch.Tensor, out: dict[str, torch.Tensor],
                    idx: torch.Tensor, progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Multi-view photometric consistency (Geo-NeuS, NeuralWarp) of a batch's pixels
        `idx`: the mean absolute RGB difference (R,) between each pixel and its surface point
        (at the rendered depth, with its gradient) in one of its view's `consistency_views`
        nearest training views drawn at random, both images blurred by
        `consistency_blur` pixels halved after each third of the run (so that a surface far
        from its place still has an image gradient to follow), and where it counts (R,): the
        ray hits (opacity > 0.5), the point is seen in the other view (inside, on the object,
        unoccluded)."""
        c = self.config
        assert self.neighbours is not None
        h, w = self.rays.hw
        sigma = c.consistency_blur * 0.5 ** min(int(progress * 3.0), 2)
        if self._blur is None or self._blur[0] != sigma:
            self._blur = (sigma, blurred_images(self.rays.colors, len(self.data.train),
                                                (h, w), sigma))
        images = self._blur[1]
        n = o.shape[0]
        diff, seen = torch.zeros(n), torch.zeros(n, dtype=torch.bool)
        hit = torch.nonzero(out["opacity"].detach()[:, 0] > 0.5).reshape(-1)
        if hit.numel() == 0:
            return diff, seen
        own = idx[hit] // (h * w)
        pick = torch.randint(0, self.neighbours.shape[1], (hit.numel(),),
                             generator=self.generator)
        other = self.neighbours[own, pick]
        x = o[hit] + d[hit] * out["depth"][hit]
        colour, ok = reprojected_colours(x, other, images, (h, w), self.rays.cameras,
                                         self.rays.alpha)
        if bool(ok.any()):
            k = torch.nonzero(ok).reshape(-1)
            clear = _unoccluded(x[k].detach(), self.rays.cameras.c2w[other[k], :, 3],
                                self.field.sdf, self.field.aabb, 4 * self.step_size, 8)
            ok[k[~clear]] = False
        diff = diff.index_put((hit,), (colour - images[idx[hit]]).abs().mean(-1))
        seen[hit] = ok
        return diff, seen

    def evaluate(self, final: bool) -> dict[str, float]:
        return {} if self.evaluate_fn is None else self.evaluate_fn(self.field, final)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "n_rays": self.n_rays}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.n_rays = int(state["n_rays"])
