"""What the procedural posed-image scenes share (`tabletop`, `glossy`): the key light, the
table's height and a solid value-noise texture."""

from __future__ import annotations

from collections.abc import Callable

import torch

LIGHT = torch.tensor([0.45, -0.35, 0.82])
LIGHT = LIGHT / LIGHT.norm()
TABLE_TOP = -0.55  # the height of the table's top face
# the tabletop's table: a checkerboard of these two colours, 4.2 squares per unit
CHECKER = ((0.85, 0.78, 0.62), (0.32, 0.2, 0.12))


def solid_noise(p: torch.Tensor, frequency: float, seed: int = 0) -> torch.Tensor:
    """Value noise in [0, 1) at points p (P, 3): random values on the integer lattice of
    ``p * frequency``, blended with smoothstep weights (a solid texture: the same colour from
    every view, as paint on a surface)."""
    q = p * frequency
    base = torch.floor(q)
    f = q - base
    w = f * f * (3 - 2 * f)
    i = base.long()
    out = torch.zeros(p.shape[0], dtype=p.dtype)
    for corner in range(8):  # the cube's 8 corners, each over every point at once
        o = torch.tensor([(corner >> k) & 1 for k in range(3)])
        c = i + o
        h = (c[:, 0] * 73856093) ^ (c[:, 1] * 19349663) ^ (c[:, 2] * 83492791) ^ (seed * 2654435761)
        h = (h ^ (h >> 13)) * 1274126177 & 0xFFFFFFFF
        h = (h ^ (h >> 16)) & 0xFFFFFF
        weight = torch.where(o.bool(), w, 1 - w).prod(-1)
        out = out + weight * (h.to(p.dtype) / float(1 << 24))
    return out


def first_hits(sdf: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
               origins: torch.Tensor, dirs: torch.Tensor, max_steps: int = 160,
               t_max: float = 8.0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where rays first meet a scene whose `sdf` gives (distance, object id): hit (R,) bool,
    and for the rays that hit, the points (H, 3), object ids (H,) and unit normals (H, 3)
    (sphere tracing to `t_max`, tolerance growing with the distance)."""
    from fields.render.sphere_trace import sdf_normals, sphere_trace

    def distance(p: torch.Tensor) -> torch.Tensor:
        return sdf(p)[0]

    t, hit = sphere_trace(distance, origins, dirs, max_steps=max_steps, epsilon=1e-4,
                          relax=1.0, t_max=t_max, relative=True)
    p = origins[hit] + t[hit, None] * dirs[hit]
    return hit, p, sdf(p)[1], sdf_normals(distance, p, 1e-4)
