"""What the viewer shows of a radiance field: RGB, depth, opacity and normals through the
engine's renderer (`NerfView`, registered by `fields.nerf.kind`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from fields.render.cameras import Cameras
from fields.viewer.views import (
    Cancel,
    Cancelled,
    FieldView,
    block_order,
    colormap,
    orbit_view_camera,
)


class NerfView(FieldView):
    """A radiance field: RGB, expected depth, opacity, or normals (of the expected surface),
    rendered by `fields.nerf.render_rays`."""

    kind = "nerf"
    modes = ("rgb", "depth", "opacity", "normals")

    def __init__(self, model: Any, grid: Any, render_settings: Any, background: torch.Tensor,
                 info: dict[str, Any], name: str = "") -> None:
        super().__init__()
        self.model, self.grid, self.render_settings = model, grid, render_settings
        self.background = background.float()
        self.info = info
        self.name = name or str(info.get("scene", ""))
        aabb = torch.tensor(info["aabb"], dtype=torch.float32).reshape(2, 3)
        self.centre = aabb.mean(0)
        self.half_diag = float((aabb[1] - aabb[0]).norm()) / 2

    @classmethod
    def from_checkpoint(cls, path: str) -> NerfView:
        from fields.nerf import LoadedNerf

        nerf = LoadedNerf(path)
        return cls(nerf.model, nerf.grid, nerf.settings, nerf.background, nerf.info, path)

    def describe(self) -> str:
        return f"**radiance field** `{self.name}`"

    def controls(self) -> list[dict[str, Any]]:
        return [{"name": "background", "type": "dropdown", "value": "scene",
                 "options": ["scene", "white", "black"]}]

    def initial_camera(self) -> dict[str, Any]:
        return orbit_view_camera(self.info)

    def _background(self) -> torch.Tensor:
        choice = self.settings.get("background", "scene")
        if choice == "white":
            return torch.ones(3)
        if choice == "black":
            return torch.zeros(3)
        return self.background

    def render(self, camera: Cameras, mode: str, cancel: Cancel,
               preview: bool = False) -> np.ndarray:
        from fields.nerf import render_rays

        settings = self.render_settings
        if preview:  # half the samples along each ray; stop once 99% opaque
            settings = replace(settings, step_size=2.0 * settings.step_size,
                               transmittance_threshold=max(settings.transmittance_threshold,
                                                           1e-2))
        origins, dirs = camera.pixel_rays(0)
        h, w = camera.height, camera.width
        # the rays in 32x32 tiles of the screen: a call's samples lie closer together
        order = block_order(h, w)
        o_tiled, d_tiled = origins.index_select(0, order), dirs.index_select(0, order)
        bg = self._background() if mode == "rgb" else torch.zeros(3)
        parts: dict[str, list[torch.Tensor]] = {"rgb": [], "depth": [], "opacity": []}
        device = self.grid.occupied.device  # the field's device (a GPU-trained one too)
        with torch.no_grad():
            for o, d in zip(o_tiled.split(self.chunk), d_tiled.split(self.chunk), strict=True):
                if cancel():
                    raise Cancelled
                out = render_rays(self.model, self.grid, o.to(device), d.to(device), settings,
                                  bg)
                for k, v in parts.items():
                    v.append(out[k].cpu())
        # back in row-major order
        rgb, depth, opacity = (_unorder(torch.cat(parts[k]), order)
                               for k in ("rgb", "depth", "opacity"))
        if mode == "rgb":
            return rgb.clamp(0, 1).reshape(h, w, 3).numpy()
        op = opacity.reshape(h, w)
        if mode == "opacity":
            return op.clamp(0, 1)[..., None].expand(h, w, 3).numpy()
        dep = depth.reshape(h, w)
        if mode == "depth":
            dist = float((camera.c2w[0, :, 3] - self.centre).norm())
            lo, hi = max(dist - self.half_diag, 0.0), dist + self.half_diag
            # the renderer's depth is opacity-weighted: divide it back out where there is any
            d = (dep / op.clamp_min(1e-6)).numpy()
            pic = colormap(d, lo, hi)
            return np.where((op.numpy() > 0.05)[..., None], pic, 0.0).astype(np.float32)
        if mode == "normals":
            return self._normals(origins, dirs, dep, op).numpy()
        raise ValueError(f"NerfView: unknown mode {mode!r}; expected one of {self.modes}")

    @staticmethod
    def _normals(origins: torch.Tensor, dirs: torch.Tensor, depth: torch.Tensor,
                 opacity: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) colours 0.5 + 0.5 n of world normals from the depth map: the cross
        product of the surface points' differences to their neighbours, turned towards the
        camera (black where the ray hits nothing). A hash grid's density gradient is too
        noisy to shade with; the expected surface is smooth."""
        h, w = depth.shape
        hit = opacity > 0.5
        t = depth / opacity.clamp_min(1e-6)
        p = (origins + dirs * t.reshape(-1, 1)).reshape(h, w, 3)
        if h < 2 or w < 2:
            return torch.zeros(h, w, 3)
        du = torch.gradient(p, dim=1)[0]
        dv = torch.gradient(p, dim=0)[0]
        n = torch.linalg.cross(du, dv)
        n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        towards = (n * dirs.reshape(h, w, 3)).sum(-1, keepdim=True) > 0
        n = torch.where(towards, -n, n)
        return torch.where(hit[..., None], 0.5 + 0.5 * n, torch.zeros(()))


def _unorder(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """values (N, ...) given for the pixels order[0], order[1], ..., back in pixel order."""
    return torch.empty_like(values).index_copy_(0, order, values)
