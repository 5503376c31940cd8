"""Camera paths for videos: an orbit around the scene and a spiral (orbit with a rising and
falling elevation)."""

from __future__ import annotations

import math

import torch

from fields.render.cameras import look_at


def _frame(up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit vectors orthogonal to `up` (and to each other)."""
    up = up / up.norm()
    helper = torch.tensor([1.0, 0.0, 0.0]) if abs(float(up[0])) < 0.9 else torch.tensor(
        [0.0, 1.0, 0.0]
    )
    a = torch.linalg.cross(up, helper)
    a = a / a.norm()
    return a, torch.linalg.cross(up, a)


def orbit_path(
    centre: torch.Tensor,
    radius: float,
    up: torch.Tensor,
    n_frames: int = 48,
    elevation_deg: float = 30.0,
    spiral_deg: float = 0.0,
) -> torch.Tensor:
    """(n_frames, 3, 4) OpenGL camera-to-world matrices circling `centre` at `radius`, at an
    elevation of `elevation_deg` above the plane orthogonal to `up`, looking at the centre.
    With `spiral_deg` > 0 the elevation swings by that much over the path (a spiral)."""
    centre = torch.as_tensor(centre, dtype=torch.float32)
    up = torch.as_tensor(up, dtype=torch.float32)
    a, b = _frame(up)
    k = torch.arange(n_frames, dtype=torch.float32)
    az = 2 * math.pi * k / n_frames
    el = torch.deg2rad(elevation_deg + spiral_deg * torch.sin(2 * az))
    u = up / up.norm()
    eyes = centre + radius * (
        torch.cos(el)[:, None] * (torch.cos(az)[:, None] * a + torch.sin(az)[:, None] * b)
        + torch.sin(el)[:, None] * u
    )
    return look_at(eyes, centre, up=u)


PATHS = {"orbit": 0.0, "spiral": 20.0}
