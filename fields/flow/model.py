"""Scene flow between point clouds by a neural prior, optimised at run time (no training data).

Two methods, one interface (`fit_flow`):

- ``"nsfp"``: Neural Scene Flow Prior (Li, Kaesemodel Pontes and Lucey, NeurIPS 2021). A
  coordinate MLP f (default 8 hidden layers x 128, ReLU, a `FusedMLP`) maps each source point
  to its flow and is fitted to this one pair: the loss is the Chamfer distance between the
  moved source x + f(x) and the target, in both directions, with nearest-neighbour pairs farther
  than `truncate` ignored (outlier-robust). A second network g (the backward flow) maps the moved
  points back, and the Chamfer distance between x + f(x) + g(x + f(x)) and the source is added
  (cycle consistency). Nearest neighbours come from a k-d tree (scipy), rebuilt for the moving
  cloud at every iteration; gradients flow through the matched points' coordinates.
- ``"dt"``: Fast Neural Scene Flow (Li, Zheng, Lucey et al., ICCV 2023). The nearest-neighbour
  search leaves the loop: the distance transform of the target (`DistanceGrid`, a C++ kernel:
  csrc/kernels/dt_cpu.*) gives, for every cell of a grid around the target, the distance to its
  nearest point and that point's index, once. With ``point_to_plane`` (the default for this
  method) the loss of a moved source point is its squared distance to the tangent plane of the
  nearest target point of its cell (normals by PCA of the target, once), a lookup, no search:
  sliding along a sampled surface costs nothing, so the lidar's sampling pattern does not pull
  the points. Without it, the loss is the trilinearly interpolated distance, squared (torch's
  grid_sample gives the gradient). One network, one direction.

A fit is a `FlowTask` run by the one training loop (`fields.train.train`: budgets, checkpoints,
resume, Ctrl-C), one optimiser step per loop step; `fit_flow` is the wrapper that runs it
without a progress bar. Both methods stop early (the task's `done`) when the loss has not
improved by `min_delta` (relative) for `patience` iterations, and return the flow (and the
network parameters) of the iteration with the lowest loss, as NSFP does.

Long-term motion (`integrate`, `accumulate`): the per-pair fields of a sequence are chained by
Euler steps, p_{k+1} = p_k + f_k(p_k), which gives trajectories of the first frame's points and
moves every sweep to a common time (a dense accumulated cloud).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import nn

from fields import _ext
from fields.nn.mlp import FusedMLP

METHODS = ("nsfp", "dt")


@dataclass
class FlowConfig:
    """Settings of a scene-flow fit. `method` picks NSFP (Chamfer) or the distance transform."""

    method: str = "nsfp"
    width: int = 128
    depth: int = 8  # hidden layers
    activation: str = "ReLU"
    lr: float = 8e-3
    max_iters: int = 5000
    patience: int = 100
    min_delta: float = 1e-4  # relative improvement of the loss that resets the patience
    truncate: float = 2.0  # metres: farther nearest-neighbour pairs (or distances) are ignored
    backward: bool = True  # nsfp: backward-flow network and cycle term
    voxel: float = 0.1  # dt: grid cell size in metres
    margin: float = 2.0  # dt: grid extends this far beyond the target's bounding box
    backend: str = "auto"  # FusedMLP backend
    input_scale: float = 1.0  # the network sees x * input_scale (smaller: a smoother prior)
    point_to_plane: bool = False  # source-to-target distances to the target's tangent planes
    tangent_weight: float = 0.0  # point_to_plane: weight of the along-plane part of the offset
    plane_radius: float = 0.0  # point_to_plane: beyond this offset, point-to-point (0: never)
    normal_neighbours: int = 12  # points of the PCA that estimates each target normal
    rigid: bool = False  # a global rigid motion (the ego-motion) plus the network's residual
    rigid_iters: int = 300  # rigid: iterations fitting the rigid motion alone, first
    rigid_lr: float = 1e-2
    rigid_truncate: float = 0.5  # rigid: farther pairs are left out of that first fit
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"FlowConfig.method: expected one of {METHODS}, got {self.method!r}")
        for name in ("width", "depth", "max_iters", "patience", "normal_neighbours",
                     "rigid_iters"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"FlowConfig.{name}: expected a positive integer, got {value!r}")
        for name in ("lr", "truncate", "voxel", "input_scale", "rigid_lr", "rigid_truncate"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"FlowConfig.{name}: expected a positive number, got {value!r}")
        if not (isinstance(self.margin, (int, float)) and self.margin >= 0):
            raise ValueError(f"FlowConfig.margin: expected a number >= 0, got {self.margin!r}")
        if not (isinstance(self.plane_radius, (int, float)) and self.plane_radius >= 0):
            raise ValueError(
                f"FlowConfig.plane_radius: expected a number >= 0, got {self.plane_radius!r}"
            )
        if not (isinstance(self.tangent_weight, (int, float)) and self.tangent_weight >= 0):
            raise ValueError(
                f"FlowConfig.tangent_weight: expected a number >= 0, got {self.tangent_weight!r}"
            )
        if not (isinstance(self.min_delta, (int, float)) and self.min_delta >= 0):
            raise ValueError(f"FlowConfig.min_delta: expected >= 0, got {self.min_delta!r}")

    @classmethod
    def for_method(cls, method: str, **overrides: Any) -> FlowConfig:
        """The default configuration of a method (`DEFAULTS`), with overrides."""
        if method not in METHODS:
            raise ValueError(f"unknown scene-flow method {method!r}; expected one of {METHODS}")
        return cls(**{**DEFAULTS[method], "method": method, **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FlowConfig:
        """A FlowConfig from a dict of its fields; ValueError naming unknown keys."""
        from fields.config import dataclass_from_dict

        return dataclass_from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The methods' defaults. nsfp: the paper's network, optimiser and loss (point-to-point
# Chamfer both ways, backward network). dt: a 6 x 64 network on coordinates scaled by 0.1 (a
# smoother prior), Adam 1e-2, and the point-to-plane loss through the distance transform's
# nearest-point map with 3% of the along-plane offset kept: without it the vertical position
# of points on vertical surfaces (most of a street once the ground is removed) is unconstrained
# and drifts, and some network seeds end far off. A global rigid motion (the ego-motion), fitted
# alone first, carries what the network would otherwise have to learn everywhere. Chosen by
# `fields bench flow --seeds 3` on the built-in pairs (README, scene flow).
DEFAULTS: dict[str, dict[str, Any]] = {
    "nsfp": {"width": 128, "depth": 8, "lr": 8e-3, "backward": True},
    "dt": {"width": 64, "depth": 6, "lr": 1e-2, "backward": False, "input_scale": 0.1,
           "point_to_plane": True, "tangent_weight": 0.03, "rigid": True},
}


class FlowField(nn.Module):
    """x (N, 3) -> flow (N, 3): a FusedMLP on raw coordinates (metres), as NSFP.

    With `config.rigid`, flow(x) = R x + t - x + mlp(x): a global rigid motion (rotation vector
    and translation, starting at the identity) carries what all points share, the sensor's own
    motion in lidar coordinates, and the network the rest. Where a point's loss leaves a
    direction free (the vertical and the along-wall directions of a wall, for point-to-plane
    losses) its flow then follows the scene's rigid motion instead of whatever the network
    extrapolates.
    """

    def __init__(self, config: FlowConfig) -> None:
        super().__init__()
        self.input_scale = float(config.input_scale)
        self.rigid = nn.Parameter(torch.zeros(6)) if config.rigid else None
        self.mlp = FusedMLP(
            3,
            3,
            config.width,
            config.depth,
            config.activation,
            "None",
            bias=True,
            backend=config.backend,
        )
        # nn.Linear's default initialisation (uniform in +-1/sqrt(fan_in)), as NSFP: on raw
        # coordinates in metres the activations shrink layer by layer, so the flow starts near
        # zero (He initialisation would start it at metres).
        with torch.no_grad():
            for w, b in zip(self.mlp.weights, self.mlp.biases, strict=True):
                bound = 1.0 / math.sqrt(w.shape[1])
                w.uniform_(-bound, bound)
                b.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The flow (N, 3) at points x (N, 3): the network's plus the rigid motion's."""
        flow = self.network(x)
        if self.rigid is not None:
            rot, trans = self.rigid_motion()
            flow = flow + x @ (rot - torch.eye(3, dtype=rot.dtype)).T.to(x.dtype) + trans
        return flow

    def network(self, x: torch.Tensor) -> torch.Tensor:
        """The network's part (N, 3) of the flow at points x (N, 3), without the rigid part."""
        return self.mlp(x * self.input_scale if self.input_scale != 1.0 else x)

    def rigid_motion(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(R (3, 3), t (3,)) of the global rigid part (identity without `config.rigid`)."""
        if self.rigid is None:
            return torch.eye(3), torch.zeros(3)
        w = self.rigid[:3]
        zero = w.new_zeros(())
        skew = torch.stack((torch.stack((zero, -w[2], w[1])),
                            torch.stack((w[2], zero, -w[0])),
                            torch.stack((-w[1], w[0], zero))))
        return torch.linalg.matrix_exp(skew), self.rigid[3:]


# -- nearest neighbours and the truncated Chamfer distance --


def nearest(tree: cKDTree, query: torch.Tensor) -> torch.Tensor:
    """Index (N,) of the nearest point of `tree` to each query point (no gradient)."""
    _, idx = tree.query(query.detach().cpu().numpy(), k=1, workers=-1)
    return torch.from_numpy(np.asarray(idx, dtype=np.int64))


def chamfer(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    truncate: float | None = None,
    tree_a: cKDTree | None = None,
    tree_b: cKDTree | None = None,
    normals_b: torch.Tensor | None = None,
    tangent_weight: float = 0.0,
    plane_radius: float | None = None,
    both: bool = True,
) -> torch.Tensor:
    """Symmetric Chamfer distance: mean over a of the squared distance to the nearest point of
    b, plus the same from b to a. With `normals_b` (unit normals of b, zero where undefined),
    the a-to-b term is the squared distance to the tangent plane of the nearest point of b
    (point-to-plane, as in ICP): sliding along a sampled surface costs nothing, so the sampling
    pattern of b does not pull the points (`tangent_weight` > 0 keeps a little of that pull, see
    `plane_distance_sq`). Pairs farther apart than `truncate` (point to
    point) are left out of the means (an outlier-robust Chamfer). Differentiable in the
    coordinates of a and b (the pairs are chosen without gradient). Trees of a and b are built
    when not given. `both=False`: the a-to-b term alone."""
    tree_b = tree_b if tree_b is not None else cKDTree(b.detach().cpu().numpy())
    nn_b = nearest(tree_b, a)
    diff = a - b[nn_b]
    d_ab = diff.square().sum(-1)
    keep_ab = d_ab.detach() <= (math.inf if truncate is None else truncate * truncate)
    if normals_b is not None:  # point-to-plane where b's normal is defined (nonzero)
        d_ab = plane_distance_sq(diff, normals_b[nn_b], tangent_weight, plane_radius)
    d_ab = d_ab[keep_ab]
    zero = a.sum() * 0.0
    loss = d_ab.mean() if d_ab.numel() else zero
    if not both:
        return loss
    tree_a = tree_a if tree_a is not None else cKDTree(a.detach().cpu().numpy())
    d_ba = (b - a[nearest(tree_a, b)]).square().sum(-1)
    if truncate is not None:
        d_ba = d_ba[d_ba.detach() <= truncate * truncate]
    return loss + (d_ba.mean() if d_ba.numel() else zero)


def plane_distance_sq(diff: torch.Tensor, normals: torch.Tensor, tangent_weight: float = 0.0,
                      radius: float | None = None) -> torch.Tensor:
    """(N,) squared point-to-plane distance of offsets `diff` (N, 3) from points with unit
    `normals` (N, 3), plus w times the squared along-plane part, w = max(tangent_weight,
    min(1, |diff|^2 / radius^2)) (not differentiated; no radius term when it is None or 0): a
    tangent plane describes the surface only
    near its point, so farther away the distance turns into the point distance. The squared
    length of the offset where the normal is undefined (zero)."""
    along = (diff * normals).sum(-1)
    full = diff.square().sum(-1)
    d = along.square()
    w = torch.full_like(full, float(tangent_weight))
    if radius:
        w = torch.maximum(w, (full.detach() / (radius * radius)).clamp_max(1.0))
    d = d + w * (full - d).clamp_min(0.0)
    return torch.where(normals.abs().sum(-1) > 0, d, full)


def chamfer_reference(a: torch.Tensor, b: torch.Tensor, truncate: float | None = None):
    """`chamfer` by brute force (all pairwise distances): the reference for tests."""
    d = torch.cdist(a, b).square()
    d_ab, d_ba = d.min(dim=1).values, d.min(dim=0).values
    if truncate is not None:
        d_ab = d_ab[d_ab <= truncate * truncate]
        d_ba = d_ba[d_ba <= truncate * truncate]
    zero = a.sum() * 0.0
    return (d_ab.mean() if d_ab.numel() else zero) + (d_ba.mean() if d_ba.numel() else zero)


def estimate_normals(
    points: torch.Tensor, k: int = 12, viewpoint: Sequence[float] = (0.0, 0.0, 0.0),
    max_curvature: float = 0.05,
) -> torch.Tensor:
    """Unit normals (N, 3) of a point cloud by PCA of each point's k nearest neighbours (the
    eigenvector of the smallest eigenvalue), oriented towards `viewpoint` (the sensor: the
    origin of lidar data in sensor coordinates). Where the neighbourhood is not flat (surface
    variation lambda_min / sum(lambda) above `max_curvature`) or has fewer than 3 points, the
    normal is zero (undefined)."""
    pts = _points_tensor(points, "points")
    k = min(int(k), pts.shape[0])
    if k < 3:
        return torch.zeros_like(pts)
    _, idx = cKDTree(pts.numpy()).query(pts.numpy(), k=k, workers=-1)
    nb = pts.double()[torch.from_numpy(np.asarray(idx, dtype=np.int64))]
    centred = nb - nb.mean(dim=1, keepdim=True)
    evals, evecs = torch.linalg.eigh(centred.transpose(1, 2) @ centred)
    normals = evecs[:, :, 0]
    variation = evals[:, 0] / evals.sum(dim=1).clamp_min(1e-30)
    towards = torch.tensor(list(viewpoint), dtype=torch.float64) - pts.double()
    normals = torch.where(((normals * towards).sum(-1) < 0)[:, None], -normals, normals)
    normals = torch.where((variation <= max_curvature)[:, None], normals, 0.0)
    return normals.float()


# -- distance transform --


@dataclass
class DistanceGrid:
    """The distance transform of a cloud: on a grid of cell centres origin + voxel * (i, j, k),
    `values` (nz, ny, nx) holds the distance to the nearest point and `nearest` (nz, ny, nx)
    that point's index (the feature transform).

    Calling the grid on (N, 3) points gives the trilinearly interpolated distance,
    differentiable in the points; outside the grid, the distance at the nearest border point
    plus the distance to the grid. `lookup` gives, without any search, the index of the nearest
    point of the cell each point falls in: a correspondence for point-to-plane losses.
    """

    values: torch.Tensor
    origin: torch.Tensor
    voxel: float
    nearest: torch.Tensor

    @classmethod
    def build(
        cls,
        points: torch.Tensor,
        voxel: float = 0.1,
        margin: float = 2.0,
        *,
        backend: str = "auto",
        max_cells: int = 2**28,
    ) -> DistanceGrid:
        """The grid over the points' bounding box grown by `margin`. backend "cpu" (the C++
        kernel), "torch" (`distance_grid_reference`) or "auto" (the kernel when built)."""
        pts = _points_tensor(points, "points")
        if not (voxel > 0 and math.isfinite(voxel)):
            raise ValueError(f"DistanceGrid: voxel must be positive, got {voxel!r}")
        lo = pts.min(0).values.double() - margin
        hi = pts.max(0).values.double() + margin
        dims = [int(n) for n in torch.ceil((hi - lo) / voxel).long() + 1]
        cells = dims[0] * dims[1] * dims[2]
        if cells > max_cells:
            raise ValueError(
                f"DistanceGrid: {dims[0]}x{dims[1]}x{dims[2]} = {cells} cells for a "
                f"{(hi - lo).tolist()} m box at voxel {voxel} m exceeds {max_cells}; "
                "use a larger voxel or a smaller margin"
            )
        origin = lo.float()
        if backend not in ("auto", "cpu", "torch"):
            raise ValueError(f"DistanceGrid: backend must be auto, cpu or torch, got {backend!r}")
        if backend == "cpu" or (backend == "auto" and _ext.available()):
            values, nearest_idx = _ext.extension().distance_transform_cpu(
                pts.contiguous(), origin.double().tolist(), float(voxel), dims
            )
        else:
            values, nearest_idx = distance_grid_reference(pts, origin, voxel, dims)
        return cls(values=values, origin=origin, voxel=float(voxel), nearest=nearest_idx)

    @property
    def dims(self) -> tuple[int, int, int]:
        """(nx, ny, nz)"""
        nz, ny, nx = self.values.shape
        return nx, ny, nz

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        nx, ny, nz = self.dims
        size = torch.tensor([nx - 1, ny - 1, nz - 1], dtype=x.dtype).clamp_min(1) * self.voxel
        lo = self.origin.to(x.dtype)
        inside = torch.minimum(torch.maximum(x, lo), lo + size)
        g = (inside - lo) / size * 2.0 - 1.0
        d = F.grid_sample(
            self.values[None, None].to(x.dtype),
            g.reshape(1, 1, 1, -1, 3),
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        ).reshape(-1)
        outside = (x - inside).norm(dim=-1)
        return d + outside

    def lookup(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) int64 index of the nearest point to the centre of the cell nearest to each point
        (clamped to the grid), no gradient."""
        nx, ny, nz = self.dims
        cell = torch.round((x.detach() - self.origin.to(x.dtype)) / self.voxel).long()
        ix = cell[:, 0].clamp(0, nx - 1)
        iy = cell[:, 1].clamp(0, ny - 1)
        iz = cell[:, 2].clamp(0, nz - 1)
        return self.nearest.reshape(-1)[(iz * ny + iy) * nx + ix].long()


def _cell_centres(origin: torch.Tensor, voxel: float, dims: Sequence[int]) -> torch.Tensor:
    """(cells, 3) float64 centres, in storage order."""
    nx, ny, nz = dims
    zz, yy, xx = torch.meshgrid(
        torch.arange(nz), torch.arange(ny), torch.arange(nx), indexing="ij"
    )
    return torch.stack((xx, yy, zz), -1).reshape(-1, 3).double() * voxel + origin.double()


def distance_grid_reference(
    points: torch.Tensor, origin: torch.Tensor, voxel: float, dims: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact distance from every cell centre to the nearest point and that point's index,
    by brute force in chunks (torch.cdist): the reference of the C++ kernel. Returns
    ((nz, ny, nx) float32, (nz, ny, nx) int32)."""
    nx, ny, nz = dims
    centres = _cell_centres(origin, voxel, dims)
    pts = points.double()
    mins = [torch.cdist(c, pts).min(dim=1) for c in centres.split(4096)]
    dist = torch.cat([m.values for m in mins]).float().reshape(nz, ny, nx)
    idx = torch.cat([m.indices for m in mins]).int().reshape(nz, ny, nx)
    return dist, idx


# -- fitting --


@dataclass
class FlowFit:
    """The result of `fit_flow`: the flow (N, 3) of each source point at the best iteration,
    the fitted network(s) (holding the best iterate's parameters) and the history.

    `iters` and `best_iter` count network iterations (the flow phase); `steps` counts every
    optimisation step of the loop (the rigid phase's too). `seconds` is the whole fit, set-up
    included; `setup_seconds` the set-up alone (trees, normals, distance grid);
    `train_seconds` the loop's training time."""

    flow: torch.Tensor
    forward_field: FlowField
    backward_field: FlowField | None
    config: FlowConfig
    iters: int
    best_iter: int
    best_loss: float
    seconds: float
    setup_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    rigid_steps: int = 0
    train_seconds: float = 0.0


def _points_tensor(points: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    pts = torch.as_tensor(np.asarray(points) if not torch.is_tensor(points) else points)
    if pts.dim() != 2 or pts.shape[1] != 3 or pts.shape[0] < 1:
        raise ValueError(f"{name}: expected an (N, 3) point array with N >= 1, got "
                         f"{tuple(pts.shape)}")
    pts = pts.float()
    if not torch.isfinite(pts).all():
        raise ValueError(f"{name}: points must be finite")
    return pts


class FlowTask:
    """The fit of the flow from `source` (N, 3) to `target` (M, 3) by `config.method`, as
    `fields.train.train` drives it: one optimiser step per `train_step`.

    With `config.rigid`, the steps first fit the global rigid motion alone (the "rigid"
    phase: its own Adam on the 6 rigid parameters, the network fixed, at most
    `config.rigid_iters` steps, ended early like the flow phase), then the network and the
    rigid part together (the "flow" phase: Adam on every parameter, at most
    `config.max_iters` iterations). Both phases stop when the loss has not improved by
    `min_delta` (relative) for `patience` iterations; the end of the flow phase sets `done`,
    which ends the loop. The parameters and the flow of the iteration with the lowest loss are
    kept (in `state_dict`, with the phase and the rigid optimiser, so that a checkpoint
    resumes); `result()` puts them back into the networks.

    `module` holds ``forward_field`` (and ``backward_field`` for NSFP's cycle term), the
    tensors of a checkpoint. `evaluate` gives the best loss, and the scene-flow errors when
    `gt` (N, 3) is given. `on_record` gets each history record {"iter", "step", "loss",
    "best_loss", "seconds"} (every `log_every` iterations and the last).
    """

    def __init__(
        self,
        source: np.ndarray | torch.Tensor,
        target: np.ndarray | torch.Tensor,
        config: FlowConfig | None = None,
        *,
        gt: np.ndarray | torch.Tensor | None = None,
        on_record: Callable[[dict[str, float]], None] | None = None,
        log_every: int = 10,
    ) -> None:
        cfg = config or FlowConfig()
        self.config = cfg
        self.source = x1 = _points_tensor(source, "source")
        self.target = x2 = _points_tensor(target, "target")
        self.gt = None if gt is None else _points_tensor(gt, "gt")
        if self.gt is not None and self.gt.shape != x1.shape:
            raise ValueError(f"gt: expected the flow of every source point {tuple(x1.shape)}, "
                             f"got {tuple(self.gt.shape)}")
        self.on_record, self.log_every = on_record, log_every
        self.t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            fwd = FlowField(cfg)
            bwd = FlowField(cfg) if cfg.method == "nsfp" and cfg.backward else None
        self.forward_field, self.backward_field = fwd, bwd
        self.module = nn.ModuleDict({"forward_field": fwd})
        if bwd is not None:
            self.module["backward_field"] = bwd
        self.names = [n for n, _ in self.module.named_parameters()]
        self.params = [p for _, p in self.module.named_parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr)
        self.rigid_optimizer = (torch.optim.Adam([fwd.rigid], lr=cfg.rigid_lr)
                                if fwd.rigid is not None else None)

        self.grid: DistanceGrid | None = None
        self.tree1 = self.tree2 = None
        self.normals = estimate_normals(x2, cfg.normal_neighbours) if cfg.point_to_plane else None
        if cfg.method == "dt":
            self.grid = DistanceGrid.build(x2, cfg.voxel, cfg.margin)
        else:
            self.tree1, self.tree2 = cKDTree(x1.numpy()), cKDTree(x2.numpy())
        self.setup_seconds = time.perf_counter() - self.t0

        self.phase = "rigid" if self.rigid_optimizer is not None else "flow"
        self.rigid_steps, self.rigid_best, self.rigid_since = 0, math.inf, 0
        self._base: torch.Tensor | None = None  # the fixed network's flow, in the rigid phase
        self.iters, self.best_iter, self.best_loss, self.since_best = 0, 0, math.inf, 0
        self.best_flow = torch.zeros_like(x1)
        self.best_state = [p.detach().clone() for p in self.params]
        self.history: list[dict[str, float]] = []
        self.done = False

    @property
    def max_steps(self) -> int:
        """The most steps the fit can take: both phases' budgets."""
        rigid = self.config.rigid_iters if self.rigid_optimizer is not None else 0
        return self.config.max_iters + rigid

    # -- losses --

    def one_way(self, moved: torch.Tensor, truncate: float) -> torch.Tensor:
        """The source-to-target term of the moved source points (N, 3): a scalar."""
        cfg, x2, normals = self.config, self.target, self.normals
        if self.grid is None:
            return chamfer(moved, x2, truncate=truncate, tree_b=self.tree2, normals_b=normals,
                           tangent_weight=cfg.tangent_weight, plane_radius=cfg.plane_radius,
                           both=False)
        if normals is None:  # the interpolated distance
            d = self.grid(moved)
            d = d[d.detach() <= truncate].square()
        else:  # point-to-plane to the nearest point of the moved point's cell
            idx = self.grid.lookup(moved)
            diff = moved - x2[idx]
            keep = diff.detach().norm(dim=-1) <= truncate
            d = plane_distance_sq(diff, normals[idx], cfg.tangent_weight,
                                  cfg.plane_radius)[keep]
        return d.mean() if d.numel() else moved.sum() * 0.0

    def loss(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(the flow phase's loss, the flow (N, 3) of the source points)."""
        cfg, x1 = self.config, self.source
        flow = self.forward_field(x1)
        moved = x1 + flow
        if self.grid is not None:
            return self.one_way(moved, cfg.truncate), flow
        loss = chamfer(moved, self.target, truncate=cfg.truncate, tree_b=self.tree2,
                       normals_b=self.normals, tangent_weight=cfg.tangent_weight,
                       plane_radius=cfg.plane_radius)
        if self.backward_field is not None:
            back = moved + self.backward_field(moved)
            loss = loss + chamfer(back, x1, truncate=cfg.truncate, tree_b=self.tree1)
        return loss, flow

    # -- steps --

    def train_step(self, step: int, progress: float) -> dict[str, float]:
        """One step of the rigid optimiser (rigid phase) or of the network's (flow phase)."""
        if self.phase == "rigid":
            scalars = self._rigid_step()
            if scalars is not None:
                return scalars
        return self._flow_step()

    def _rigid_step(self) -> dict[str, float] | None:
        """A step of the rigid motion alone; None (and no step) when the phase has ended."""
        cfg, fwd = self.config, self.forward_field
        if self._base is None:
            with torch.no_grad():
                self._base = fwd.network(self.source)
        rot, trans = fwd.rigid_motion()
        moved = self.source @ rot.T + trans + self._base
        loss = self.one_way(moved, cfg.rigid_truncate)
        value = float(loss.detach())
        if value < self.rigid_best * (1.0 - cfg.min_delta):
            self.rigid_best, self.rigid_since = value, 0
        else:
            self.rigid_since += 1
            if self.rigid_since >= cfg.patience:
                self._end_rigid_phase()
                return None
        assert self.rigid_optimizer is not None
        self.rigid_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.rigid_optimizer.step()
        self.rigid_steps += 1
        if self.rigid_steps >= cfg.rigid_iters:
            self._end_rigid_phase()
        return {"loss": value, "rigid_loss": value}

    def _end_rigid_phase(self) -> None:
        self.phase, self._base = "flow", None

    def _flow_step(self) -> dict[str, float]:
        cfg = self.config
        self.iters += 1
        it = self.iters
        loss, flow = self.loss()
        value = float(loss.detach())
        if value < self.best_loss * (1.0 - cfg.min_delta) or not math.isfinite(self.best_loss):
            self.since_best = 0
        else:
            self.since_best += 1
        if value < self.best_loss:  # keep the parameters that gave this flow (before the step)
            self.best_loss, self.best_iter, self.best_flow = value, it, flow.detach().clone()
            self.best_state = [p.detach().clone() for p in self.params]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.done = self.since_best >= cfg.patience or it >= cfg.max_iters
        if it % self.log_every == 0 or self.done:
            rec = {"iter": it, "step": it + self.rigid_steps, "loss": value,
                   "best_loss": self.best_loss, "seconds": time.perf_counter() - self.t0}
            self.history.append(rec)
            if self.on_record is not None:
                self.on_record(rec)
        return {"loss": value, "best_loss": self.best_loss}

    def evaluate(self, final: bool) -> dict[str, float]:
        """The best loss so far, and the errors of the best flow against `gt` when known."""
        from fields.metrics import scene_flow_metrics

        out: dict[str, float] = {"best_loss": self.best_loss, "best_iter": self.best_iter}
        if self.gt is not None and self.iters > 0:
            out.update(scene_flow_metrics(self.best_flow, self.gt))
        return out

    # -- state --

    def best_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict of `module` with the best iterate's parameters (the current ones
        while the flow phase has not begun: the rigid motion fitted so far)."""
        if self.iters == 0:
            return self.module.state_dict()
        return {**self.module.state_dict(), **dict(zip(self.names, self.best_state,
                                                       strict=True))}

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the module and the flow phase's optimiser that a resumed fit
        needs: the phase, the rigid optimiser, the stopping counters, the best iterate."""
        return {
            "phase": self.phase, "rigid_steps": self.rigid_steps,
            "rigid_best": self.rigid_best, "rigid_since": self.rigid_since,
            "rigid_optimizer": (self.rigid_optimizer.state_dict()
                                if self.rigid_optimizer is not None else None),
            "iters": self.iters, "best_iter": self.best_iter, "best_loss": self.best_loss,
            "since_best": self.since_best, "best_flow": self.best_flow,
            "best_state": self.best_state_dict(), "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what `state_dict` saved (ValueError naming the field that does not fit)."""
        best = state["best_state"]
        missing = [n for n in self.names if n not in best]
        if missing:
            raise ValueError(f"task field 'best_state' lacks {missing}: written by another "
                             "flow configuration")
        if tuple(state["best_flow"].shape) != tuple(self.source.shape):
            raise ValueError(f"task field 'best_flow' has shape {tuple(state['best_flow'].shape)}"
                             f", expected {tuple(self.source.shape)}: another source cloud")
        self.phase = state["phase"]
        self.rigid_steps, self.rigid_since = int(state["rigid_steps"]), int(state["rigid_since"])
        self.rigid_best = float(state["rigid_best"])
        if self.rigid_optimizer is not None and state.get("rigid_optimizer") is not None:
            self.rigid_optimizer.load_state_dict(state["rigid_optimizer"])
        self.iters, self.best_iter = int(state["iters"]), int(state["best_iter"])
        self.best_loss, self.since_best = float(state["best_loss"]), int(state["since_best"])
        self.best_flow = state["best_flow"].float()
        self.best_state = [best[n].detach().clone() for n in self.names]
        self.history = list(state["history"])
        self._base = None

    def checkpoint_extra(self, **info: Any) -> dict[str, Any]:
        """What a checkpoint holds besides the loop's state: the kind, the config, both clouds
        (for `load_flow_field`, the viewer and `fields eval`) and `info`."""
        return {"kind": "flow", "flow_config": self.config.to_dict(), "source": self.source,
                "target": self.target, **info}

    def result(self, seconds: float | None = None, steps: int | None = None,
               train_seconds: float = 0.0) -> FlowFit:
        """The fit: puts the best iterate's parameters into the networks and returns them
        with the best flow (`seconds`: the whole fit, default since the task was built).
        When the budget ended before the flow phase began, the current field's flow."""
        with torch.no_grad():
            if self.iters == 0:
                loss, flow = self.loss()
                self.best_loss, self.best_flow = float(loss), flow
            else:
                for p, best in zip(self.params, self.best_state, strict=True):
                    p.copy_(best)
        return FlowFit(
            flow=self.best_flow,
            forward_field=self.forward_field,
            backward_field=self.backward_field,
            config=self.config,
            iters=self.iters,
            best_iter=self.best_iter,
            best_loss=self.best_loss,
            seconds=time.perf_counter() - self.t0 if seconds is None else seconds,
            setup_seconds=self.setup_seconds,
            history=self.history,
            steps=self.iters + self.rigid_steps if steps is None else steps,
            rigid_steps=self.rigid_steps,
            train_seconds=train_seconds,
        )


def fit_flow(
    source: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    config: FlowConfig | None = None,
    *,
    on_iter: Callable[[dict[str, float]], None] | None = None,
    log_every: int = 10,
    steps: int | None = None,
    max_seconds: float = math.inf,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    checkpoint_every: float = 120.0,
    gt: np.ndarray | torch.Tensor | None = None,
) -> FlowFit:
    """Fits the flow from `source` (N, 3) to `target` (M, 3) by `config.method`: a `FlowTask`
    run by `fields.train.train` (no progress bar) until it stops early, or has used
    `config.max_iters` network iterations (after at most `config.rigid_iters` rigid ones), or
    `steps` optimisation steps of both phases together (when given), or `max_seconds` of
    training.

    `on_iter` gets {"iter", "step", "loss", "best_loss", "seconds"} every `log_every`
    iterations (for progress bars). `checkpoint`: written by the loop (every 120 s, at the end
    and on Ctrl-C) with `checkpoint_extra`; `resume`: a checkpoint to continue from. `seconds`
    counts the whole fit including set-up (trees, distance grid); `setup_seconds` that set-up
    alone.
    """
    from fields.train import TrainConfig, train

    cfg = config or FlowConfig()
    t0 = time.perf_counter()
    task = FlowTask(source, target, cfg, gt=gt, on_record=on_iter, log_every=log_every)
    budget = TrainConfig(steps=task.max_steps if steps is None else steps,
                         max_seconds=max_seconds, eval_every=0.0, seed=cfg.seed,
                         checkpoint_every=checkpoint_every)
    state = train(task, budget, checkpoint=checkpoint, resume=resume,
                  checkpoint_extra=task.checkpoint_extra(**(checkpoint_extra or {})),
                  show_progress=False, log=None)
    return task.result(seconds=time.perf_counter() - t0, steps=state.step,
                       train_seconds=state.seconds)


# -- sequences --


def integrate(
    fields_: Sequence[Callable[[torch.Tensor], torch.Tensor]], points: torch.Tensor
) -> torch.Tensor:
    """Trajectories of `points` through a chain of per-pair flow fields by Euler steps,
    p_{k+1} = p_k + f_k(p_k). Returns (len(fields_) + 1, N, 3), starting with `points`."""
    p = _points_tensor(points, "points")
    out = [p]
    with torch.no_grad():
        for f in fields_:
            p = p + f(p)
            out.append(p)
    return torch.stack(out)


def accumulate(
    frames: Sequence[torch.Tensor | np.ndarray],
    fields_: Sequence[Callable[[torch.Tensor], torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Moves every sweep of a sequence to the time of the last one (frame k through fields
    k .. T-2) and concatenates them: a dense cloud of the last time. Returns the points and the
    frame index of each."""
    if len(fields_) != len(frames) - 1:
        raise ValueError(f"accumulate: {len(frames)} frames need {len(frames) - 1} flow fields, "
                         f"got {len(fields_)}")
    pts, idx = [], []
    for k, frame in enumerate(frames):
        traj = integrate(fields_[k:], _points_tensor(frame, f"frame {k}"))
        pts.append(traj[-1])
        idx.append(torch.full((traj.shape[1],), k, dtype=torch.int32))
    return torch.cat(pts), torch.cat(idx)


# -- outputs --


def _fields_module(forward_field: FlowField, backward_field: FlowField | None) -> nn.Module:
    """The module of a flow checkpoint: ``forward_field`` (and ``backward_field``)."""
    module = nn.ModuleDict({"forward_field": forward_field})
    if backward_field is not None:
        module["backward_field"] = backward_field
    return module


def save_flow_checkpoint(path: Any, fit: FlowFit, source: torch.Tensor,
                         target: torch.Tensor) -> None:
    """A checkpoint of a finished fit (the layout the training loop writes, without its
    state): the networks, the config and both clouds (for `load_flow_field` and the
    viewer). `fields fit flow` needs none: its loop writes checkpoint.pt."""
    from fields.checkpoint import save_checkpoint

    save_checkpoint(path, _fields_module(fit.forward_field, fit.backward_field), extra={
        "kind": "flow",
        "flow_config": fit.config.to_dict(),
        "source": _points_tensor(source, "source"),
        "target": _points_tensor(target, "target"),
    })


def load_flow_field(path: Any) -> tuple[FlowField, dict[str, Any]]:
    """The forward field of a scene-flow checkpoint (written by the training loop of
    `FlowTask`, or by `save_flow_checkpoint`) and the checkpoint's dict. A loop's checkpoint
    gives the best iterate (its task field 'best_state'), not the last."""
    from fields.checkpoint import read_kind_checkpoint

    payload, _ = read_kind_checkpoint(path, "flow", "flow_config", "a scene-flow")
    for key in ("source", "target"):
        if not torch.is_tensor(payload.get(key)):
            raise ValueError(f"{path}: field {key!r} is missing (expected the (N, 3) cloud)")
    cfg = FlowConfig.from_dict(payload["flow_config"])
    task = payload.get("task")
    state = task["best_state"] if isinstance(task, dict) and "best_state" in task \
        else payload["state_dict"]
    prefix = "forward_field."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    model = FlowField(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: field 'state_dict' does not match the flow config: {e}") from e
    return model, payload


def write_flow_outputs(
    out_dir: Any,
    fit: FlowFit,
    source: torch.Tensor,
    target: torch.Tensor,
    gt: torch.Tensor | None,
    wall_seconds: float,
    title: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes flow.npy (N, 3) float32, flow.png and metrics.json (`fields.command.
    write_metrics`: ``steps``, ``seconds`` (training), ``wall_seconds``, then the scene-flow
    errors when `gt` (N, 3) is given, and the fit's figures) into out_dir; returns the
    metrics. checkpoint.pt is the training loop's."""
    from pathlib import Path

    from fields.command import write_metrics
    from fields.io import save_npy_atomic
    from fields.metrics import scene_flow_metrics
    from fields.plots import write_flow_figure

    out = Path(out_dir)
    flow = fit.flow.detach().cpu()
    metrics: dict[str, Any] = {"steps": fit.steps, "seconds": fit.train_seconds,
                               "wall_seconds": wall_seconds}
    if gt is not None:
        metrics.update(scene_flow_metrics(flow, gt))
    metrics.update({
        "method": fit.config.method,
        "n_source": int(source.shape[0]),
        "n_target": int(target.shape[0]),
        "flow_steps": fit.iters,
        "rigid_steps": fit.rigid_steps,
        "best_step": fit.best_iter,
        "best_loss": fit.best_loss,
        "fit_seconds": fit.seconds,
        "setup_seconds": fit.setup_seconds,
        "threads": torch.get_num_threads(),
        "history": fit.history,
    })
    save_npy_atomic(out / "flow.npy", flow.numpy().astype(np.float32))
    write_flow_figure(out / "flow.png", source.numpy(), target.numpy(), flow.numpy(),
                      None if gt is None else gt.numpy(), title=title)
    metrics.update(extra or {})
    write_metrics(out, fit.steps, fit.train_seconds, wall_seconds, metrics)
    return metrics


def read_sequence(folder: Any) -> tuple[list[np.ndarray], list[str]]:
    """The point clouds of a folder (every file with a point-cloud suffix, sorted by name)."""
    from pathlib import Path

    from fields.data.pointclouds import READ_SUFFIXES, read_points

    f = Path(folder)
    if not f.is_dir():
        raise FileNotFoundError(f"{f}: no such folder (expected a folder of point-cloud frames)")
    files = sorted(p for p in f.iterdir() if p.suffix.lower() in READ_SUFFIXES and p.is_file())
    if len(files) < 2:
        raise ValueError(f"{f}: a sequence needs at least 2 point-cloud files "
                         f"({', '.join(READ_SUFFIXES)}), found {len(files)}")
    return [read_points(p) for p in files], [p.name for p in files]


def fit_sequence(
    frames: Sequence[np.ndarray | torch.Tensor],
    config: FlowConfig,
    *,
    on_pair: Callable[[int, FlowFit], None] | None = None,
    on_iter: Callable[[int, dict[str, float]], None] | None = None,
    steps: int | None = None,
    max_seconds: float = math.inf,
    checkpoint_every: float = 120.0,
    checkpoint_dir: str | os.PathLike | None = None,
    pair_extra: Callable[[int], dict[str, Any]] | None = None,
) -> list[FlowFit]:
    """One flow field per consecutive pair of frames (frame k to k + 1), each by `fit_flow`
    with the budgets `config.max_iters`, `steps` and `max_seconds` per pair. With `checkpoint_dir`,
    pair k's loop writes ``checkpoint_<k:03d>.pt`` there (with `pair_extra(k)`)."""
    from pathlib import Path

    if len(frames) < 2:
        raise ValueError(f"fit_sequence: need at least 2 frames, got {len(frames)}")
    fits = []
    for k in range(len(frames) - 1):
        cb = (lambda rec, k=k: on_iter(k, rec)) if on_iter is not None else None
        ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / f"checkpoint_{k:03d}.pt"
        fit = fit_flow(frames[k], frames[k + 1], config, on_iter=cb, steps=steps,
                       max_seconds=max_seconds, checkpoint=ckpt,
                       checkpoint_every=checkpoint_every,
                       checkpoint_extra=pair_extra(k) if pair_extra is not None else None)
        fits.append(fit)
        if on_pair is not None:
            on_pair(k, fit)
    return fits
