"""Tri-plane features (EG3D; K-Planes with ``reduce="product"``): three 2-D feature planes.

A 3-D point ``(x, y, z)`` in [0, 1]^3 is projected onto the planes xy, xz and yz; each plane is
a dense 2-D grid (`GridEncoding` with type "Dense", so the C++ kernels and the torch reference
are the grid's) with ``n_levels`` resolutions from ``resolution`` up by ``per_level_scale``,
``n_features`` features per level. The three plane features are summed (``"sum"``), multiplied
(``"product"``, as K-Planes) or concatenated (``"concat"``).

Config (our own otype, tiny-cuda-nn style): ``{"otype": "Triplane", "resolution": 128,
"n_features": 16, "n_levels": 1, "per_level_scale": 2.0, "reduce": "sum",
"interpolation": "Linear"}``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from fields.nn.encoding import InputEncoding, _positive_int
from fields.nn.grid import KERNEL_FEATURES, GridEncoding, canonical_choice

PLANES = ((0, 1), (0, 2), (1, 2))
REDUCTIONS = ("sum", "product", "concat")


class Triplane(InputEncoding):
    """Three axis-aligned 2-D feature planes over [0, 1]^3 (see the module docstring)."""

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
        *,
        backend: str = "auto",
    ) -> None:
        if n_input_dims != 3:
            raise ValueError(f"Triplane: encodes 3-D points, got n_input_dims={n_input_dims}")
        _positive_int("Triplane", "resolution", resolution, 8192)
        if n_features not in KERNEL_FEATURES or isinstance(n_features, bool):
            raise ValueError(
                f"Triplane: 'n_features' must be one of {', '.join(map(str, KERNEL_FEATURES))}, "
                f"got {n_features!r}"
            )
        self.reduce = canonical_choice("Triplane", "reduce", reduce, REDUCTIONS)
        per_plane = n_levels * n_features
        super().__init__(3, 3 * per_plane if self.reduce == "concat" else per_plane)
        self.resolution = resolution
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
            for _ in PLANES
        )
        self.interpolation = self.planes[0].interpolation
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for plane in self.planes:
                if self.reduce == "product":  # K-Planes: features near 1 multiply gently
                    plane.params.uniform_(0.1, 0.5)
                else:
                    bound = 1.0 / math.sqrt(self.n_features)
                    plane.params.uniform_(-0.1 * bound, 0.1 * bound)

    @property
    def n_levels(self) -> int:
        return self.n_levels_

    def output_levels(self) -> torch.Tensor:
        per_plane = torch.arange(self.n_levels_).repeat_interleave(self.n_features)
        return per_plane.repeat(3) if self.reduce == "concat" else per_plane

    def _combine(self, feats: list[torch.Tensor]) -> torch.Tensor:
        if self.reduce == "sum":
            return feats[0] + feats[1] + feats[2]
        if self.reduce == "product":
            return feats[0] * feats[1] * feats[2]
        return torch.cat(feats, dim=-1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        planes = zip(self.planes, PLANES, strict=True)
        return self._combine([p.encode(x[..., list(ax)]) for p, ax in planes])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        feats = [p(x[..., list(ax)]) for p, ax in zip(self.planes, PLANES, strict=True)]
        return self._mask(self._combine(feats), x)

    def config_values(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "n_features": self.n_features,
            "n_levels": self.n_levels_,
            "per_level_scale": self.per_level_scale,
            "reduce": self.reduce,
            "interpolation": self.interpolation,
        }
