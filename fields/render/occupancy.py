"""Occupancy grid and ray marching with packed samples (the NeRF renderer's sampler).

Scene box ``aabb = (min x, y, z, max x, y, z)``. Two ways to map the world into grid space
``[0, 1]^3`` (`contract`):

- ``contraction="none"`` (bounded scenes): ``g = (x - min) / (max - min)``;
- ``contraction="mipnerf360"`` (unbounded scenes): ``y = (x - centre) / half_size`` (centre
  and half size of the aabb), then mip-NeRF 360's contraction
  ``c(y) = y if |y| <= 1 else (2 - 1/|y|) * y / |y|`` (L2 norm; maps R^3 into the ball of
  radius 2), and ``g = (c + 2) / 4`` (the grid covers ``c`` in ``[-2, 2]^3``).

An occupancy grid has ``R`` cells per axis (``R^3`` bool cells), stored x-major: cell
``(ix, iy, iz)`` is ``occupancy[ix, iy, iz]``, flat index ``(ix * R + iy) * R + iz``. The cell
of a grid-space point ``g`` is ``floor(g * R)`` clamped to ``[0, R - 1]``.

Ray marching (`march_rays`, kernel; `march_rays_reference`, torch), per ray, in float32:

- ``t = t_min``; while ``t < t_max``: ``dt = clamp(t * cone_angle, step_size, max_step)``
  (``cone_angle = 0``: constant steps of ``step_size``); the candidate sample is
  ``[t, t_end]`` with ``t_end = min(t + dt, t_max)``; it is emitted iff the cell of its
  midpoint ``o + d * ((t + t_end) / 2)`` is occupied (and, with ``contraction="none"``, the
  midpoint lies inside the aabb, bounds included); then ``t = t + dt`` (accumulated in
  float32). A ray stops early if ``t + dt`` no longer exceeds ``t`` (float32 exhausted), and
  rays with a non-finite ``t_min`` or ``t_max`` have no samples.
- Every step is visited (no jump over empty cells): the occupancy test is cheap (one byte
  read), and the kernel and the reference then agree exactly. Each value is rounded to
  float32 after every operation, in the same order in both (no fused multiply-adds), so the
  kernel and the reference produce the same samples bit for bit.
- Samples come out packed (CSR): ``ray_indices`` (S,) int64, ``t_starts`` / ``t_ends`` (S,)
  float32, ray by ray and in increasing ``t`` within a ray, and ``offsets`` (R + 1,) int64:
  ray ``r``'s samples are ``offsets[r]:offsets[r + 1]``. ``t`` is in units of the direction's
  length (a distance for unit directions).

The C++ kernel marches fixed blocks of 64 rays in parallel (torch's threads), each block into
its own buffer, then packs them: the output does not depend on the number of threads.

`OccupancyGrid` is a nerfacc-style estimator: its ``density`` (an EMA of the density seen in
each cell) and ``occupied`` buffers are refreshed by `OccupancyGrid.update` (instant-ngp's
schedule and threshold) and `OccupancyGrid.sample` marches rays through it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from fields import _ext, distributed
from fields.nn.backend import (
    NO_CUDA_KERNELS,
    check_backend,
    cpu_kernels_reason,
    cuda_kernels,
    scope,
    select_backend,
    stream,
)

CONTRACTIONS = ("none", "mipnerf360")
MISS = 1e10  # t_near = t_far of a ray that misses the box (`ray_aabb`)
MAX_CHUNK = 2**18  # points per call of the density function in `OccupancyGrid.update`
UNCONTRACT_MAX_NORM = 2.0 - 1e-4  # |c| is clamped to this in `uncontract` (|y| <= 1e4)

AabbLike = torch.Tensor | Sequence[float]


class RaySamples(NamedTuple):
    """Packed samples of a batch of R rays (S samples in all)."""

    ray_indices: torch.Tensor  # (S,) int64, non-decreasing
    t_starts: torch.Tensor  # (S,) float32
    t_ends: torch.Tensor  # (S,) float32
    offsets: torch.Tensor  # (R + 1,) int64, ray r's samples are offsets[r]:offsets[r + 1]


def _contraction_name(contraction: str | int, owner: str) -> str:
    if isinstance(contraction, bool):
        raise ValueError(f"{owner}: contraction must be one of {CONTRACTIONS}, got {contraction!r}")
    if isinstance(contraction, int):
        if contraction not in (0, 1):
            raise ValueError(
                f"{owner}: contraction must be 0 (none) or 1 (mipnerf360), got {contraction}"
            )
        return CONTRACTIONS[contraction]
    if contraction not in CONTRACTIONS:
        raise ValueError(f"{owner}: contraction must be one of {CONTRACTIONS}, got {contraction!r}")
    return contraction


def _aabb(
    aabb: AabbLike,
    owner: str,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> torch.Tensor:
    """(6,) tensor of the box, checked: finite, min < max on every axis."""
    t = torch.as_tensor(aabb).detach()
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{owner}: aabb must be real numbers, got {t.dtype}")
    if t.shape != (6,):
        raise ValueError(
            f"{owner}: aabb must have shape (6,) (min xyz, max xyz), got {tuple(t.shape)}"
        )
    t = t.to(dtype=dtype, device=device)
    if not bool(torch.isfinite(t).all()) or not bool((t[:3] < t[3:]).all()):
        raise ValueError(
            f"{owner}: aabb must be finite with min < max on every axis, got {t.tolist()}"
        )
    return t


def _f32(v: float) -> float:
    """v rounded to float32 (the value the kernel sees), as a Python float."""
    return float(np.float32(v))


def contract(x: torch.Tensor, aabb: AabbLike, contraction: str = "mipnerf360") -> torch.Tensor:
    """Maps world points to the grid space ``[0, 1]^3`` of an occupancy grid (or a hash grid).

    Args:
        x: (..., 3) world points (any float dtype; differentiable).
        aabb: (6,) scene box (min xyz, max xyz); cast to ``x``'s dtype.
        contraction: ``"none"``: ``(x - min) / (max - min)`` (points outside the box map
            outside ``[0, 1]^3``); ``"mipnerf360"``: ``(c(y) + 2) / 4`` with
            ``y = (x - centre) / half_size`` and ``c(y) = y`` if ``|y| <= 1`` else
            ``(2 - 1/|y|) y / |y|`` (always inside ``[0, 1]^3``; ``|y| = 2`` maps to
            ``|c| = 1.5``, ``|y| -> inf`` to ``|c| -> 2``).

    Returns:
        (..., 3) grid-space coordinates, same dtype as ``x``. The gradient is finite everywhere
        (the contraction is C1 at ``|y| = 1``; the centre is safe too).

    In float32 the operations are those of the ray-marching kernel, in the same order, so a
    point falls in the same occupancy cell here and there.
    """
    name = _contraction_name(contraction, "contract")
    if x.shape[-1:] != (3,) or not x.is_floating_point():
        raise ValueError(
            f"contract: x must be a float tensor of shape (..., 3), got {x.dtype} {tuple(x.shape)}"
        )
    box = _aabb(aabb, "contract", x.dtype, x.device)
    lo, hi = box[:3], box[3:]
    if name == "none":
        return (x - lo) / (hi - lo)
    centre = (lo + hi) * 0.5
    half = (hi - lo) * 0.5
    y = (x - centre) / half
    n2 = y[..., 0] * y[..., 0] + y[..., 1] * y[..., 1] + y[..., 2] * y[..., 2]
    inside = n2 <= 1.0
    n = torch.sqrt(n2.clamp(min=1.0))  # == |y| where used; no infinite gradient at y = 0
    scale = (2.0 - torch.reciprocal(n)) / n
    c = torch.where(inside[..., None], y, y * scale[..., None])
    return (c + 2.0) * 0.25


def uncontract(g: torch.Tensor, aabb: AabbLike, contraction: str = "mipnerf360") -> torch.Tensor:
    """Inverse of `contract`: grid-space points back to world points.

    Args:
        g: (..., 3) grid-space points (in ``[0, 1]^3`` for points of the grid; differentiable).
        aabb: (6,) scene box (min xyz, max xyz).
        contraction: ``"none"``: ``min + g * (max - min)``; ``"mipnerf360"``: with
            ``c = 4 g - 2``, ``y = c`` if ``|c| <= 1`` else ``c / (|c| (2 - |c|))``, and
            ``x = centre + y * half_size``. ``|c|`` is clamped to `UNCONTRACT_MAX_NORM`
            (``2 - 1e-4``) in the second factor: points on or beyond the sphere ``|c| = 2``
            (the corners of the grid, which no world point reaches) map to ``|y| = 1e4``
            along their direction.

    Returns:
        (..., 3) world points, same dtype as ``g``.
    """
    name = _contraction_name(contraction, "uncontract")
    if g.shape[-1:] != (3,) or not g.is_floating_point():
        raise ValueError(
            f"uncontract: g must be a float tensor of shape (..., 3), got "
            f"{g.dtype} {tuple(g.shape)}"
        )
    box = _aabb(aabb, "uncontract", g.dtype, g.device)
    lo, hi = box[:3], box[3:]
    if name == "none":
        return lo + g * (hi - lo)
    centre = (lo + hi) * 0.5
    half = (hi - lo) * 0.5
    c = g * 4.0 - 2.0
    n2 = (c * c).sum(-1)
    inside = n2 <= 1.0
    n = torch.sqrt(n2.clamp(min=1.0))
    radius = torch.reciprocal(2.0 - n.clamp(max=UNCONTRACT_MAX_NORM))  # |y|
    y = torch.where(inside[..., None], c, c * (radius / n)[..., None])
    return centre + y * half


def ray_aabb(
    origins: torch.Tensor, directions: torch.Tensor, aabb: AabbLike
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where rays enter and leave a box (slab test), vectorised.

    Args:
        origins: (R, 3) ray origins.
        directions: (R, 3) ray directions (need not be unit; t is in their units). A zero
            component is treated as a tiny one of the same sign.
        aabb: (6,) box (min xyz, max xyz).

    Returns:
        t_near, t_far: (R,) each, ``origins``' dtype. ``t_near`` is negative when the origin is
        inside the box. Rays that miss the box (or whose box lies behind them, or that only
        graze it) get ``t_near = t_far =`` `MISS` (1e10), so that marching ``[t_near, t_far]``
        (or clipping it to ``[near, far]``) gives no samples.
    """
    _check_rays(origins, directions, "ray_aabb", dtype=None)
    box = _aabb(aabb, "ray_aabb", origins.dtype, origins.device)
    tiny = 1e-12
    safe = torch.where(
        directions.abs() < tiny, torch.full_like(directions, tiny).copysign(directions), directions
    )
    t1 = (box[:3] - origins) / safe
    t2 = (box[3:] - origins) / safe
    t_near = torch.minimum(t1, t2).amax(-1)
    t_far = torch.maximum(t1, t2).amin(-1)
    hit = (t_far > t_near) & (t_far > 0)
    miss = torch.full_like(t_near, MISS)
    return torch.where(hit, t_near, miss), torch.where(hit, t_far, miss)


def _check_rays(
    origins: torch.Tensor, directions: torch.Tensor, owner: str, dtype: torch.dtype | None
) -> None:
    for name, t in (("origins", origins), ("directions", directions)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{owner}: {name} must be a tensor, got {type(t).__name__}")
        if t.dim() != 2 or t.shape[1] != 3:
            raise ValueError(f"{owner}: {name} must have shape (R, 3), got {tuple(t.shape)}")
        if dtype is not None and t.dtype != dtype:
            raise ValueError(f"{owner}: {name} must be {dtype}, got {t.dtype}")
        if dtype is None and not t.is_floating_point():
            raise ValueError(f"{owner}: {name} must be a float tensor, got {t.dtype}")
    if directions.shape != origins.shape:
        raise ValueError(
            f"{owner}: origins {tuple(origins.shape)} and directions "
            f"{tuple(directions.shape)} must have the same shape"
        )
    if directions.device != origins.device:
        raise ValueError(f"{owner}: origins and directions must be on the same device")


class _MarchArgs(NamedTuple):
    contraction: int
    aabb: torch.Tensor  # (6,) float32
    occupancy: torch.Tensor  # (G, G, G) bool or uint8, contiguous
    step_size: float  # float32 values
    cone_angle: float
    max_step: float


def _check_march(
    owner: str,
    origins: torch.Tensor,
    directions: torch.Tensor,
    t_min: torch.Tensor,
    t_max: torch.Tensor,
    occupancy: torch.Tensor,
    aabb: AabbLike,
    contraction: str | int,
    step_size: float,
    cone_angle: float,
    max_step: float,
) -> _MarchArgs:
    _check_rays(origins, directions, owner, dtype=torch.float32)
    n = origins.shape[0]
    for name, t in (("t_min", t_min), ("t_max", t_max)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{owner}: {name} must be a tensor, got {type(t).__name__}")
        if t.shape != (n,):
            raise ValueError(f"{owner}: {name} must have shape ({n},), got {tuple(t.shape)}")
        if t.dtype != torch.float32:
            raise ValueError(f"{owner}: {name} must be torch.float32, got {t.dtype}")
        if t.device != origins.device:
            raise ValueError(f"{owner}: {name} must be on {origins.device}, got {t.device}")
    if not isinstance(occupancy, torch.Tensor):
        raise ValueError(f"{owner}: occupancy must be a tensor, got {type(occupancy).__name__}")
    if occupancy.dtype not in (torch.bool, torch.uint8):
        raise ValueError(f"{owner}: occupancy must be bool or uint8, got {occupancy.dtype}")
    shape = tuple(occupancy.shape)
    if len(shape) != 3 or len(set(shape)) != 1 or shape[0] < 1:
        raise ValueError(f"{owner}: occupancy must have shape (G, G, G), got {shape}")
    if occupancy.device != origins.device:
        raise ValueError(f"{owner}: occupancy must be on {origins.device}, got {occupancy.device}")
    name = _contraction_name(contraction, owner)
    box = _aabb(aabb, owner, torch.float32, origins.device)
    for label, v in (("step_size", step_size), ("cone_angle", cone_angle), ("max_step", max_step)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{owner}: {label} must be a number, got {v!r}")
    step, cone, mstep = _f32(step_size), _f32(cone_angle), _f32(max_step)
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(
            f"{owner}: step_size must be positive and finite (as float32), got {step_size}"
        )
    if not (cone >= 0 and math.isfinite(cone)):
        raise ValueError(f"{owner}: cone_angle must be >= 0 and finite, got {cone_angle}")
    if not mstep > 0:
        raise ValueError(f"{owner}: max_step must be positive, got {max_step}")
    return _MarchArgs(CONTRACTIONS.index(name), box, occupancy.contiguous(), step, cone, mstep)


def march_rays(
    origins: torch.Tensor,
    directions: torch.Tensor,
    t_min: torch.Tensor,
    t_max: torch.Tensor,
    occupancy: torch.Tensor,
    aabb: AabbLike,
    contraction: str | int,
    step_size: float,
    cone_angle: float = 0.0,
    max_step: float = 1e10,
    kernels: object | None = None,
    packed: list[torch.Tensor] | None = None,
) -> RaySamples:
    """Marches rays through an occupancy grid with the C++ kernel on CPU tensors, the CUDA
    kernel (`csrc/kernels/march_cuda.cu`, CUDA builds) on CUDA tensors (see the module
    docstring).

    Args:
        origins: (R, 3) float32 ray origins (CPU or CUDA).
        directions: (R, 3) float32 ray directions (unit, for t to be a distance).
        t_min, t_max: (R,) float32 interval of t marched per ray.
        occupancy: (G, G, G) bool or uint8 grid, x-major (nonzero = occupied).
        aabb: (6,) scene box (min xyz, max xyz), used as float32.
        contraction: ``"none"`` / 0 or ``"mipnerf360"`` / 1.
        step_size: the (smallest) step, > 0.
        cone_angle: steps grow as ``t * cone_angle`` (0: constant steps).
        max_step: the largest step.
        kernels: what provides ``march_rays_cuda`` instead of fields._C (the tests' CPU
            emulator of the CUDA kernel, which takes CPU tensors).
        packed: the CPU kernel's packing of `occupancy` (`OccupancyGrid.packed_cpu`), kept
            between calls instead of packed in each (CPU only).

    Returns:
        `RaySamples` ``(ray_indices (S,) int64, t_starts (S,) f32, t_ends (S,) f32,
        offsets (R + 1,) int64)``, identical to `march_rays_reference`'s, and independent of
        the number of threads.
    """
    a = _check_march(
        "march_rays",
        origins,
        directions,
        t_min,
        t_max,
        occupancy,
        aabb,
        contraction,
        step_size,
        cone_angle,
        max_step,
    )
    if origins.device.type == "cuda" or kernels is not None:
        kernels = kernels or cuda_kernels()
        if kernels is None:
            raise ValueError(f"march_rays: {NO_CUDA_KERNELS}; got tensors on {origins.device} "
                             "(use march_rays_reference)")
        out = kernels.march_rays_cuda(
            origins.contiguous(), directions.contiguous(), t_min.contiguous(),
            t_max.contiguous(), a.occupancy, a.aabb, a.contraction, a.step_size, a.cone_angle,
            a.max_step, stream(origins),
        )
        return RaySamples(*out)
    if origins.device.type != "cpu":
        raise ValueError(
            f"march_rays: no kernel runs on {origins.device} (use march_rays_reference)"
        )
    with scope("kernel:march"):
        out = _ext.extension().march_rays_cpu(
            origins.contiguous(),
            directions.contiguous(),
            t_min.contiguous(),
            t_max.contiguous(),
            a.occupancy,
            a.aabb,
            a.contraction,
            a.step_size,
            a.cone_angle,
            a.max_step,
            packed,
        )
    return RaySamples(*out)


def _occupied(
    points: torch.Tensor,
    occupancy_flat: torch.Tensor,
    res: int,
    aabb: torch.Tensor,
    contraction: int,
) -> torch.Tensor:
    """(P,) bool: is the cell of each of points (P, 3) float32 occupied (kernel's arithmetic)."""
    g = contract(points, aabb, CONTRACTIONS[contraction])
    v = g * float(res)
    v = torch.where(v >= 0.0, v, 0.0)  # NaN -> 0, as the kernel
    v = v.clamp(max=float(res - 1))
    idx = v.long()  # truncation == floor for v >= 0
    flat = (idx[:, 0] * res + idx[:, 1]) * res + idx[:, 2]
    occ = occupancy_flat[flat]
    if contraction == 0:
        occ = occ & ((points >= aabb[:3]) & (points <= aabb[3:])).all(-1)
    return occ


def march_rays_reference(
    origins: torch.Tensor,
    directions: torch.Tensor,
    t_min: torch.Tensor,
    t_max: torch.Tensor,
    occupancy: torch.Tensor,
    aabb: AabbLike,
    contraction: str | int,
    step_size: float,
    cone_angle: float = 0.0,
    max_step: float = 1e10,
) -> RaySamples:
    """`march_rays` in torch (any device): all rays step together, one iteration per step
    index, the rays still marching compacted at each step; same arguments and outputs."""
    a = _check_march(
        "march_rays_reference",
        origins,
        directions,
        t_min,
        t_max,
        occupancy,
        aabb,
        contraction,
        step_size,
        cone_angle,
        max_step,
    )
    n = origins.shape[0]
    device = origins.device
    res = a.occupancy.shape[0]
    occ_flat = a.occupancy.reshape(-1).bool()
    live = torch.isfinite(t_min) & torch.isfinite(t_max) & (t_min < t_max)
    ids = torch.nonzero(live).squeeze(1)
    t, t_hi = t_min[ids], t_max[ids]
    o, d = origins[ids], directions[ids]
    found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    while ids.numel() > 0:
        dt = torch.clamp(t * a.cone_angle, min=a.step_size, max=a.max_step)
        t_next = t + dt
        moving = t_next > t
        t_end = torch.minimum(t_next, t_hi)
        mid = (t + t_end) * 0.5
        p = o + d * mid[:, None]
        keep = moving & _occupied(p, occ_flat, res, a.aabb, a.contraction)
        found.append((ids[keep], t[keep], t_end[keep]))
        go = torch.nonzero(moving & (t_next < t_hi)).squeeze(1)
        ids, t, t_hi, o, d = ids[go], t_next[go], t_hi[go], o[go], d[go]
    if found:
        ray_ids = torch.cat([f[0] for f in found])
        starts = torch.cat([f[1] for f in found])
        ends = torch.cat([f[2] for f in found])
        # Found step by step: a stable sort by ray keeps each ray's samples in t order.
        ray_ids, order = torch.sort(ray_ids, stable=True)
        starts, ends = starts[order], ends[order]
    else:
        ray_ids = torch.zeros(0, dtype=torch.int64, device=device)
        starts = torch.zeros(0, dtype=torch.float32, device=device)
        ends = torch.zeros(0, dtype=torch.float32, device=device)
    offsets = torch.zeros(n + 1, dtype=torch.int64, device=device)
    offsets[1:] = torch.cumsum(torch.bincount(ray_ids, minlength=n), 0)
    return RaySamples(ray_ids, starts, ends, offsets)


class OccupancyGrid(nn.Module):
    """Occupancy grid estimator (nerfacc / instant-ngp style) over a scene box.

    Args:
        aabb: (6,) scene box (min xyz, max xyz).
        resolution: R, cells per axis.
        contraction: ``"none"`` (the grid covers the aabb) or ``"mipnerf360"`` (the grid
            covers the contracted space, see `contract`).

    Buffers (saved in the state dict): ``aabb`` (6,) float32; ``density`` (R, R, R) float32,
    an EMA of the density seen in each cell (starts at 0); ``occupied`` (R, R, R) bool, x-major
    (starts all True).

    Occupancy rule (instant-ngp's): after each `update`,
    ``occupied = q > min(occ_thre, mean(q))`` with ``q = density``, or
    ``q = density * step_size`` (the opacity of one step, nerfacc's convention) when
    `update` is given a ``step_size``.
    """

    density: torch.Tensor
    occupied: torch.Tensor
    aabb: torch.Tensor

    def __init__(self, aabb: AabbLike, resolution: int = 128, contraction: str = "none") -> None:
        super().__init__()
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise ValueError(
                f"OccupancyGrid: resolution must be a positive int, got {resolution!r}"
            )
        if resolution > 1024:
            raise ValueError(f"OccupancyGrid: resolution must be <= 1024, got {resolution}")
        self.resolution = resolution
        self.contraction = _contraction_name(contraction, "OccupancyGrid")
        r = resolution
        self.register_buffer("aabb", _aabb(aabb, "OccupancyGrid"))
        self.register_buffer("density", torch.zeros(r, r, r))
        self.register_buffer("occupied", torch.ones(r, r, r, dtype=torch.bool))

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, contraction={self.contraction!r}"

    def packed_cpu(self) -> list[torch.Tensor] | None:
        """The CPU marchers' packing of `occupied` (`fields._C.pack_occupancy_cpu`: its bits
        and its coarse blocks), kept while `occupied` is unchanged (rendering a fixed grid
        packs it once, not once per call); None off the CPU or without the kernels."""
        occ = self.occupied
        if occ.device.type != "cpu" or not _ext.available():
            return None
        key = (occ.data_ptr(), occ._version, tuple(occ.shape))
        if getattr(self, "_packed_key", None) != key:
            self._packed = _ext.extension().pack_occupancy_cpu(occ)
            self._packed_key = key
        return self._packed

    @property
    def occupancy_fraction(self) -> float:
        """Fraction of the cells that are occupied."""
        return float(self.occupied.float().mean())

    def cell_points(
        self, cells: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A uniformly random point (in grid space) of each cell, mapped to world space.

        Args:
            cells: (K,) int64 flat cell indices, ``(ix * R + iy) * R + iz``.
            generator: optional random generator.

        Returns:
            (K, 3) float32 world points (through `uncontract` for ``"mipnerf360"``).
        """
        r = self.resolution
        ijk = torch.stack((cells // (r * r), (cells // r) % r, cells % r), -1)
        jitter = torch.rand(ijk.shape, generator=generator, device=cells.device)
        g = (ijk.float() + jitter) / r
        return uncontract(g, self.aabb, self.contraction)

    @torch.no_grad()
    def update(
        self,
        step: int,
        density_fn: Callable[[torch.Tensor], torch.Tensor],
        occ_thre: float = 0.01,
        ema_decay: float = 0.95,
        warmup_steps: int = 256,
        n_samples: int | None = None,
        step_size: float | None = None,
        generator: torch.Generator | None = None,
        shard: bool = False,
    ) -> None:
        """Refreshes the grid from the density field (instant-ngp's schedule).

        Cells visited: every cell while ``step < warmup_steps``; afterwards ``n_samples``
        cells (default ``R^3 / 2``): half uniformly at random among all cells, half at
        random among the occupied ones (with repetition), evaluated in memory order (sorted:
        the field's tables are then read in order). ``density_fn`` gets a uniformly
        random world point of each visited cell, ``(P, 3)`` float32 in chunks of at most
        `MAX_CHUNK` (2^18) points, under ``torch.no_grad``, and returns ``(P,)`` (or
        ``(P, 1)``) densities sigma (NaN read as 0). A visited cell's density becomes
        ``max(density * ema_decay, sigma)`` (the largest sigma if the cell was drawn twice);
        other cells keep theirs. Then ``occupied = q > min(occ_thre, mean(q))`` with
        ``q = density`` or, when ``step_size`` is given, ``q = density * step_size``.

        `shard` (distributed training, `fields.distributed`): every rank draws the same cells
        and points, evaluates ``density_fn`` on its share of them, and the densities are
        all-gathered, so every rank's grid gets the same update.
        """
        r3 = self.resolution**3
        device = self.density.device
        if step < warmup_steps:
            cells = torch.arange(r3, device=device)
        else:
            total = r3 // 2 if n_samples is None else int(n_samples)
            if total < 1:
                raise ValueError(f"OccupancyGrid.update: n_samples must be >= 1, got {total}")
            n_occ = total // 2
            uniform = torch.randint(0, r3, (total - n_occ,), generator=generator, device=device)
            occupied = torch.nonzero(self.occupied.reshape(-1)).squeeze(1)
            if occupied.numel() > 0 and n_occ > 0:
                pick = torch.randint(
                    0, occupied.numel(), (n_occ,), generator=generator, device=device
                )
                cells = torch.cat((uniform, occupied[pick]))
            else:
                cells = uniform
            # the same visits in memory order: the field then reads its tables (a hash grid's
            # dense levels above all) in order, not at random (1M density evaluations on the
            # built-in scene: 134 ms instead of 192; the sort, in int32, 17 ms)
            narrow = cells.int() if r3 < 2**31 else cells
            cells = torch.sort(narrow).values.long()
        points = self.cell_points(cells, generator)
        n_points = points.shape[0]
        if shard:
            points = distributed.shard(points)
        sigmas = []
        for chunk in points.split(MAX_CHUNK):
            s = density_fn(chunk)
            if s.numel() != chunk.shape[0]:
                raise ValueError(
                    f"OccupancyGrid.update: density_fn must return {chunk.shape[0]} "
                    f"values for ({chunk.shape[0]}, 3) points, got "
                    f"{tuple(s.shape)}"
                )
            sigmas.append(s.reshape(-1).to(torch.float32))
        sigma = torch.nan_to_num(torch.cat(sigmas), nan=0.0) if sigmas else \
            torch.zeros(0, device=device)
        if shard:
            sigma = distributed.all_gather_rows(sigma, n_points)
        # -1 marks the cells not visited (densities are >= 0, NaN read as 0)
        new = torch.full((r3,), -1.0, device=device)
        new.scatter_reduce_(0, cells, sigma.clamp_min(0.0), reduce="amax", include_self=False)
        flat = self.density.view(-1)
        flat.copy_(torch.where(new >= 0, torch.maximum(flat * ema_decay, new), flat))
        q = self.density if step_size is None else self.density * step_size
        threshold = min(occ_thre, float(q.mean()))
        self.occupied.copy_(q > threshold)

    def sample(
        self,
        origins: torch.Tensor,
        directions: torch.Tensor,
        near: float | torch.Tensor,
        far: float | torch.Tensor,
        step_size: float,
        cone_angle: float = 0.0,
        max_step: float = 1e10,
        backend: str = "auto",
    ) -> RaySamples:
        """Marches rays through the grid: `march_rays` (the kernel of the rays' device) for
        ``"cpu"`` and ``"cuda"``, `march_rays_reference` for ``"torch"``; ``"auto"``: the
        kernel where one is built for the device, else the reference.

        Args:
            origins, directions: (R, 3) float32 rays.
            near, far: floats or (R,) tensors; t is marched over ``[near, far]`` intersected,
                for ``contraction="none"``, with ``[t_near, t_far]`` of `ray_aabb`. ``far``
                must be finite with ``"mipnerf360"``.
            step_size, cone_angle, max_step: as `march_rays`.

        Returns:
            `RaySamples` (ray_indices, t_starts, t_ends, offsets).
        """
        check_backend("OccupancyGrid.sample", backend)
        _check_rays(origins, directions, "OccupancyGrid.sample", dtype=torch.float32)
        n = origins.shape[0]
        limits = []
        for name, v in (("near", near), ("far", far)):
            t = torch.as_tensor(v, dtype=torch.float32, device=origins.device)
            if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != n):
                raise ValueError(
                    f"OccupancyGrid.sample: {name} must be a float or an ({n},) "
                    f"tensor, got shape {tuple(t.shape)}"
                )
            limits.append(t.expand(n))
        t_near, t_far = limits
        if self.contraction == "none":
            hit_near, hit_far = ray_aabb(origins, directions, self.aabb)
            t_near = torch.maximum(hit_near, t_near)
            t_far = torch.minimum(hit_far, t_far)
        elif not bool(torch.isfinite(t_far).all()):
            raise ValueError(
                "OccupancyGrid.sample: far must be finite with contraction "
                "'mipnerf360' (the contracted space is unbounded in t)"
            )
        if backend in ("cpu", "cuda") and origins.device.type != backend:
            raise ValueError(f"OccupancyGrid.sample: backend={backend!r} needs the rays on "
                             f"the {backend.upper()}, got them on {origins.device}")
        device = origins.device
        backend = select_backend(
            "OccupancyGrid.sample", backend, origins,
            cpu_reason=lambda: cpu_kernels_reason()
            or ("" if device.type == "cpu" else f"the rays are on {device}"),
            cuda_reason=lambda auto: "" if cuda_kernels() is not None else NO_CUDA_KERNELS,
        )
        args = (origins, directions, t_near.contiguous(), t_far.contiguous(), self.occupied,
                self.aabb, self.contraction, step_size, cone_angle, max_step)
        if backend == "torch":
            return march_rays_reference(*args)
        if backend == "cpu":
            return march_rays(*args, packed=self.packed_cpu())
        return march_rays(*args)
