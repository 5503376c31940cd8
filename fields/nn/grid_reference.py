"""The layout of a multiresolution grid (levels, table sizes and offsets, addressing) and the
grid encoding in plain torch ops (`grid_reference`), shared by every backend of
`fields.nn.grid.GridEncoding` (see its module docstring for the definition).

`grid_reference` is the ``"torch"`` backend, the fallback of the kernels for derivatives they
do not give, and what the tests compare the kernels with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

GRID_TYPES = ("Hash", "Dense", "Tiled")
INTERPOLATIONS = ("Nearest", "Linear", "Smoothstep")
ADDRESSING = {"Dense": 0, "Hash": 1, "Tiled": 2}
PRIMES = (1, 2654435761, 805459861, 3674653429)
MAX_ENTRIES = 2**31  # per grid, so that offsets stay 32-bit in the kernels


@dataclass(frozen=True)
class GridLevel:
    """One level of a grid encoding: its scale, resolution, table size, offset of its
    entries in the parameter table, tile size and addressing (dense, hashed or tiled)."""

    scale: float  # float32 value, as the kernels use it
    res: int
    size: int
    offset: int
    tile: int
    addressing: str  # "Dense", "Hash" or "Tiled"


@dataclass(frozen=True)
class GridLayout:
    """Static description of a grid: what the kernels and the reference need."""

    n_dims: int
    n_features: int
    interpolation: str
    levels: tuple[GridLevel, ...]

    @property
    def n_entries(self) -> int:
        last = self.levels[-1]
        return last.offset + last.size

    @property
    def n_params(self) -> int:
        return self.n_entries * self.n_features

    def kernel_args(self) -> tuple[list[float], list[int], int, int]:
        scales = [lv.scale for lv in self.levels]
        meta: list[int] = []
        for lv in self.levels:
            meta += [lv.res, lv.size, lv.offset, lv.tile, ADDRESSING[lv.addressing]]
        return scales, meta, self.n_features, INTERPOLATIONS.index(self.interpolation)


def _next_multiple(v: int, m: int) -> int:
    return (v + m - 1) // m * m


def grid_layout(
    n_dims: int,
    n_levels: int,
    n_features: int,
    log2_hashmap_size: int,
    base_resolution: int,
    per_level_scale: float,
    interpolation: str,
    grid_type: str,
    owner: str = "GridEncoding",
) -> GridLayout:
    """Level sizes and offsets of a grid (see the module docstring)."""
    levels = []
    offset = 0
    log2_scale = np.float32(math.log2(per_level_scale))
    for lvl in range(n_levels):
        scale = float(np.exp2(np.float32(lvl) * log2_scale) * np.float32(base_resolution) - 1)
        scale = float(np.float32(scale))
        res = math.ceil(scale) + 1
        dense = res**n_dims
        tile = res
        if grid_type == "Hash":
            size = min(_next_multiple(dense, 8), 2**log2_hashmap_size)
            addressing = "Hash" if dense > size else "Dense"
        elif grid_type == "Dense":
            size = _next_multiple(dense, 8)
            addressing = "Dense"
        else:
            tile = min(res, base_resolution)
            size = _next_multiple(tile**n_dims, 8)
            addressing = "Tiled"
        levels.append(GridLevel(scale, res, size, offset, tile, addressing))
        offset += size
        if offset > MAX_ENTRIES:
            raise ValueError(
                f"{owner}: the grid would need {offset} table entries (more than 2^31) at "
                f"level {lvl} (resolution {res}); lower n_levels, per_level_scale or "
                "base_resolution, or use a hash grid"
            )
    return GridLayout(n_dims, n_features, interpolation, tuple(levels))


def _corner_bits(n_dims: int, device: torch.device) -> torch.Tensor:
    k = torch.arange(2**n_dims, device=device)
    return torch.stack([(k >> d) & 1 for d in range(n_dims)], dim=-1).bool()  # (C, D)


def _address(coords: torch.Tensor, lv: GridLevel) -> torch.Tensor:
    """Table entry of integer vertex coordinates (..., D) in level lv."""
    n_dims = coords.shape[-1]
    if lv.addressing == "Hash":
        h = coords[..., 0] * PRIMES[0]
        for d in range(1, n_dims):
            h = h ^ (coords[..., d] * PRIMES[d])
        return h & (lv.size - 1)
    base = lv.tile if lv.addressing == "Tiled" else lv.res
    if lv.addressing == "Tiled":
        coords = coords % lv.tile
    idx = coords[..., 0].clone()
    stride = 1
    for d in range(1, n_dims):
        stride *= base
        idx = idx + coords[..., d] * stride
    return idx


def grid_reference(x: torch.Tensor, params: torch.Tensor, layout: GridLayout) -> torch.Tensor:
    """The grid encoding in plain torch ops: x (N, D) -> (N, n_levels * n_features).

    Differentiable to any order in x and params (the interpolation weights are smooth functions
    of x inside a cell; cell indices are piecewise constant)."""
    n_dims = x.shape[1]
    nf = layout.n_features
    x = torch.nan_to_num(x, nan=0.0).clamp(0.0, 1.0)  # as the kernels: NaN encodes as 0
    bits = _corner_bits(n_dims, x.device)
    outs = []
    for lv in layout.levels:
        pos = x * lv.scale + 0.5
        cell = torch.floor(pos)
        frac = pos - cell
        lo = cell.long().clamp(max=lv.res - 1)
        hi = (lo + 1).clamp(max=lv.res - 1)
        table = params[lv.offset * nf : (lv.offset + lv.size) * nf].view(lv.size, nf)
        if layout.interpolation == "Nearest":
            outs.append(table[_address(lo, lv)])
            continue
        w_hi = frac * frac * (3.0 - 2.0 * frac) if layout.interpolation == "Smoothstep" else frac
        coords = torch.where(bits, hi[:, None, :], lo[:, None, :])  # (N, C, D)
        w = torch.where(bits, w_hi[:, None, :], 1.0 - w_hi[:, None, :]).prod(-1)  # (N, C)
        vals = table[_address(coords, lv)]  # (N, C, F)
        outs.append((w.unsqueeze(-1) * vals).sum(1))
    return torch.cat(outs, dim=-1)
