"""What the viewer shows of a dynamic radiance field: RGB, depth or opacity at the time the
page's time slider sets (`DynamicView`, registered by `fields.dynamic.kind`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fields.render.cameras import Cameras
from fields.viewer.views import Cancel, Cancelled, FieldView, colormap, orbit_view_camera


class DynamicView(FieldView):
    """A dynamic radiance field at the slider's time (`fields.dynamic.render_rays_at`);
    "play" runs the time through [0, 1] every `play_seconds`, looping."""

    kind = "dynamic"
    modes = ("rgb", "depth", "opacity")
    play_seconds = 4.0

    def __init__(self, model: Any, grid: Any, render_settings: Any, info: dict[str, Any],
                 name: str = "") -> None:
        super().__init__()
        self.model, self.grid, self.render_settings = model, grid, render_settings
        self.info = info
        self.background = torch.tensor(info["background"], dtype=torch.float32)
        self.name = name or str(info.get("scene", ""))
        aabb = torch.tensor(info["aabb"], dtype=torch.float32).reshape(2, 3)
        self.centre = aabb.mean(0)
        self.half_diag = float((aabb[1] - aabb[0]).norm()) / 2
        self.settings["time"] = 0.0
        self.settings["play"] = False

    @classmethod
    def from_checkpoint(cls, path: str) -> DynamicView:
        from fields.dynamic.model import LoadedDynamic

        f = LoadedDynamic(path)
        return cls(f.model, f.grid, f.settings, f.info, path)

    def describe(self) -> str:
        return f"**dynamic radiance field** `{self.name}` (time: the slider, or play)"

    def controls(self) -> list[dict[str, Any]]:
        return [{"name": "time", "type": "slider", "value": 0.0, "min": 0.0, "max": 1.0,
                 "step": 0.01},
                {"name": "play", "type": "checkbox", "value": False}]

    def advance(self, seconds: float) -> bool:
        """While "play" is on, moves the time on by `seconds` / `play_seconds` (looping)."""
        if not self.settings.get("play"):
            return False
        t = float(self.settings.get("time", 0.0)) + seconds / self.play_seconds
        self.settings["time"] = round(t % 1.0, 4)
        return True

    def initial_camera(self) -> dict[str, Any]:
        return orbit_view_camera(self.info)

    def render(self, camera: Cameras, mode: str, cancel: Cancel,
               preview: bool = False) -> np.ndarray:
        from fields.dynamic.model import render_rays_at

        if mode not in self.modes:
            raise ValueError(f"DynamicView: unknown mode {mode!r}; expected one of {self.modes}")
        t = float(min(max(float(self.settings.get("time", 0.0)), 0.0), 1.0))
        origins, dirs = camera.pixel_rays(0)
        bg = self.background if mode == "rgb" else torch.zeros(3)
        parts: dict[str, list[torch.Tensor]] = {"rgb": [], "depth": [], "opacity": []}
        with torch.no_grad():
            for o, d in zip(origins.split(self.chunk), dirs.split(self.chunk), strict=True):
                if cancel():
                    raise Cancelled
                out = render_rays_at(self.model, self.grid, o, d,
                                     torch.full((o.shape[0],), t), self.render_settings, bg)
                for k in parts:
                    parts[k].append(out[k])
        h, w = camera.height, camera.width
        if mode == "rgb":
            return torch.cat(parts["rgb"]).clamp(0, 1).reshape(h, w, 3).numpy()
        op = torch.cat(parts["opacity"]).reshape(h, w)
        if mode == "opacity":
            return op.clamp(0, 1)[..., None].expand(h, w, 3).numpy()
        dist = float((camera.c2w[0, :, 3] - self.centre).norm())
        lo, hi = max(dist - self.half_diag, 0.0), dist + self.half_diag
        pic = colormap(torch.cat(parts["depth"]).reshape(h, w).numpy(), lo, hi)
        return np.where((op.numpy() > 0.05)[..., None], pic, 0.0).astype(np.float32)
