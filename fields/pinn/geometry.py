"""Domains and collocation sampling: axis-aligned boxes in space or space-time.

`Box(x=(-1, 1), t=(0, 1))` names its coordinates; the order of the keywords is the order of the
network's inputs and of the residual's coordinate arguments. A coordinate named ``t`` (or the
one given as ``time=``) is time: initial conditions live on its lower face, boundary conditions
on the faces of the others.

Samplers: ``"uniform"`` (i.i.d.), ``"lhs"`` (Latin hypercube), ``"sobol"`` (scrambled Sobol',
the default: low discrepancy), ``"grid"`` (a regular grid of about n points, cell centres).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["SAMPLERS", "Box", "keep_where", "parse_bounds", "sample_unit"]

SAMPLERS = ("uniform", "lhs", "sobol", "grid")


def sample_unit(n: int, d: int, method: str = "sobol", seed: int = 0) -> np.ndarray:
    """`n` points in the unit cube ``[0, 1]^d`` (float64, shape (n, d))."""
    if n < 1 or d < 1:
        raise ValueError(f"sample_unit: need n >= 1 and d >= 1, got n={n}, d={d}")
    if method == "uniform":
        return np.random.default_rng(seed).random((n, d))
    if method == "lhs":
        from scipy.stats import qmc

        return qmc.LatinHypercube(d=d, seed=seed).random(n)
    if method == "sobol":
        from scipy.stats import qmc

        m = max(0, math.ceil(math.log2(n)))
        return qmc.Sobol(d=d, scramble=True, seed=seed).random_base2(m)[:n]
    if method == "grid":
        k = max(1, round(n ** (1.0 / d)))
        axes = [(np.arange(k) + 0.5) / k] * d
        return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d)
    raise ValueError(f"unknown sampler {method!r}; expected one of {', '.join(SAMPLERS)}")


def parse_bounds(what: str, bounds: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``{name: (low, high)}`` as arrays of lows and highs; ValueError naming `what` and the
    coordinate unless each is a finite pair with low < high."""
    lo, hi = [], []
    for name, b in bounds.items():
        try:
            a, c = (float(v) for v in b)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{what}: {name}={b!r} must be a pair (low, high)") from e
        if not (math.isfinite(a) and math.isfinite(c) and c > a):
            raise ValueError(f"{what}: {name}={b!r} must be finite with low < high")
        lo.append(a)
        hi.append(c)
    return np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)


def keep_where(on: Callable[..., Any], X: np.ndarray,
               *rest: np.ndarray) -> tuple[np.ndarray, ...]:
    """The rows of X (N, dim) and of each array in `rest` where the predicate ``on(*columns
    of X)`` holds."""
    mask = np.asarray(on(*[X[:, i] for i in range(X.shape[1])]), dtype=bool)
    mask = np.broadcast_to(mask.reshape(-1), (len(X),))
    return (X[mask], *(r[mask] for r in rest))


class Box:
    """An axis-aligned box with named coordinates, e.g. ``Box(x=(-1, 1), t=(0, 1))``."""

    def __init__(self, time: str | None = "t", **bounds: tuple[float, float]) -> None:
        if not bounds:
            raise ValueError("Box: give at least one coordinate, e.g. Box(x=(0, 1))")
        self.names: tuple[str, ...] = tuple(bounds)
        self.lo, self.hi = parse_bounds("Box", bounds)
        self.time = time if time in self.names else None

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def spatial(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n != self.time)

    def index(self, name: str) -> int:
        if name not in self.names:
            raise ValueError(f"Box has no coordinate {name!r}; it has {', '.join(self.names)}")
        return self.names.index(name)

    def bounds(self, name: str) -> tuple[float, float]:
        i = self.index(name)
        return float(self.lo[i]), float(self.hi[i])

    def volume(self) -> float:
        return float(np.prod(self.hi - self.lo))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}=({a:g}, {b:g})" for n, a, b in zip(self.names, self.lo, self.hi,
                                                                    strict=True))
        return f"Box({inner})"

    # -- sampling --
    def to_box(self, unit: np.ndarray) -> np.ndarray:
        return self.lo + unit * (self.hi - self.lo)

    def sample(self, n: int, method: str = "sobol", seed: int = 0) -> np.ndarray:
        """`n` interior points, shape (n, dim)."""
        return self.to_box(sample_unit(n, self.dim, method, seed))

    def faces(self, on: str | Sequence[str] | None) -> list[tuple[int, int]]:
        """``(axis, side)`` pairs (side 0: low, 1: high) named by `on`: ``"x"`` (both faces),
        ``"x-"`` / ``"x+"`` (one), a list of those, or None (every face of every spatial
        coordinate)."""
        if on is None:
            names = list(self.spatial)
        elif isinstance(on, str):
            names = [on]
        else:
            names = list(on)
        out = []
        for n in names:
            sides = (0, 1)
            if n.endswith(("-", "+")):
                sides = (0,) if n.endswith("-") else (1,)
                n = n[:-1]
            axis = self.index(n)
            out += [(axis, s) for s in sides]
        if not out:
            raise ValueError(f"Box: no faces named by on={on!r}")
        return out

    def sample_faces(self, faces: Sequence[tuple[int, int]], n: int, method: str = "sobol",
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """About `n` points spread over `faces` in proportion to their areas; returns the
        points (m, dim) and the index of each point's face (m,)."""
        areas = []
        for axis, _ in faces:
            others = [i for i in range(self.dim) if i != axis]
            areas.append(float(np.prod((self.hi - self.lo)[others])) if others else 1.0)
        areas_a = np.array(areas)
        counts = np.maximum(1, np.round(n * areas_a / areas_a.sum()).astype(int))
        pts, which = [], []
        for k, ((axis, side), m) in enumerate(zip(faces, counts, strict=True)):
            u = self._unit_on(axis, float(side), int(m), method, seed + 7919 * (k + 1))
            pts.append(self.to_box(u))
            which.append(np.full(int(m), k))
        return np.concatenate(pts), np.concatenate(which)

    def sample_slice(self, name: str, value: float, n: int, method: str = "sobol",
                     seed: int = 0) -> np.ndarray:
        """`n` points on the plane ``name = value`` (e.g. the initial time)."""
        i = self.index(name)
        pts = self.to_box(self._unit_on(i, 0.0, n, method, seed))
        pts[:, i] = value
        return pts

    def _unit_on(self, axis: int, value: float, n: int, method: str, seed: int) -> np.ndarray:
        """`n` unit-cube points with coordinate `axis` = `value`, the others sampled in d - 1
        dimensions (so a grid on a face is a grid of the face)."""
        u = np.full((n, self.dim), value)
        if self.dim > 1:
            rest = sample_unit(n, self.dim - 1, method, seed)
            n = min(n, len(rest))
            u = u[:n]
            u[:, [i for i in range(self.dim) if i != axis]] = rest[:n]
        return u

    def sample_boundary(self, on: str | Sequence[str] | Callable[..., Any] | None, n: int,
                        method: str = "sobol",
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """About `n` points on the faces named by `on` (or, for a predicate ``on(*coords) ->
        bool mask``, on every spatial face where it holds): points (m, dim), outward unit
        normals (m, dim) and each point's face index (m,)."""
        faces = self.faces(None if callable(on) else on)
        X, which = self.sample_faces(faces, n, method, seed)
        normals = np.zeros_like(X)
        axis = np.array([a for a, _ in faces])[which]
        normals[np.arange(len(X)), axis] = np.array([2.0 * s - 1.0 for _, s in faces])[which]
        if callable(on):
            X, normals, which = keep_where(on, X, normals, which)
            if len(X) == 0:
                raise ValueError(f"{self}: the predicate on= selects no boundary point")
        return X, normals, which

    def part_keys(self, on: str | Sequence[str] | Callable[..., Any] | None) -> list[str] | None:
        """The faces `on` names, as ``"x-"`` / ``"x+"`` (None for a predicate)."""
        if callable(on):
            return None
        return sorted({f"{self.names[a]}{'-+'[s]}" for a, s in self.faces(on)})

    def distance(self, X: torch.Tensor,
                 on: str | Sequence[str] | Callable[..., Any] | None) -> torch.Tensor | None:
        """A function (N, 1) zero on the faces named by `on` and positive inside: the
        product of normalised distances ``(x - lo)(hi - x) / (L/2)^2`` (both faces of x),
        ``(x - lo) / L`` or ``(hi - x) / L`` (one); None for a predicate."""
        if callable(on):
            return None
        faces = self.faces(on)
        dist = torch.ones_like(X[:, :1])
        for axis in sorted({a for a, _ in faces}):
            lo, hi = float(self.lo[axis]), float(self.hi[axis])
            x = X[:, axis : axis + 1]
            sides = {s for a, s in faces if a == axis}
            if sides == {0, 1}:
                dist = dist * (x - lo) * (hi - x) / (0.5 * (hi - lo)) ** 2
            elif sides == {0}:
                dist = dist * (x - lo) / (hi - lo)
            else:
                dist = dist * (hi - x) / (hi - lo)
        return dist

    def contains(self, X: np.ndarray, tol: float = 0.0) -> np.ndarray:
        """Whether each point (N, dim) lies in the box (within `tol`)."""
        X = np.asarray(X, dtype=np.float64)
        return ((X >= self.lo - tol) & (X <= self.hi + tol)).all(1)

    def with_time(self, t0: float, t1: float) -> Box:
        """The same box over another time interval."""
        bounds = {n: (t0, t1) if n == self.time else self.bounds(n) for n in self.names}
        return Box(time=self.time, **bounds)

    def grid(self, n: int | Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
        """A regular grid including the faces: the axes, and the points (prod n, dim) in
        ``ij`` order."""
        ns = [int(n)] * self.dim if isinstance(n, int) else [int(k) for k in n]
        axes = [np.linspace(a, b, k) for a, b, k in zip(self.lo, self.hi, ns, strict=True)]
        pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, self.dim)
        return axes, pts

    def tensor(self, pts: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(pts), dtype=dtype)
