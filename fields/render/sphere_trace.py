"""Sphere tracing: the first zero of a signed distance field along rays, with normals and
simple shading. Every ray advances by the distance the field gives (times `relax`, < 1 for
fields that are not exact distances) until it is within `epsilon` of the surface or leaves
the box; all live rays advance together (one batched field evaluation per iteration)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

SDF = Callable[[torch.Tensor], torch.Tensor]


def ray_box(origins: torch.Tensor, dirs: torch.Tensor,
            aabb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances (R,) of rays through the box `aabb` (2, 3); exit < entry when
    a ray misses it. Entry is clamped at 0 (rays starting inside)."""
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (aabb[0] - origins) * inv
    t1 = (aabb[1] - origins) * inv
    near = torch.minimum(t0, t1).max(dim=-1).values.clamp_min(0.0)
    far = torch.maximum(t0, t1).min(dim=-1).values
    return near, far


def sphere_trace(sdf: SDF, origins: torch.Tensor, dirs: torch.Tensor,
                 aabb: torch.Tensor | None = None, max_steps: int = 128,
                 epsilon: float = 1e-4, relax: float = 0.9,
                 t_max: float | torch.Tensor | None = None,
                 relative: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(t (R,), hit (R,) bool): distance along each unit ray to the surface. Rays run inside
    `aabb` (2, 3) when given, and to `t_max` when given (one number, or one per ray (R,)); a
    ray ends once t > t_max. A ray has arrived when |sdf| < `epsilon` (times 1 + t when
    `relative`: the tolerance grows with the distance)."""
    n = origins.shape[0]
    if aabb is not None:
        near, far = ray_box(origins, dirs, aabb)
    else:
        near, far = origins.new_zeros(n), origins.new_full((n,), math.inf)
    if t_max is not None:
        far = far.clamp_max(t_max)
    t = near.clone()
    hit = torch.zeros_like(t, dtype=torch.bool)
    live = torch.nonzero(near < far).squeeze(-1)
    with torch.no_grad():
        for _ in range(max_steps):
            if live.numel() == 0:
                break
            tl = t[live]
            d = sdf(origins[live] + dirs[live] * tl[:, None])
            tol = epsilon * (1.0 + tl) if relative else epsilon
            done = d.abs() < tol
            hit[live[done]] = True
            tl = tl + torch.where(done, torch.zeros_like(d), d * relax)
            t[live] = tl
            gone = done | (tl > far[live]) | (tl < near[live] - epsilon)
            live = live[~gone]
    return t, hit


def sdf_normals(sdf: SDF, points: torch.Tensor, eps: float) -> torch.Tensor:
    """(P, 3) unit normals by central differences of the field."""
    if points.shape[0] == 0:
        return points.clone()
    offsets = torch.eye(3, dtype=points.dtype) * eps
    with torch.no_grad():
        plus = sdf((points[:, None] + offsets).reshape(-1, 3)).reshape(-1, 3)
        minus = sdf((points[:, None] - offsets).reshape(-1, 3)).reshape(-1, 3)
    g = plus - minus
    return g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def shade(normals: torch.Tensor, dirs: torch.Tensor, mode: str = "shaded") -> torch.Tensor:
    """(R, 3) colours of surface points: "normals" (0.5 + 0.5 n) or "shaded" (grey Lambert
    from a light over the viewer's shoulder, plus ambient)."""
    if mode == "normals":
        return 0.5 + 0.5 * normals
    light = -dirs + torch.tensor([0.3, 0.3, 0.6]).to(dirs)
    light = light / light.norm(dim=-1, keepdim=True)
    lambert = (normals * light).sum(-1, keepdim=True).clamp_min(0.0)
    return (0.15 + 0.8 * lambert).expand(-1, 3) * torch.tensor([0.85, 0.85, 0.9]).to(dirs)


def render_sdf(sdf: SDF, origins: torch.Tensor, dirs: torch.Tensor, aabb: torch.Tensor,
               mode: str = "shaded", background: float = 1.0, epsilon: float = 1e-4,
               normal_eps: float = 1e-3, max_steps: int = 128) -> dict[str, torch.Tensor]:
    """{"rgb" (R, 3), "depth" (R,), "hit" (R,), "normals" (R, 3)} of rays (R, 3) x2."""
    if mode not in ("shaded", "normals"):
        raise ValueError(f"render_sdf: mode must be 'shaded' or 'normals', got {mode!r}")
    t, hit = sphere_trace(sdf, origins, dirs, aabb, max_steps=max_steps, epsilon=epsilon)
    normals = torch.zeros_like(origins)
    idx = torch.nonzero(hit).squeeze(-1)
    normals[idx] = sdf_normals(sdf, origins[idx] + dirs[idx] * t[idx, None], normal_eps)
    rgb = torch.full_like(origins, float(background))
    rgb[idx] = shade(normals[idx], dirs[idx], mode)
    return {"rgb": rgb, "depth": torch.where(hit, t, torch.zeros_like(t)), "hit": hit,
            "normals": normals}
