"""What the viewer shows of a signed distance field: sphere traced, shaded, normals, depth
(`SDFView`, registered by `fields.sdf.kind`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fields.render.cameras import Cameras
from fields.viewer.views import Cancel, Cancelled, FieldView, colormap


class SDFView(FieldView):
    """A signed distance field, sphere traced: grey shading, normals, or depth."""

    kind = "sdf"
    modes = ("shaded", "normals", "depth")

    def __init__(self, field: torch.nn.Module, aabb: torch.Tensor, name: str = "") -> None:
        super().__init__()
        self.field, self.name = field, name
        self.aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3)
        self.extent = float((self.aabb[1] - self.aabb[0]).max())

    @classmethod
    def from_checkpoint(cls, path: str) -> SDFView:
        from fields.sdf.field import load_sdf

        field, _ = load_sdf(path)
        return cls(field, field.aabb, path)

    def describe(self) -> str:
        return f"**signed distance field** `{self.name}`"

    def initial_camera(self) -> dict[str, Any]:
        centre = self.aabb.mean(0)
        r = 1.6 * float((self.aabb[1] - self.aabb[0]).norm()) / 2
        pos = centre + r * torch.tensor([0.77, 0.45, 0.45])
        return {"position": tuple(pos.tolist()), "look_at": tuple(centre.tolist()),
                "up": (0.0, 0.0, 1.0), "fov": math.radians(40.0)}

    def render(self, camera: Cameras, mode: str, cancel: Cancel,
               preview: bool = False) -> np.ndarray:
        from fields.render.sphere_trace import render_sdf

        if mode not in self.modes:
            raise ValueError(f"SDFView: unknown mode {mode!r}; expected one of {self.modes}")
        origins, dirs = camera.pixel_rays(0)
        eps = (1e-3 if preview else 1e-4) * self.extent
        parts = []
        for o, d in zip(origins.split(self.chunk), dirs.split(self.chunk), strict=True):
            if cancel():
                raise Cancelled
            out = render_sdf(self.field, o, d, self.aabb,
                             mode="normals" if mode == "normals" else "shaded", epsilon=eps,
                             normal_eps=1e-3 * self.extent, max_steps=48 if preview else 128)
            if mode == "depth":
                dist = float((camera.c2w[0, :, 3] - self.aabb.mean(0)).norm())
                half = 0.5 * float((self.aabb[1] - self.aabb[0]).norm())
                pic = torch.from_numpy(colormap(out["depth"].numpy(), max(dist - half, 0.0),
                                                dist + half))
                parts.append(torch.where(out["hit"][:, None], pic, torch.zeros(())))
            else:
                parts.append(out["rgb"])
        return torch.cat(parts).reshape(camera.height, camera.width, 3).numpy()
