"""What the viewer shows, one class per field kind.

A `FieldView` turns a browser camera into a picture (`render`) and may also put objects in
the 3-D scene (`setup_scene`: point clouds, vectors). The viewer's server (`server.py`) owns
the render loop, the resolution and the threads; a view only renders what it is asked, as
fast as it can, and stops early when `cancel()` says the camera has moved on.

- `NerfView`: a radiance field through the engine's renderer (RGB, depth, opacity, normals).
- `SignalView`: an INR image, video frame or volume slice on the plane z = 0: pan and zoom
  are camera moves, and the field is sampled wherever the rays land (any scale: it is
  continuous).
- `FlowView`: a scene-flow checkpoint: both clouds, the flowed source and the flow vectors.
- `SDFView`: a signed distance field, sphere traced (shading, normals, depth).
- `MeshView`: a mesh file (ply / obj / stl / glb, e.g. from `fields export mesh`).

`load_view(path)` picks the view from the checkpoint's ``kind``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from fields.render.cameras import Cameras

Cancel = Callable[[], bool]


class Cancelled(Exception):
    """A render was abandoned because its camera is stale."""


class FieldView:
    """Base class: what a field kind shows. Subclasses set `kind`, `modes` and override
    `render` (or set `renders_image = False` and draw in `setup_scene`)."""

    kind: str = "field"
    modes: tuple[str, ...] = ("rgb",)
    renders_image: bool = True
    chunk: int = 2**14  # rays between two checks of `cancel`

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}

    def describe(self) -> str:
        """One markdown line for the page's panel."""
        return f"**{self.kind}**"

    def initial_camera(self) -> dict[str, Any]:
        """{"position", "look_at", "up"} (and optionally the vertical "fov", radians) of the
        first view in the browser."""
        return {"position": (0.0, 0.0, 3.0), "look_at": (0.0, 0.0, 0.0), "up": (0.0, 1.0, 0.0)}

    def setup_scene(self, server: Any) -> None:
        """Adds the view's 3-D objects to the (viser) scene; none by default."""

    def controls(self) -> list[dict[str, Any]]:
        """Field-specific settings as GUI controls: dicts with "name", "type" ("slider",
        "checkbox", "dropdown"), "value" and the type's bounds ("min", "max", "step" or
        "options"). Their values land in `self.settings[name]`."""
        return []

    def render(self, camera: Cameras, mode: str, cancel: Cancel,
               preview: bool = False) -> np.ndarray:
        """(H, W, 3) float32 picture in [0, 1] of camera 0 of `camera`; raises `Cancelled`
        when `cancel()` turns true between chunks. `preview`: a frame shown while the camera
        moves, where speed matters more than fidelity."""
        raise NotImplementedError


# -- pictures of scalar maps --


def colormap(values: np.ndarray, lo: float, hi: float, name: str = "turbo") -> np.ndarray:
    """(…, 3) colours of `values` mapped linearly from [lo, hi] (clamped) through a
    matplotlib colormap."""
    import matplotlib

    lut = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3].astype(np.float32)
    t = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    return lut[np.round(t * 255).astype(np.int64)]


# -- radiance fields --


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
        o = self.info["orbit"]
        centre = torch.tensor(o["centre"], dtype=torch.float32)
        up = torch.tensor(o["up"], dtype=torch.float32)
        up = up / up.norm().clamp_min(1e-9)
        # a view from above the orbit's height, looking at the centre
        side = torch.linalg.cross(up, torch.tensor([0.0, 0.0, 1.0]))
        if side.norm() < 1e-3:
            side = torch.linalg.cross(up, torch.tensor([1.0, 0.0, 0.0]))
        side = side / side.norm()
        pos = centre + float(o["radius"]) * (0.87 * side + 0.5 * up)
        cam = self.info["camera"]
        fov = 2.0 * math.atan(0.5 * cam["height"] / cam["fy"])  # the training cameras'
        return {"position": tuple(pos.tolist()), "look_at": tuple(centre.tolist()),
                "up": tuple(up.tolist()), "fov": fov}

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
        bg = self._background() if mode == "rgb" else torch.zeros(3)
        rgb, depth, opacity = [], [], []
        with torch.no_grad():
            for o, d in zip(origins.split(self.chunk), dirs.split(self.chunk), strict=True):
                if cancel():
                    raise Cancelled
                out = render_rays(self.model, self.grid, o, d, settings, bg)
                rgb.append(out["rgb"])
                depth.append(out["depth"])
                opacity.append(out["opacity"])
        h, w = camera.height, camera.width
        if mode == "rgb":
            return torch.cat(rgb).clamp(0, 1).reshape(h, w, 3).numpy()
        op = torch.cat(opacity).reshape(h, w)
        if mode == "opacity":
            return op.clamp(0, 1)[..., None].expand(h, w, 3).numpy()
        dep = torch.cat(depth).reshape(h, w)
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


# -- INR signals (image, video, volume) --


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


# -- scene flow --


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


# -- signed distance fields --


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


# -- PDE solutions --


class PinnView(FieldView):
    """A PINN solution on the plane z = 0: the first spatial coordinate across, time (or the
    second coordinate) up, coloured. Modes: ``solution``, ``reference`` and ``error``
    (|solution - reference|) when the problem has a reference, and ``profile``: the output
    against the first coordinate at the slider's value of the second one (time, or y; white,
    the reference grey). A third coordinate is picked by the slider in every mode."""

    kind = "pinn"
    modes = ("solution", "error", "reference", "profile")
    half_w, half_h = 1.0, 0.625

    def __init__(self, solution: Any, name: str = "") -> None:
        super().__init__()
        self.solution, self.name = solution, name
        problem = solution.problem
        box = problem.domain
        self.box = box
        self.outputs = tuple(problem.outputs)
        spatial = [box.index(n) for n in box.spatial]
        self.h_axis = spatial[0] if spatial else 0
        rest = [i for i in range(box.dim) if i != self.h_axis]
        t_i = box.index(box.time) if box.time is not None else None
        self.v_axis = t_i if t_i is not None and t_i != self.h_axis else (rest[0] if rest
                                                                          else None)
        # the slider: time in profile mode, or a third coordinate
        others = [i for i in rest if i != self.v_axis]
        self.slider_axis = others[0] if others else self.v_axis
        self.fixed = {i: 0.5 * (box.lo[i] + box.hi[i]) for i in others[1:]}
        ref = problem.reference
        self.ref = ref
        self._interp = None
        if ref is not None:
            from scipy.interpolate import RegularGridInterpolator

            self._interp = [RegularGridInterpolator(ref.axes, ref.values[..., j],
                                                    bounds_error=False, fill_value=np.nan)
                            for j in range(len(self.outputs))]
            self.ranges = [(float(ref.values[..., j].min()), float(ref.values[..., j].max()))
                           for j in range(len(self.outputs))]
            pred = solution.on_reference_grid()
            self.err_max = [float(np.abs(pred[..., j] - ref.values[..., j]).max()) or 1e-12
                            for j in range(len(self.outputs))]
        else:
            self.modes = ("solution", "profile")
            _, pts = box.grid(32 if box.dim <= 2 else 12)
            pred = solution.predict(pts)
            self.ranges = [(float(pred[:, j].min()), float(pred[:, j].max()))
                           for j in range(len(self.outputs))]
            self.err_max = [1.0] * len(self.outputs)

    @classmethod
    def from_checkpoint(cls, path: str) -> PinnView:
        from fields.pinn.run import load_solution

        sol, _ = load_solution(path)
        return cls(sol, path)

    def describe(self) -> str:
        b = self.box
        return (f"**PDE solution** `{self.solution.problem.name}` on {b!r}, outputs "
                f"{', '.join(self.outputs)}")

    def controls(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if len(self.outputs) > 1:
            out.append({"name": "output", "type": "dropdown", "value": self.outputs[0],
                        "options": list(self.outputs)})
        if self.slider_axis is not None:
            lo, hi = self.box.bounds(self.box.names[self.slider_axis])
            out.append({"name": self.box.names[self.slider_axis], "type": "slider",
                        "value": lo, "min": lo, "max": hi, "step": (hi - lo) / 100})
        return out

    def initial_camera(self) -> dict[str, Any]:
        fov = math.radians(50.0)
        dist = self.half_h / (0.9 * math.tan(fov / 2))
        return {"position": (0.0, 0.0, dist), "look_at": (0.0, 0.0, 0.0), "up": (0.0, 1.0, 0.0),
                "fov": fov}

    def _plane(self, camera: Cameras) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Where camera 0's pixels meet z = 0, as (u, v) in [0, 1] across and up, whether in
        front, and the height of a pixel row in v units."""
        o, d = camera.pixel_rays(0)
        dz = d[:, 2]
        ok = dz.abs() > 1e-9
        t = torch.where(ok, -o[:, 2] / torch.where(ok, dz, torch.ones_like(dz)),
                        torch.full_like(dz, -1.0))
        p = o + d * t.clamp_min(0)[:, None]
        u = (p[:, 0] + self.half_w) / (2 * self.half_w)
        v = (p[:, 1] + self.half_h) / (2 * self.half_h)
        vv = v.reshape(camera.height, camera.width)
        row = float((vv[:-1] - vv[1:]).abs().median()) if camera.height > 1 else 1.0 / 256
        return torch.stack((u, v), -1), t > 0, row

    def _points(self, uv: torch.Tensor, slider: float | None, profile: bool) -> np.ndarray:
        b = self.box
        X = np.empty((len(uv), b.dim))
        u = uv[:, 0].double().numpy()
        X[:, self.h_axis] = b.lo[self.h_axis] + u * (b.hi[self.h_axis] - b.lo[self.h_axis])
        if self.v_axis is not None and not (profile and self.slider_axis == self.v_axis):
            v = uv[:, 1].double().numpy()
            X[:, self.v_axis] = b.lo[self.v_axis] + v * (b.hi[self.v_axis] - b.lo[self.v_axis])
        if self.slider_axis is not None and slider is not None and (
                profile or self.slider_axis != self.v_axis):
            X[:, self.slider_axis] = slider
        for i, val in self.fixed.items():
            X[:, i] = val
        return X

    def render(self, camera: Cameras, mode: str, cancel: Cancel,
               preview: bool = False) -> np.ndarray:
        if mode not in self.modes:
            raise ValueError(f"PinnView: unknown mode {mode!r}; expected one of {self.modes}")
        j = self.outputs.index(self.settings.get("output", self.outputs[0]))
        uv, front, row = self._plane(camera)
        inside = front & (uv >= 0).all(-1) & (uv <= 1).all(-1)
        idx = inside.nonzero().squeeze(-1)
        pic = np.full((len(uv), 3), 0.12, dtype=np.float32)
        if len(idx) == 0:
            return pic.reshape(camera.height, camera.width, 3)
        slider = None
        if self.slider_axis is not None:
            lo, hi = self.box.bounds(self.box.names[self.slider_axis])
            slider = float(np.clip(float(self.settings.get(self.box.names[self.slider_axis],
                                                           lo)), lo, hi))
        profile = mode == "profile"
        X = self._points(uv[idx], slider, profile)
        values = np.empty(len(X))
        if mode != "reference":
            for part in np.array_split(np.arange(len(X)), max(1, len(X) // self.chunk)):
                if cancel():
                    raise Cancelled
                values[part] = self.solution.predict(X[part])[:, j]
        lo, hi = self.ranges[j]
        if profile:
            pad = 0.1 * max(hi - lo, 1e-12)
            level = lo - pad + uv[idx, 1].double().numpy() * (hi - lo + 2 * pad)
            width = 1.5 * row * (hi - lo + 2 * pad)
            colour = np.full((len(X), 3), 0.05, dtype=np.float32)
            if self._interp is not None:
                r = self._interp[j](X)
                colour[np.abs(level - r) < 2 * width] = 0.45
            colour[np.abs(level - values) < width] = 1.0
        elif mode == "solution":
            colour = colormap(values, lo, hi, "RdBu_r")
        elif mode == "reference":
            colour = colormap(np.nan_to_num(self._interp[j](X), nan=lo), lo, hi, "RdBu_r")
        else:
            err = np.abs(values - self._interp[j](X))
            colour = colormap(np.nan_to_num(err), 0.0, self.err_max[j], "magma")
        pic[idx.numpy()] = colour
        return pic.reshape(camera.height, camera.width, 3)


# -- meshes --

MESH_SUFFIXES = (".ply", ".obj", ".stl", ".glb", ".gltf", ".off")


class MeshView(FieldView):
    """A triangle mesh (an extracted surface: `fields export mesh`), drawn by the browser
    with its vertex colours when it has them."""

    kind = "mesh"
    modes = ("scene",)
    renders_image = False

    def __init__(self, vertices: np.ndarray, faces: np.ndarray,
                 colors: np.ndarray | None = None, name: str = "") -> None:
        super().__init__()
        self.vertices = np.asarray(vertices, dtype=np.float32)
        self.faces = np.asarray(faces, dtype=np.int64)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3 or len(self.vertices) == 0:
            raise ValueError(f"{name}: a mesh needs (V, 3) vertices, got "
                             f"{self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"{name}: a mesh needs (F, 3) triangle faces, got "
                             f"{self.faces.shape}")
        if len(self.faces) and (self.faces.min() < 0 or self.faces.max() >= len(self.vertices)):
            raise ValueError(f"{name}: face indices outside [0, {len(self.vertices)})")
        self.colors = None if colors is None else np.asarray(colors, dtype=np.uint8)[:, :3]
        self.name = name

    @classmethod
    def from_file(cls, path: str) -> MeshView:
        import trimesh

        try:
            mesh = trimesh.load(path, force="mesh", process=False)
        except Exception as e:
            raise ValueError(f"{path}: not a readable mesh ({type(e).__name__}: {e})") from e
        colors = None
        visual = getattr(mesh, "visual", None)
        if visual is not None and getattr(visual, "kind", None) == "vertex":
            colors = np.asarray(visual.vertex_colors)
        return cls(np.asarray(mesh.vertices), np.asarray(mesh.faces), colors, path)

    def describe(self) -> str:
        return (f"**mesh** `{self.name}`: {len(self.vertices)} vertices, {len(self.faces)} "
                f"faces")

    def controls(self) -> list[dict[str, Any]]:
        return [{"name": "wireframe", "type": "checkbox", "value": False}]

    def initial_camera(self) -> dict[str, Any]:
        lo, hi = self.vertices.min(0), self.vertices.max(0)
        centre = (lo + hi) / 2
        r = max(float(np.linalg.norm(hi - lo)) / 2, 1e-3)
        pos = centre + r * np.array([1.6, -1.6, 1.2])
        return {"position": tuple(pos.tolist()), "look_at": tuple(centre.tolist()),
                "up": (0.0, 0.0, 1.0)}

    def setup_scene(self, server: Any) -> None:
        wire = bool(self.settings.get("wireframe", False))
        if self.colors is not None and not wire:
            import trimesh

            mesh = trimesh.Trimesh(self.vertices, self.faces, vertex_colors=self.colors,
                                   process=False)
            server.scene.add_mesh_trimesh("/mesh", mesh)
        else:
            server.scene.add_mesh_simple("/mesh", self.vertices, self.faces,
                                         color=(180, 180, 190), wireframe=wire)


# -- dispatch --

VIEWS: dict[str, Callable[[str], FieldView]] = {
    "nerf": NerfView.from_checkpoint,
    "inr": SignalView.from_checkpoint,
    "flow": FlowView.from_checkpoint,
    "sdf": SDFView.from_checkpoint,
    "pinn": PinnView.from_checkpoint,
}


def load_view(path: str) -> FieldView:
    """The view of a checkpoint, chosen by its ``kind`` (or of a mesh file, by its suffix);
    ValueError (naming the file and the field) when it cannot be shown."""
    from pathlib import Path

    from fields.train import read_checkpoint

    if Path(path).suffix.lower() in MESH_SUFFIXES:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such mesh file")
        return MeshView.from_file(path)
    payload = read_checkpoint(path)
    kind = payload.get("kind")
    if kind not in VIEWS:
        raise ValueError(f"{path}: field 'kind' is {kind!r}; the viewer shows "
                         f"{', '.join(sorted(VIEWS))} checkpoints")
    del payload
    try:
        return VIEWS[kind](path)
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{path}: malformed {kind} checkpoint ({type(e).__name__}: {e})") from e

