"""What the viewer shows of a PDE solution: solution / reference / error maps over the domain,
or a profile with a time slider (`PinnView`, registered by `fields.pinn.kind`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fields.render.cameras import Cameras
from fields.viewer.views import Cancel, Cancelled, FieldView, colormap


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
            pred = solution.on_reference_grid()
            # NaN in the reference: outside a non-box domain, or an output not compared
            self.ranges = [_range(ref.values[..., j], pred[..., j])
                           for j in range(len(self.outputs))]
            self.err_max = [_nanmax(np.abs(pred[..., j] - ref.values[..., j])) or 1e-12
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
        if not profile:  # a domain that is not its bounding box: the outside stays dark
            keep = np.asarray(self.box.contains(X, 1e-9 * _diagonal(self.box)), bool)
            idx, X = idx[torch.as_tensor(keep)], X[keep]
            if len(idx) == 0:
                return pic.reshape(camera.height, camera.width, 3)
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


def _nanmax(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.nanmax(a)) if np.isfinite(a).any() else 0.0


def _range(ref: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """The colour range of an output: the reference's where it has values, else the
    prediction's."""
    a = ref if np.isfinite(ref).any() else pred
    return float(np.nanmin(a)), float(np.nanmax(a))


def _diagonal(box: Any) -> float:
    return float(np.linalg.norm(np.asarray(box.hi, float) - np.asarray(box.lo, float)))
