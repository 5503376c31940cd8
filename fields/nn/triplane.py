"""Feature planes on every pair of axes: tri-planes (EG3D; K-Planes' static model with
``reduce="product"``) for 3-D points, hex-planes (K-Planes, HexPlane) for space-time points.

A 3-D point ``(x, y, z)`` in [0, 1]^3 is projected onto the planes xy, xz and yz; a 4-D point
``(x, y, z, t)`` also onto the space-time planes xt, yt and zt. Each plane is a dense 2-D grid
(`GridEncoding` with type "Dense", so the C++ kernels and the torch reference are the grid's)
with ``n_levels`` resolutions from ``resolution`` up by ``per_level_scale``, ``n_features``
features per level (both axes of a plane have the level's resolution, the time axis too: the
time-smoothness regulariser is what keeps features smooth between frames). The planes'
features are summed (``"sum"``), multiplied per level (``"product"``, as K-Planes: each
level's product, the levels concatenated) or concatenated (``"concat"``).

Initialisation: with ``"product"``, space planes uniform in [0.1, 0.5] and space-time planes 1
(K-Planes: a static scene until the data say otherwise); otherwise small around 0.

Regularisers (K-Planes, Fridovich-Keil et al. 2023), means over the planes' entries:
`total_variation` (squared differences of neighbouring entries along both axes of every
plane), `time_smoothness` (squared second differences along the time axis of the space-time
planes) and `time_l1` (|1 - feature| on the space-time planes: motion is sparse).

Config (our own otypes, tiny-cuda-nn style): ``{"otype": "Triplane", "resolution": 128,
"n_features": 16, "n_levels": 1, "per_level_scale": 2.0, "reduce": "sum",
"interpolation": "Linear"}``; ``"KPlanes"`` takes the same keys (defaults resolution 32,
n_features 8, n_levels 3, reduce "product") and ``time_resolution`` (None: as space), and
encodes 4-D points. ``time_resolution`` T scales the time coordinate so that [0, 1] spans T
vertices of the coarsest level (and proportionally more of the finer ones), as K-Planes gives
time its own resolution; the rows past t = 1 are unused (and unregularised).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from fields.nn.encoding import InputEncoding, _positive_int
from fields.nn.grid import KERNEL_FEATURES, GridEncoding, canonical_choice

PLANES = ((0, 1), (0, 2), (1, 2))
SPACE_TIME_PLANES = ((0, 3), (1, 3), (2, 3))
TIME_AXIS = 3
REDUCTIONS = ("sum", "product", "concat")


class Triplane(InputEncoding):
    """Axis-aligned 2-D feature planes over [0, 1]^3 (three) or [0, 1]^4 (six), see the module
    docstring."""

    otype = "Triplane"

    def __init__(
        self,
        n_input_dims: int = 3,
        resolution: int = 128,
        n_features: int = 16,
        n_levels: int = 1,
        per_level_scale: float = 2.0,
        reduce: str = "sum",
        interpolation: str = "Linear",
        time_resolution: int | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        if n_input_dims not in (3, 4):
            raise ValueError("Triplane: encodes 3-D points (or 4-D space-time points as "
                             f"KPlanes), got n_input_dims={n_input_dims}")
        self.axes = PLANES if n_input_dims == 3 else PLANES + SPACE_TIME_PLANES
        _positive_int("Triplane", "resolution", resolution, 8192)
        if n_features not in KERNEL_FEATURES or isinstance(n_features, bool):
            raise ValueError(
                f"Triplane: 'n_features' must be one of {', '.join(map(str, KERNEL_FEATURES))}, "
                f"got {n_features!r}"
            )
        self.reduce = canonical_choice("Triplane", "reduce", reduce, REDUCTIONS)
        per_plane = n_levels * n_features
        n_planes = len(self.axes)
        super().__init__(n_input_dims, n_planes * per_plane if self.reduce == "concat"
                         else per_plane)
        self.resolution = resolution
        if time_resolution is not None:
            _positive_int("Triplane", "time_resolution", time_resolution, resolution)
            if n_input_dims != 4 or time_resolution < 2:
                raise ValueError("Triplane: time_resolution is for 4-D (space-time) points and "
                                 f"must be >= 2, got {time_resolution} with n_input_dims="
                                 f"{n_input_dims}")
        self.time_resolution = time_resolution
        # the time coordinate's scale: t in [0, 1] spans time_resolution vertices at level 0
        self.time_scale = 1.0 if time_resolution is None or resolution < 2 else \
            (time_resolution - 1) / (resolution - 1)
        self.n_features = n_features
        self.n_levels_ = n_levels
        self.per_level_scale = per_level_scale
        self.planes = nn.ModuleList(
            GridEncoding(
                2,
                n_levels=n_levels,
                n_features_per_level=n_features,
                base_resolution=resolution,
                per_level_scale=per_level_scale,
                interpolation=interpolation,
                grid_type="Dense",
                backend=backend,
                _allow_wide=True,
            )
            for _ in self.axes
        )
        self.interpolation = self.planes[0].interpolation
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for plane, ax in zip(self.planes, self.axes, strict=True):
                if self.reduce == "product" and TIME_AXIS in ax:  # K-Planes: static at first
                    plane.params.fill_(1.0)
                elif self.reduce == "product":  # K-Planes: features near 1 multiply gently
                    plane.params.uniform_(0.1, 0.5)
                else:
                    bound = 1.0 / math.sqrt(self.n_features)
                    plane.params.uniform_(-0.1 * bound, 0.1 * bound)

    @property
    def n_levels(self) -> int:
        return self.n_levels_

    def output_levels(self) -> torch.Tensor:
        per_plane = torch.arange(self.n_levels_).repeat_interleave(self.n_features)
        return per_plane.repeat(len(self.axes)) if self.reduce == "concat" else per_plane

    def _combine(self, feats: list[torch.Tensor]) -> torch.Tensor:
        if self.reduce == "concat":
            return torch.cat(feats, dim=-1)
        out = feats[0]
        for f in feats[1:]:
            out = out + f if self.reduce == "sum" else out * f
        return out

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_scale == 1.0 or x.shape[-1] != 4:
            return x
        return torch.cat((x[..., :3], x[..., 3:] * self.time_scale), dim=-1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = self._scaled(x)
        planes = zip(self.planes, self.axes, strict=True)
        return self._combine([p.encode(x[..., list(ax)]) for p, ax in planes])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        xs = self._scaled(x)
        feats = [p(xs[..., list(ax)]) for p, ax in zip(self.planes, self.axes, strict=True)]
        return self._mask(self._combine(feats), x)

    # -- regularisers (K-Planes) --
    def plane_levels(self, plane: int) -> list[torch.Tensor]:
        """Plane `plane`'s levels as (rows, res, n_features) views of its table, indexed
        [second axis, first axis] (for a space-time plane: [time, space]; with a
        `time_resolution`, only the rows that times in [0, 1] reach)."""
        grid = self.planes[plane]
        out = []
        for lv in grid.layout.levels:
            table = grid.level_table(len(out))
            view = table[: lv.res * lv.res].view(lv.res, lv.res, self.n_features)
            if TIME_AXIS in self.axes[plane] and self.time_scale != 1.0:
                # t = 1 sits at vertex units scale * time_scale + 0.5; its upper neighbour too
                view = view[: min(lv.res, math.floor(lv.scale * self.time_scale + 0.5) + 2)]
            out.append(view)
        return out

    def total_variation(self) -> torch.Tensor:
        """Mean over planes and levels of the mean squared difference of neighbouring
        entries, along both axes."""
        terms = []
        for i in range(len(self.planes)):
            for t in self.plane_levels(i):
                terms.append((t[1:] - t[:-1]).square().mean()
                             + (t[:, 1:] - t[:, :-1]).square().mean())
        return torch.stack(terms).mean()

    def time_smoothness(self) -> torch.Tensor:
        """Mean over the space-time planes and levels of the mean squared second difference
        along time (0 without space-time planes)."""
        terms = [(t[2:] - 2 * t[1:-1] + t[:-2]).square().mean()
                 for i, ax in enumerate(self.axes) if TIME_AXIS in ax
                 for t in self.plane_levels(i)]
        return torch.stack(terms).mean() if terms else self.planes[0].params.new_zeros(())

    def time_l1(self) -> torch.Tensor:
        """Mean over the space-time planes and levels of the mean |1 - entry| (0 without
        space-time planes)."""
        terms = [(1.0 - t).abs().mean()
                 for i, ax in enumerate(self.axes) if TIME_AXIS in ax
                 for t in self.plane_levels(i)]
        return torch.stack(terms).mean() if terms else self.planes[0].params.new_zeros(())

    def config_values(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "n_features": self.n_features,
            "n_levels": self.n_levels_,
            "per_level_scale": self.per_level_scale,
            "reduce": self.reduce,
            "interpolation": self.interpolation,
            **({"time_resolution": self.time_resolution}
               if self.time_resolution is not None else {}),
        }
