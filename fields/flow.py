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

Both stop early when the loss has not improved by `min_delta` (relative) for `patience`
iterations, and return the flow (and the network parameters) of the iteration with the lowest
loss, as NSFP does.

Long-term motion (`integrate`, `accumulate`): the per-pair fields of a sequence are chained by
Euler steps, p_{k+1} = p_k + f_k(p_k), which gives trajectories of the first frame's points and
moves every sweep to a common time (a dense accumulated cloud).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
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
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown FlowConfig field(s) {unknown}; expected some of {sorted(known)}"
            )
        return cls(**values)

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
        flow = self.mlp(x * self.input_scale if self.input_scale != 1.0 else x)
        if self.rigid is not None:
            rot, trans = self.rigid_motion()
            flow = flow + x @ (rot - torch.eye(3, dtype=rot.dtype)).T.to(x.dtype) + trans
        return flow

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
    """The result of `fit_flow`: the flow of each source point (at the best iteration), the
    fitted network(s) and the history."""

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


def _points_tensor(points: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    pts = torch.as_tensor(np.asarray(points) if not torch.is_tensor(points) else points)
    if pts.dim() != 2 or pts.shape[1] != 3 or pts.shape[0] < 1:
        raise ValueError(f"{name}: expected an (N, 3) point array with N >= 1, got "
                         f"{tuple(pts.shape)}")
    pts = pts.float()
    if not torch.isfinite(pts).all():
        raise ValueError(f"{name}: points must be finite")
    return pts


def fit_flow(
    source: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    config: FlowConfig | None = None,
    *,
    on_iter: Callable[[dict[str, float]], None] | None = None,
    log_every: int = 10,
) -> FlowFit:
    """Fits the flow from `source` (N, 3) to `target` (M, 3) by `config.method`.

    `on_iter` gets {"iter", "loss", "best_loss", "seconds"} every `log_every` iterations (for
    progress bars). `seconds` counts the whole fit including set-up (trees, distance grid);
    `setup_seconds` that set-up alone.
    """
    cfg = config or FlowConfig()
    x1 = _points_tensor(source, "source")
    x2 = _points_tensor(target, "target")
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        fwd = FlowField(cfg)
        bwd = FlowField(cfg) if cfg.method == "nsfp" and cfg.backward else None
    params = list(fwd.parameters()) + (list(bwd.parameters()) if bwd is not None else [])
    opt = torch.optim.Adam(params, lr=cfg.lr)

    grid: DistanceGrid | None = None
    tree1 = tree2 = None
    normals = estimate_normals(x2, cfg.normal_neighbours) if cfg.point_to_plane else None
    if cfg.method == "dt":
        grid = DistanceGrid.build(x2, cfg.voxel, cfg.margin)
    else:
        tree1, tree2 = cKDTree(x1.numpy()), cKDTree(x2.numpy())
    def one_way(moved: torch.Tensor, truncate: float) -> torch.Tensor:
        """The source-to-target term of the moved source points."""
        if grid is None:
            return chamfer(moved, x2, truncate=truncate, tree_b=tree2, normals_b=normals,
                           tangent_weight=cfg.tangent_weight, plane_radius=cfg.plane_radius,
                           both=False)
        if normals is None:  # the interpolated distance
            d = grid(moved)
            d = d[d.detach() <= truncate].square()
        else:  # point-to-plane to the nearest point of the moved point's cell
            idx = grid.lookup(moved)
            diff = moved - x2[idx]
            keep = diff.detach().norm(dim=-1) <= truncate
            d = plane_distance_sq(diff, normals[idx], cfg.tangent_weight,
                                  cfg.plane_radius)[keep]
        return d.mean() if d.numel() else moved.sum() * 0.0

    def loss_fn() -> tuple[torch.Tensor, torch.Tensor]:
        flow = fwd(x1)
        moved = x1 + flow
        if grid is not None:
            return one_way(moved, cfg.truncate), flow
        loss = chamfer(moved, x2, truncate=cfg.truncate, tree_b=tree2, normals_b=normals,
                       tangent_weight=cfg.tangent_weight, plane_radius=cfg.plane_radius)
        if bwd is not None:
            back = moved + bwd(moved)
            loss = loss + chamfer(back, x1, truncate=cfg.truncate, tree_b=tree1)
        return loss, flow

    if fwd.rigid is not None:  # the rigid motion alone first (cheap: the network is fixed)
        with torch.no_grad():
            base = fwd(x1)
        rigid_opt = torch.optim.Adam([fwd.rigid], lr=cfg.rigid_lr)
        rigid_best, since = math.inf, 0
        for _ in range(cfg.rigid_iters):
            rot, trans = fwd.rigid_motion()
            moved = x1 @ rot.T + trans + base
            loss = one_way(moved, cfg.rigid_truncate)
            value = float(loss.detach())
            if value < rigid_best * (1.0 - cfg.min_delta):
                rigid_best, since = value, 0
            else:
                since += 1
                if since >= cfg.patience:
                    break
            rigid_opt.zero_grad(set_to_none=True)
            loss.backward()
            rigid_opt.step()
    setup = time.perf_counter() - t0

    best_loss, best_iter, best_flow = math.inf, 0, torch.zeros_like(x1)
    since_best = 0
    best_state = [p.detach().clone() for p in params]
    history: list[dict[str, float]] = []
    it = 0
    for it in range(1, cfg.max_iters + 1):
        loss, flow = loss_fn()
        value = float(loss.detach())
        if value < best_loss * (1.0 - cfg.min_delta) or not math.isfinite(best_loss):
            since_best = 0
        else:
            since_best += 1
        if value < best_loss:  # keep the parameters that gave this flow (before the step)
            best_loss, best_iter, best_flow = value, it, flow.detach().clone()
            best_state = [p.detach().clone() for p in params]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it % log_every == 0 or since_best >= cfg.patience or it == cfg.max_iters:
            rec = {"iter": it, "loss": value, "best_loss": best_loss,
                   "seconds": time.perf_counter() - t0}
            history.append(rec)
            if on_iter is not None:
                on_iter(rec)
        if since_best >= cfg.patience:
            break
    with torch.no_grad():  # the fields returned are the best iterate's
        for p, best in zip(params, best_state, strict=True):
            p.copy_(best)
    return FlowFit(
        flow=best_flow,
        forward_field=fwd,
        backward_field=bwd,
        config=cfg,
        iters=it,
        best_iter=best_iter,
        best_loss=best_loss,
        seconds=time.perf_counter() - t0,
        setup_seconds=setup,
        history=history,
    )


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


def save_flow_checkpoint(path: Any, fit: FlowFit, source: torch.Tensor,
                         target: torch.Tensor) -> None:
    """checkpoint.pt: the forward field, its config and both clouds (for `load_flow_field` and
    the viewer)."""
    from fields.train import save_checkpoint

    save_checkpoint(path, fit.forward_field, extra={
        "kind": "flow",
        "flow_config": fit.config.to_dict(),
        "source": _points_tensor(source, "source"),
        "target": _points_tensor(target, "target"),
    })


def load_flow_field(path: Any) -> tuple[FlowField, dict[str, Any]]:
    """The forward field of a checkpoint written by `save_flow_checkpoint`, and the payload."""
    from fields.train import read_checkpoint

    payload = read_checkpoint(path)
    if payload.get("kind") != "flow" or not isinstance(payload.get("flow_config"), dict):
        raise ValueError(f"{path}: not a scene-flow checkpoint (field 'kind' is "
                         f"{payload.get('kind')!r}, expected 'flow')")
    cfg = FlowConfig.from_dict(payload["flow_config"])
    model = FlowField(cfg)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: field 'state_dict' does not match the flow config: {e}") from e
    return model, payload


def write_flow_outputs(
    out_dir: Any,
    fit: FlowFit,
    source: torch.Tensor,
    target: torch.Tensor,
    gt: torch.Tensor | None,
    info: dict[str, Any],
) -> dict[str, Any]:
    """Writes flow.npy (N x 3), metrics.json (with the scene-flow errors when `gt` is given),
    flow.png and checkpoint.pt into out_dir; returns the metrics."""
    import json
    from pathlib import Path

    from fields.io import save_npy_atomic, write_text_atomic
    from fields.metrics import scene_flow_metrics
    from fields.plots import write_flow_figure

    out = Path(out_dir)
    flow = fit.flow.detach().cpu()
    metrics: dict[str, Any] = {**info}
    if gt is not None:
        metrics.update(scene_flow_metrics(flow, gt))
    metrics.update({
        "method": fit.config.method,
        "n_source": int(source.shape[0]),
        "n_target": int(target.shape[0]),
        "iters": fit.iters,
        "best_iter": fit.best_iter,
        "best_loss": fit.best_loss,
        "seconds": fit.seconds,
        "setup_seconds": fit.setup_seconds,
        "threads": torch.get_num_threads(),
        "config": fit.config.to_dict(),
        "history": fit.history,
    })

    save_npy_atomic(out / "flow.npy", flow.numpy().astype(np.float32))
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_flow_figure(out / "flow.png", source.numpy(), target.numpy(), flow.numpy(),
                      None if gt is None else gt.numpy(), title=str(info.get("name", "")))
    save_flow_checkpoint(out / "checkpoint.pt", fit, source, target)
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
) -> list[FlowFit]:
    """One flow field per consecutive pair of frames (frame k to k + 1)."""
    if len(frames) < 2:
        raise ValueError(f"fit_sequence: need at least 2 frames, got {len(frames)}")
    fits = []
    for k in range(len(frames) - 1):
        cb = (lambda rec, k=k: on_iter(k, rec)) if on_iter is not None else None
        fit = fit_flow(frames[k], frames[k + 1], config, on_iter=cb)
        fits.append(fit)
        if on_pair is not None:
            on_pair(k, fit)
    return fits
