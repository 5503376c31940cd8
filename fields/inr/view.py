"""What the viewer shows of an INR: an image, video frame or volume slice on the plane z = 0,
sampled wherever the rays land (`SignalView`, registered by `fields.inr.kind`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fields.render.cameras import Cameras
from fields.viewer.views import Cancel, Cancelled, FieldView


class SignalView(FieldView):
    """An INR image (or a video frame / volume slice, picked by a slider) on the plane z = 0.

    The image spans [-w, w] x [-h, h] with its longer side [-1, 1]; rays from the browser's
    camera meet the plane, and the field is evaluated at the coordinates they land on (the
    field's own [0, 1] coordinates, x right, y down). Outside [0, 1] the field is
    extrapolated: shown dimmed, or hidden."""

    kind = "inr"
    modes = ("rgb",)

    def __init__(self, model: torch.nn.Module, signal: dict[str, Any], name: str = "") -> None:
        super().__init__()
        kind = signal.get("kind")
        if kind not in ("image", "video", "volume"):
            raise ValueError(f"{name or 'INR checkpoint'}: the viewer shows images, videos and "
                             f"volumes; field 'signal.kind' is {kind!r}")
        self.model, self.signal, self.name = model, signal, name
        shape = [int(n) for n in signal["shape"]]
        if len(shape) != (2 if kind == "image" else 3):
            raise ValueError(f"{name}: field 'signal.shape' {shape} does not fit a {kind}")
        self.signal_kind = kind
        self.depth = shape[0] if kind != "image" else 1
        h, w = shape[-2:]
        longer = max(h, w)
        self.half_w, self.half_h = w / longer, h / longer
        self.pixel_size = h, w

    @classmethod
    def from_checkpoint(cls, path: str) -> SignalView:
        from fields.inr import load_inr

        model, signal = load_inr(path)
        model.eval()
        return cls(model, signal, path)

    def describe(self) -> str:
        h, w = self.pixel_size
        extra = f" × {self.depth} {'frames' if self.signal_kind == 'video' else 'slices'}" \
            if self.signal_kind != "image" else ""
        return f"**INR {self.signal_kind}** `{self.name}` ({w}×{h}{extra})"

    def controls(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"name": "outside", "type": "dropdown", "value": "dimmed",
                                      "options": ["dimmed", "hidden", "shown"]}]
        if self.signal_kind != "image":
            label = "frame" if self.signal_kind == "video" else "slice"
            out.append({"name": label, "type": "slider", "value": 0, "min": 0,
                        "max": max(self.depth - 1, 1), "step": 1})
        return out

    def initial_camera(self) -> dict[str, Any]:
        fov = math.radians(50.0)  # the image's height fills 90% of the view
        dist = self.half_h / (0.9 * math.tan(fov / 2))
        return {"position": (0.0, 0.0, dist), "look_at": (0.0, 0.0, 0.0), "up": (0.0, 1.0, 0.0),
                "fov": fov}

    def plane_coords(self, camera: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, 2) field coordinates where camera 0's pixel rays meet z = 0, and (R,) whether
        they meet it in front of the camera."""
        o, d = camera.pixel_rays(0)
        dz = d[:, 2]
        ok = dz.abs() > 1e-9
        t = torch.where(ok, -o[:, 2] / torch.where(ok, dz, torch.ones_like(dz)),
                        torch.full_like(dz, -1.0))
        front = t > 0
        p = o + d * t.clamp_min(0)[:, None]
        u = (p[:, 0] + self.half_w) / (2 * self.half_w)
        v = (self.half_h - p[:, 1]) / (2 * self.half_h)
        return torch.stack((u, v), dim=-1), front

    def render(self, camera: Cameras, mode: str, cancel: Cancel,
               preview: bool = False) -> np.ndarray:
        uv, front = self.plane_coords(camera)
        if self.signal_kind != "image":
            key = "frame" if self.signal_kind == "video" else "slice"
            k = min(max(int(self.settings.get(key, 0)), 0), self.depth - 1)
            third = torch.full_like(uv[:, :1], (k + 0.5) / self.depth)
            coords = torch.cat((uv, third), dim=-1)
        else:
            coords = uv
        inside = front & (uv >= 0).all(-1) & (uv <= 1).all(-1)
        outside = self.settings.get("outside", "dimmed")
        todo = front if outside != "hidden" else inside
        idx = todo.nonzero().squeeze(-1)
        values = torch.zeros(uv.shape[0], 3)
        with torch.no_grad():
            for part in idx.split(self.chunk):
                if cancel():
                    raise Cancelled
                y = self.model(coords[part]).float().clamp(0, 1)
                values[part] = y[:, :3] if y.shape[1] >= 3 else y[:, :1].expand(-1, 3)
        if outside == "dimmed":
            values = torch.where(inside[:, None], values, 0.3 * values)
        return values.reshape(camera.height, camera.width, 3).numpy()
