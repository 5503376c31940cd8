"""What the viewer shows of a scene-flow checkpoint: both clouds, the flowed source and the
flow vectors (`FlowView`, registered by `fields.flow.kind`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fields.render.cameras import Cameras
from fields.viewer.views import Cancel, FieldView


class FlowView(FieldView):
    """A scene-flow checkpoint: the source cloud, the target cloud, the source moved by the
    flow, and the flow vectors (every n-th point). Nothing is rendered into the background."""

    kind = "flow"
    modes = ("scene",)
    renders_image = False

    def __init__(self, model: torch.nn.Module, source: torch.Tensor, target: torch.Tensor,
                 name: str = "") -> None:
        super().__init__()
        self.name = name
        self.source = source.float()
        self.target = target.float()
        with torch.no_grad():
            self.flow = torch.cat([model(p) for p in self.source.split(2**15)])

    @classmethod
    def from_checkpoint(cls, path: str) -> FlowView:
        from fields.flow import load_flow_field

        model, payload = load_flow_field(path)
        model.eval()
        return cls(model, torch.as_tensor(payload["source"]), torch.as_tensor(payload["target"]),
                   path)

    def describe(self) -> str:
        return (f"**scene flow** `{self.name}`: {len(self.source)} source, "
                f"{len(self.target)} target points")

    def initial_camera(self) -> dict[str, Any]:
        lo, hi = self.source.min(0).values, self.source.max(0).values
        centre = (lo + hi) / 2
        extent = max(float((hi - lo).max()), 1e-3)
        pos = centre + torch.tensor([-0.6 * extent, -0.3 * extent, 0.35 * extent])
        return {"position": tuple(pos.tolist()), "look_at": tuple(centre.tolist()),
                "up": (0.0, 0.0, 1.0)}

    def controls(self) -> list[dict[str, Any]]:
        return [{"name": "vector stride", "type": "slider", "value": 8, "min": 1, "max": 64,
                 "step": 1},
                {"name": "point size", "type": "slider", "value": 0.05, "min": 0.01,
                 "max": 0.3, "step": 0.01}]

    def vectors(self, stride: int) -> np.ndarray:
        """(N / stride, 2, 3) segments from source points to where the flow takes them."""
        s = self.source[:: max(int(stride), 1)]
        f = self.flow[:: max(int(stride), 1)]
        return torch.stack((s, s + f), dim=1).numpy()

    def setup_scene(self, server: Any) -> None:
        size = float(self.settings.get("point size", 0.05))
        scene = server.scene

        def cloud(name: str, pts: torch.Tensor, colour: tuple[int, int, int]) -> None:
            scene.add_point_cloud(name, points=pts.numpy(), colors=colour, point_size=size)

        cloud("/flow/source", self.source, (66, 120, 220))
        cloud("/flow/target", self.target, (235, 140, 40))
        cloud("/flow/flowed", self.source + self.flow, (60, 180, 90))
        seg = self.vectors(int(self.settings.get("vector stride", 8)))
        scene.add_line_segments("/flow/vectors", points=seg, colors=(40, 40, 40),
                                 thickness=1.5, thickness_units="screen")

    def render(self, camera: Cameras, mode: str, cancel: Cancel,
               preview: bool = False) -> np.ndarray:
        raise NotImplementedError("FlowView draws scene objects; it renders no image")
