"""Spatial domains beyond boxes: primitives, constructive geometry, and space-time.

```python
plate = pinn.Rectangle(x=(0, 2), y=(0, 1)) - pinn.Disk((0.5, 0.5), 0.2, name="hole") \
        - pinn.Disk((1.5, 0.5), 0.2, name="hole")
problem = pinn.Problem(domain=plate, ...)                       # space only
problem = pinn.Problem(domain=pinn.Domain(plate, t=(0, 1)), ...)  # space-time
```

Primitives: `Interval`, `Rectangle` / `Cuboid` (any axis-aligned box in space), `Disk`,
`Sphere` (a ball in any dimension), `Ellipse` (axis-aligned), `Polygon` (any simple polygon,
convex or not). Constructive geometry: ``a | b`` (union), ``a - b`` (difference), ``a & b``
(intersection), nested freely.

Each geometry gives

- `sdf(X)`: the signed distance, negative inside (exact for the primitives but the ellipse,
  whose value is the first-order estimate ``f / |grad f|``; for constructive geometry the
  usual min / max bound, exact in sign and on the boundary);
- `sample_interior`: Sobol' / LHS / uniform / grid points of the bounding box kept where the
  SDF is negative (rejection), in the sequence's order so that a prefix stays well spread;
- `sample_boundary`: points spread over the boundary by length / area, with outward unit
  normals and the boundary part of each point. A constructive geometry samples each
  primitive's boundary and keeps the points on its own boundary (a point steps 1e-7 of the
  size inwards and outwards along its normal: inside, then outside); a hole's normals turn
  round;
- boundary parts by name: a `Rectangle`'s faces ``"x-"``, ``"x+"``, ... (also
  ``"<name>.x-"``), every other primitive's whole boundary by its `name` (``"disk"`` unless
  given); a name shared by several primitives selects them all (``name="hole"`` on every
  hole); a predicate ``on=lambda x, y: x < 0`` (numpy arrays, one per coordinate) selects
  points;
- `adf(X)` (torch): an approximate distance function, positive inside, zero on the boundary,
  with unit normal derivative there and smooth elsewhere but at corners (Sukumar &
  Srivastava 2022): ``(R^2 - |x - c|^2) / 2R`` on a ball, trimmed segment distances joined by
  R-equivalence on a polygon, and R-functions for constructive geometry (``a + b -
  sqrt(a^2 + b^2)`` for an intersection, ``+`` for a union, a difference as ``a & -b``).
  `distance(X, parts)` is the same for some parts only, which exact Dirichlet conditions use
  (``u = g + phi N``); it is None where no such function follows from the construction (part
  of a union's boundary, part of a hole's, a predicate): such a condition stays in the loss.

`Domain(geometry, t=(0, 1))` is the geometry times a time interval, with the interface of
`fields.pinn.geometry.Box` that the rest of the library uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from fields.pinn.geometry import keep_where, parse_bounds, sample_unit

__all__ = ["Cuboid", "Difference", "Disk", "Domain", "Ellipse", "Geometry", "Intersection",
           "Interval", "Polygon", "Rectangle", "Sphere", "Union", "r_and", "r_or"]

On = str | Sequence[str] | Callable[..., Any] | None


def r_and(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """R-conjunction: positive where both are, zero where either is zero (and the other is
    positive), normalised (unit gradient on each zero set)."""
    return a + b - torch.sqrt(a * a + b * b)


def r_or(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """R-disjunction: positive where either is."""
    return a + b + torch.sqrt(a * a + b * b)


def _axis_names(names: Sequence[str] | None, d: int) -> tuple[str, ...]:
    default = ("x", "y", "z")[:d] if d <= 3 else tuple(f"x{i}" for i in range(d))
    out = tuple(names) if names is not None else default
    if len(out) != d or len(set(out)) != d:
        raise ValueError(f"names={names!r}: expected {d} distinct coordinate names")
    return out


class Part:
    """One piece of a primitive's boundary: its primitive's name and, for a box face, the
    face (``"x-"``)."""

    def __init__(self, shape: Primitive, face: str | None) -> None:
        self.shape = shape
        self.face = face

    @property
    def full(self) -> str:
        return self.shape.name if self.face is None else f"{self.shape.name}.{self.face}"

    def matches(self, key: str) -> bool:
        return key in (self.shape.name, self.face, self.full)


class Geometry:
    """A region of space with named coordinates; see the module doc."""

    names: tuple[str, ...]
    lo: np.ndarray
    hi: np.ndarray

    @property
    def dim(self) -> int:
        return len(self.names)

    # -- to override --
    def sdf(self, X: np.ndarray) -> np.ndarray:
        """The signed distance (N,) at points X (N, dim); negative inside."""
        raise NotImplementedError

    def adf(self, X: torch.Tensor) -> torch.Tensor:
        """An approximate distance (N, 1): positive inside, zero on the boundary."""
        raise NotImplementedError

    def primitives(self) -> list[Primitive]:
        raise NotImplementedError

    def _oriented(self) -> list[tuple[Primitive, float]]:
        """Each primitive with the sign of its normals in this region (-1: a hole)."""
        raise NotImplementedError

    def _distance(self, selected: set[int], role: float, X: torch.Tensor,
                  index: dict[int, int]) -> list[torch.Tensor] | None:
        """Factors (each >= 0 in the region, zero on the selected parts) of an exact
        Dirichlet distance; None if none can be built. `role` +1: the region lies inside
        this node, -1: outside it (a hole)."""
        raise NotImplementedError

    # -- derived --
    def parts(self) -> list[Part]:
        """Every boundary part, in a fixed order."""
        return [p for s in self.primitives() for p in s.own_parts()]

    def part_names(self) -> list[str]:
        return [p.full for p in self.parts()]

    def select(self, on: On) -> list[int] | None:
        """The indices of the parts named by `on` (None: every part); None for a predicate.
        ValueError naming the unknown part."""
        parts = self.parts()
        if on is None:
            return list(range(len(parts)))
        if callable(on):
            return None
        keys = [on] if isinstance(on, str) else list(on)
        out: list[int] = []
        for k in keys:
            hit = [i for i, p in enumerate(parts) if p.matches(k)]
            if not hit:
                names = sorted({n for p in parts for n in (p.shape.name, p.face, p.full) if n})
                raise ValueError(f"{self!r}: no boundary part named {k!r}; its parts: "
                                 f"{', '.join(names)}")
            out += [i for i in hit if i not in out]
        return sorted(out)

    def contains(self, X: np.ndarray, tol: float = 0.0) -> np.ndarray:
        """Whether each point (N, dim) is inside (or within `tol` of the boundary)."""
        return self.sdf(np.asarray(X, dtype=np.float64)) <= tol

    def size(self) -> float:
        """The bounding box's diagonal."""
        return float(np.linalg.norm(self.hi - self.lo))

    def measure(self) -> float:
        """Length / area / volume (a Monte Carlo estimate for constructive geometry)."""
        u = sample_unit(1 << 16, self.dim, "sobol", 7)
        X = self.lo + u * (self.hi - self.lo)
        return float(np.prod(self.hi - self.lo) * self.contains(X).mean())

    def sample_interior(self, n: int, method: str = "sobol", seed: int = 0) -> np.ndarray:
        """`n` points inside, shape (n, dim): bounding-box points kept where inside."""
        return _rejection(self.dim, self.lo, self.hi, lambda X: self.sdf(X) < 0, n, method,
                          seed, repr(self))

    def sample_boundary(self, n: int, method: str = "sobol", seed: int = 0,
                        on: On = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """About `n` points on the parts named by `on`, spread by length / area: the points
        (m, dim), their outward unit normals (m, dim) and each one's part index (m,)."""
        parts = self.parts()
        chosen = self.select(on)
        want = set(range(len(parts))) if chosen is None else set(chosen)
        oriented = self._oriented()
        # each primitive's share by its boundary measure, then the points off this boundary
        # (or off the chosen parts) dropped; a pilot run sizes the draw
        pts, _, _, drawn = self._candidates(max(256, n), method, seed + 1, oriented, want, on)
        keep = len(pts) / max(1, drawn)
        if keep <= 0:
            raise ValueError(f"{self!r}: no boundary points on {on!r}")
        m = math.ceil(n / keep * 1.02) + 1
        pts, nrm, which, _ = self._candidates(m, method, seed, oriented, want, on)
        if len(pts) > n:  # an even thinning, not a prefix (a prefix would drop whole faces)
            keep_idx = np.sort(np.random.default_rng(seed).choice(len(pts), n, replace=False))
            pts, nrm, which = pts[keep_idx], nrm[keep_idx], which[keep_idx]
        return pts, nrm, which

    def _candidates(self, m: int, method: str, seed: int,
                    oriented: list[tuple[Primitive, float]], want: set[int],
                    on: On) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Points, normals and parts of about `m` primitive boundary points kept on this
        region's boundary and the chosen parts, and how many were drawn."""
        measures = np.array([s.boundary_measure() for s, _ in oriented])
        counts = np.maximum(1, np.round(m * measures / measures.sum()).astype(int))
        pts, nrm, which = [], [], []
        index = self._part_offsets()
        eps = 1e-7 * self.size()
        for k, ((s, sign), c) in enumerate(zip(oriented, counts, strict=True)):
            P, N, w = s.boundary_points(int(c), method, seed + 7919 * (k + 1))
            N = N * sign
            w = w + index[id(s)]
            ok = np.isin(w, list(want))
            if len(oriented) > 1:  # on this region's boundary: inside just in, outside just out
                ok &= (self.sdf(P - eps * N) < 0) & (self.sdf(P + eps * N) > 0)
            pts.append(P[ok])
            nrm.append(N[ok])
            which.append(w[ok])
        # interleave the primitives' points so that any share of them covers every part
        rank = np.concatenate([np.arange(len(p)) / max(1, len(p)) for p in pts])
        order = np.argsort(rank, kind="stable")
        P, N, W = (np.concatenate(a)[order] for a in (pts, nrm, which))
        if callable(on):
            P, N, W = keep_where(on, P, N, W)
        return P, N, W, int(counts.sum())

    def _part_offsets(self) -> dict[int, int]:
        """The index of each primitive's first part among `parts()`, by the primitive's id."""
        index, offset = {}, 0
        for s in self.primitives():
            index[id(s)] = offset
            offset += len(s.own_parts())
        return index

    def distance(self, X: torch.Tensor, on: On = None) -> torch.Tensor | None:
        """A smooth function (N, 1) of the points X (N, dim): positive inside, zero on the
        parts named by `on`; None if none follows from the construction (see the module
        doc)."""
        chosen = self.select(on)
        if chosen is None or not chosen:
            return None
        factors = self._distance(set(chosen), 1.0, X, self._part_offsets())
        if not factors:
            return None
        out = factors[0]
        for f in factors[1:]:
            out = r_and(out, f)
        return out

    # -- constructive geometry --
    def __or__(self, other: Geometry) -> Geometry:
        return Union(self, other)

    def __sub__(self, other: Geometry) -> Geometry:
        return Difference(self, other)

    def __and__(self, other: Geometry) -> Geometry:
        return Intersection(self, other)


def _rejection(d: int, lo: np.ndarray, hi: np.ndarray, inside: Callable[[np.ndarray], Any],
               n: int, method: str, seed: int, what: str) -> np.ndarray:
    if n < 1:
        raise ValueError(f"{what}: need n >= 1 points, got {n}")
    pilot = lo + sample_unit(4096, d, "sobol", seed + 99) * (hi - lo)
    frac = float(np.mean(inside(pilot)))
    if frac <= 0:
        raise ValueError(f"{what}: the region is empty (no point of its bounding box is "
                         f"inside)")
    if method == "grid":  # a regular grid of the bounding box, kept inside: about n points
        k = max(1, round((n / frac) ** (1.0 / d)))
        axes = [(np.arange(k) + 0.5) / k] * d
        u = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d)
        X = lo + u * (hi - lo)
        return X[inside(X)]
    out: list[np.ndarray] = []
    got = 0
    for attempt in range(20):
        m = math.ceil((n - got) / frac * 1.1) + 16
        X = lo + sample_unit(m, d, method, seed + 104729 * attempt) * (hi - lo)
        X = X[inside(X)]
        out.append(X)
        got += len(X)
        if got >= n:
            break
    return np.concatenate(out)[:n]


class Primitive(Geometry):
    """A shape with its own boundary parametrisation."""

    name: str

    def primitives(self) -> list[Primitive]:
        return [self]

    def _oriented(self) -> list[tuple[Primitive, float]]:
        return [(self, 1.0)]

    def own_parts(self) -> list[Part]:
        return [Part(self, None)]

    def boundary_measure(self) -> float:
        raise NotImplementedError

    def boundary_points(self, n: int, method: str,
                        seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`n` boundary points spread by measure, their outward normals, their part index
        among `own_parts`."""
        raise NotImplementedError

    def part_distance(self, k: int, X: torch.Tensor) -> torch.Tensor:
        """A function zero on part k (and possibly on its extension), positive inside."""
        return self.adf(X)

    def _distance(self, selected: set[int], role: float, X: torch.Tensor,
                  index: dict[int, int]) -> list[torch.Tensor] | None:
        mine = [k for k in range(len(self.own_parts())) if index[id(self)] + k in selected]
        if not mine:
            return []
        if len(mine) == len(self.own_parts()):
            return [role * self.adf(X)]
        if role < 0:  # part of a hole's boundary: its functions vanish inside the region too
            return None
        return [self.part_distance(k, X) for k in mine]


class Rectangle(Primitive):
    """An axis-aligned box in space, any dimension: ``Rectangle(x=(0, 1), y=(0, 2))``; its
    faces are the parts ``"x-"``, ``"x+"``, ... ."""

    def __init__(self, name: str = "rectangle", **bounds: tuple[float, float]) -> None:
        if not bounds:
            raise ValueError(f"{type(self).__name__}: give the bounds of each coordinate, "
                             f"e.g. x=(0, 1), y=(0, 1)")
        self.names = tuple(bounds)
        self.lo, self.hi = parse_bounds(type(self).__name__, bounds)
        self.name = name

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}=({a:g}, {b:g})" for n, a, b in zip(self.names, self.lo,
                                                                    self.hi, strict=True))
        return f"{type(self).__name__}({inner})"

    def own_parts(self) -> list[Part]:
        return [Part(self, f"{n}{s}") for n in self.names for s in "-+"]

    def sdf(self, X: np.ndarray) -> np.ndarray:
        c, h = 0.5 * (self.lo + self.hi), 0.5 * (self.hi - self.lo)
        q = np.abs(X - c) - h
        return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)

    def measure(self) -> float:
        return float(np.prod(self.hi - self.lo))

    def _face_area(self, axis: int) -> float:
        others = [i for i in range(self.dim) if i != axis]
        return float(np.prod((self.hi - self.lo)[others])) if others else 1.0

    def boundary_measure(self) -> float:
        return 2 * sum(self._face_area(a) for a in range(self.dim))

    def boundary_points(self, n: int, method: str,
                        seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = self.dim
        areas = np.array([self._face_area(a) for a in range(d) for _ in (0, 1)])
        counts = np.maximum(1, np.round(n * areas / areas.sum()).astype(int))
        P, N, W = [], [], []
        for k, m in enumerate(counts):
            axis, side = divmod(k, 2)
            u = np.full((int(m), d), float(side))
            if d > 1:
                rest = sample_unit(int(m), d - 1, method, seed + 31 * k)
                u = u[: len(rest)]
                u[:, [i for i in range(d) if i != axis]] = rest[: len(u)]
            P.append(self.lo + u * (self.hi - self.lo))
            nrm = np.zeros((len(u), d))
            nrm[:, axis] = 2.0 * side - 1.0
            N.append(nrm)
            W.append(np.full(len(u), k))
        return np.concatenate(P), np.concatenate(N), np.concatenate(W)

    def part_distance(self, k: int, X: torch.Tensor) -> torch.Tensor:
        axis, side = divmod(k, 2)
        x = X[:, axis : axis + 1]
        return x - float(self.lo[axis]) if side == 0 else float(self.hi[axis]) - x

    def adf(self, X: torch.Tensor) -> torch.Tensor:
        out = None
        for axis in range(self.dim):
            lo, hi = float(self.lo[axis]), float(self.hi[axis])
            x = X[:, axis : axis + 1]
            f = (x - lo) * (hi - x) / (hi - lo)
            out = f if out is None else r_and(out, f)
        return out


class Interval(Rectangle):
    """``Interval(x=(0, 1))``: a 1-D domain; its ends are ``"x-"`` and ``"x+"``."""

    def __init__(self, name: str = "interval", **bounds: tuple[float, float]) -> None:
        if len(bounds) != 1:
            raise ValueError(f"Interval: give one coordinate, e.g. Interval(x=(0, 1)); got "
                             f"{sorted(bounds)}")
        super().__init__(name=name, **bounds)


class Cuboid(Rectangle):
    """``Cuboid(x=(0, 1), y=(0, 1), z=(0, 1))``: a 3-D box."""

    def __init__(self, name: str = "cuboid", **bounds: tuple[float, float]) -> None:
        if len(bounds) != 3:
            raise ValueError(f"Cuboid: give three coordinates; got {sorted(bounds)}")
        super().__init__(name=name, **bounds)


class Sphere(Primitive):
    """A ball of `radius` about `center`, in the dimension of `center` (`Disk` in 2-D)."""

    default_name = "sphere"

    def __init__(self, center: Sequence[float], radius: float, name: str | None = None,
                 names: Sequence[str] | None = None) -> None:
        self.center = np.asarray(center, dtype=np.float64).reshape(-1)
        self.radius = float(radius)
        if not (self.radius > 0 and math.isfinite(self.radius)):
            raise ValueError(f"{type(self).__name__}: radius must be positive, got {radius}")
        self.names = _axis_names(names, len(self.center))
        self.lo, self.hi = self.center - self.radius, self.center + self.radius
        self.name = name or self.default_name

    def __repr__(self) -> str:
        c = ", ".join(f"{v:g}" for v in self.center)
        return f"{type(self).__name__}(({c}), {self.radius:g})"

    def sdf(self, X: np.ndarray) -> np.ndarray:
        return np.linalg.norm(X - self.center, axis=1) - self.radius

    def adf(self, X: torch.Tensor) -> torch.Tensor:
        c = torch.as_tensor(self.center, dtype=X.dtype, device=X.device)
        r2 = ((X - c) ** 2).sum(1, keepdim=True)
        return (self.radius ** 2 - r2) / (2 * self.radius)

    def measure(self) -> float:
        d = self.dim
        return math.pi ** (d / 2) / math.gamma(d / 2 + 1) * self.radius ** d

    def boundary_measure(self) -> float:
        d = self.dim
        return 2 * math.pi ** (d / 2) / math.gamma(d / 2) * self.radius ** (d - 1)

    def boundary_points(self, n: int, method: str,
                        seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = self.dim
        if d == 1:
            N = np.array([[-1.0], [1.0]])
        elif d == 2:
            a = 2 * math.pi * sample_unit(n, 1, method, seed)[:, 0]
            N = np.stack([np.cos(a), np.sin(a)], 1)
        else:
            from scipy.stats import norm

            u = np.clip(sample_unit(n, d, method, seed), 1e-12, 1 - 1e-12)
            g = norm.ppf(u)
            N = g / np.linalg.norm(g, axis=1, keepdims=True)
        return self.center + self.radius * N, N, np.zeros(len(N), dtype=np.int64)


class Disk(Sphere):
    """``Disk((0, 0), 1)``: a disk in the plane."""

    default_name = "disk"

    def __init__(self, center: Sequence[float], radius: float, name: str | None = None,
                 names: Sequence[str] | None = None) -> None:
        super().__init__(center, radius, name, names)
        if self.dim != 2:
            raise ValueError(f"Disk: center must have 2 coordinates, got {center!r}")


class Ellipse(Primitive):
    """An axis-aligned ellipse (or ellipsoid): ``Ellipse((0, 0), (2, 1))``."""

    def __init__(self, center: Sequence[float], semi_axes: Sequence[float],
                 name: str = "ellipse", names: Sequence[str] | None = None) -> None:
        self.center = np.asarray(center, dtype=np.float64).reshape(-1)
        self.axes = np.asarray(semi_axes, dtype=np.float64).reshape(-1)
        if self.axes.shape != self.center.shape or not (self.axes > 0).all():
            raise ValueError(f"Ellipse: semi_axes {semi_axes!r} must be positive, one per "
                             f"coordinate of center {center!r}")
        self.names = _axis_names(names, len(self.center))
        self.lo, self.hi = self.center - self.axes, self.center + self.axes
        self.name = name
        self._table: tuple[np.ndarray, np.ndarray] | None = None

    def __repr__(self) -> str:
        return (f"Ellipse(({', '.join(f'{v:g}' for v in self.center)}), "
                f"({', '.join(f'{v:g}' for v in self.axes)}))")

    def sdf(self, X: np.ndarray) -> np.ndarray:
        q = (X - self.center) / self.axes
        f = (q * q).sum(1) - 1.0
        g = 2 * q / self.axes
        return f / np.maximum(np.linalg.norm(g, axis=1), 1e-300)

    def adf(self, X: torch.Tensor) -> torch.Tensor:
        c = torch.as_tensor(self.center, dtype=X.dtype, device=X.device)
        a = torch.as_tensor(self.axes, dtype=X.dtype, device=X.device)
        q = (X - c) / a
        # 1 - |q|^2 has gradient 2 / a on the axis ends: scaled so that it is at most 1
        return (1.0 - (q * q).sum(1, keepdim=True)) * float(self.axes.min()) / 2

    def measure(self) -> float:
        d = self.dim
        return math.pi ** (d / 2) / math.gamma(d / 2 + 1) * float(np.prod(self.axes))

    def _arc(self) -> tuple[np.ndarray, np.ndarray]:
        if self._table is None:
            th = np.linspace(0, 2 * math.pi, 4097)
            a, b = self.axes
            speed = np.sqrt((a * np.sin(th)) ** 2 + (b * np.cos(th)) ** 2)
            s = np.concatenate([[0], np.cumsum(0.5 * (speed[1:] + speed[:-1]) * np.diff(th))])
            self._table = (th, s)
        return self._table

    def boundary_measure(self) -> float:
        if self.dim != 2:
            raise ValueError("Ellipse: boundary sampling is implemented in 2-D only")
        return float(self._arc()[1][-1])

    def boundary_points(self, n: int, method: str,
                        seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.dim != 2:
            raise ValueError("Ellipse: boundary sampling is implemented in 2-D only")
        th, s = self._arc()
        u = sample_unit(n, 1, method, seed)[:, 0] * s[-1]
        t = np.interp(u, s, th)  # arc length -> angle: spread by length
        a, b = self.axes
        P = self.center + np.stack([a * np.cos(t), b * np.sin(t)], 1)
        g = np.stack([np.cos(t) / a, np.sin(t) / b], 1)
        return P, g / np.linalg.norm(g, axis=1, keepdims=True), np.zeros(len(P), dtype=np.int64)


class Polygon(Primitive):
    """A simple polygon (convex or not) in the plane: ``Polygon([(0, 0), (2, 0), (2, 1),
    (1, 1), (1, 2), (0, 2)])`` (an L-shape); vertices in either orientation."""

    def __init__(self, vertices: Sequence[Sequence[float]], name: str = "polygon",
                 names: Sequence[str] | None = None) -> None:
        V = np.asarray(vertices, dtype=np.float64)
        if V.ndim != 2 or V.shape[1] != 2 or len(V) < 3:
            raise ValueError(f"Polygon: vertices must be at least 3 points (x, y), got shape "
                             f"{V.shape}")
        if np.allclose(V[0], V[-1]):
            V = V[:-1]
        area = 0.5 * float(np.sum(V[:, 0] * np.roll(V[:, 1], -1)
                                  - np.roll(V[:, 0], -1) * V[:, 1]))
        if abs(area) < 1e-14:
            raise ValueError("Polygon: the vertices enclose no area")
        if area < 0:
            V = V[::-1].copy()  # counter-clockwise: outward normal (dy, -dx)
        self.V = V
        self.names = _axis_names(names, 2)
        self.lo, self.hi = V.min(0), V.max(0)
        self.name = name
        self.A, self.B = V, np.roll(V, -1, axis=0)
        self.lengths = np.linalg.norm(self.B - self.A, axis=1)
        if (self.lengths < 1e-14).any():
            raise ValueError("Polygon: two consecutive vertices coincide")

    def __repr__(self) -> str:
        return f"Polygon({len(self.V)} vertices)"

    def measure(self) -> float:
        V = self.V
        return 0.5 * abs(float(np.sum(V[:, 0] * np.roll(V[:, 1], -1)
                                      - np.roll(V[:, 0], -1) * V[:, 1])))

    def _inside(self, x: Any, y: Any, xp: Any) -> Any:
        """Even-odd rule, vectorised over the edges."""
        ax, ay, bx, by = (self.A[:, 0], self.A[:, 1], self.B[:, 0], self.B[:, 1])
        if xp is torch:
            ax, ay, bx, by = (torch.as_tensor(v, dtype=x.dtype, device=x.device)
                              for v in (ax, ay, bx, by))
        crosses = (ay > y) != (by > y)
        xi = ax + (y - ay) * (bx - ax) / xp.where(by == ay, xp.ones_like(by * y), by - ay)
        hits = crosses & (x < xi)
        return (hits.sum(1) % 2) == 1

    def sdf(self, X: np.ndarray) -> np.ndarray:
        P = X[:, None, :]
        d = self.B - self.A
        t = np.clip(((P - self.A) * d).sum(2) / (d * d).sum(1), 0, 1)
        dist = np.linalg.norm(P - (self.A + t[..., None] * d), axis=2).min(1)
        inside = self._inside(X[:, :1], X[:, 1:2], np)
        return np.where(inside, -dist, dist)

    def adf(self, X: torch.Tensor) -> torch.Tensor:
        # Sukumar & Srivastava 2022: each edge's trimmed distance, joined by R-equivalence
        # (m = 1: 1/phi = sum 1/phi_i), signed by the even-odd rule
        x, y = X[:, :1], X[:, 1:2]
        A = torch.as_tensor(self.A, dtype=X.dtype, device=X.device)
        B = torch.as_tensor(self.B, dtype=X.dtype, device=X.device)
        L = torch.as_tensor(self.lengths, dtype=X.dtype, device=X.device)
        f = ((x - A[:, 0]) * (B[:, 1] - A[:, 1]) - (y - A[:, 1]) * (B[:, 0] - A[:, 0])) / L
        cx, cy = 0.5 * (A[:, 0] + B[:, 0]), 0.5 * (A[:, 1] + B[:, 1])
        t = ((L / 2) ** 2 - (x - cx) ** 2 - (y - cy) ** 2) / L
        varphi = torch.sqrt(t * t + f ** 4)
        phi = torch.sqrt(f * f + ((varphi - t) / 2) ** 2)
        # 1 / sum(1 / phi_i); on an edge phi_i = 0: clamped, 1 / inf = 0
        tiny = torch.finfo(X.dtype).tiny
        dist = 1.0 / (1.0 / phi.clamp_min(tiny)).sum(1, keepdim=True)
        sign = torch.where(self._inside(x, y, torch), 1.0, -1.0).to(X.dtype)[:, None]
        return sign * dist

    def boundary_measure(self) -> float:
        return float(self.lengths.sum())

    def boundary_points(self, n: int, method: str,
                        seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = np.concatenate([[0], np.cumsum(self.lengths)])
        u = sample_unit(n, 1, method, seed)[:, 0] * s[-1]
        k = np.clip(np.searchsorted(s, u, side="right") - 1, 0, len(self.A) - 1)
        frac = ((u - s[k]) / self.lengths[k])[:, None]
        d = self.B - self.A
        P = self.A[k] + frac * d[k]
        N = np.stack([d[k, 1], -d[k, 0]], 1) / self.lengths[k][:, None]
        return P, N, np.zeros(len(P), dtype=np.int64)


class _Node(Geometry):
    """Constructive geometry of two regions."""

    op = "?"

    def __init__(self, a: Geometry, b: Geometry) -> None:
        for g in (a, b):
            if not isinstance(g, Geometry):
                raise TypeError(f"constructive geometry needs pinn geometries, got "
                                f"{type(g).__name__}")
        if a.names != b.names:
            raise ValueError(f"{a!r} {self.op} {b!r}: the coordinate names differ "
                             f"({a.names} vs {b.names})")
        self.a, self.b = a, b
        self.names = a.names
        self.lo, self.hi = self._bounds()

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.minimum(self.a.lo, self.b.lo), np.maximum(self.a.hi, self.b.hi)

    def __repr__(self) -> str:
        return f"({self.a!r} {self.op} {self.b!r})"

    def primitives(self) -> list[Primitive]:
        return self.a.primitives() + self.b.primitives()

    def _oriented(self) -> list[tuple[Primitive, float]]:
        return self.a._oriented() + self.b._oriented()

    b_role = 1.0  # the side the region lies on of b: inside (+1), outside (-1, a hole)

    def _distance(self, selected: set[int], role: float, X: torch.Tensor,
                  index: dict[int, int]) -> list[torch.Tensor] | None:
        every = self._all(selected, index)
        if every is False:
            return []
        if role < 0:  # the region lies outside this node: only its whole boundary
            return None if every is None else [role * self.adf(X)]
        fa = self.a._distance(selected, 1.0, X, index)
        fb = self.b._distance(selected, self.b_role, X, index)
        return None if fa is None or fb is None else fa + fb

    def _all(self, selected: set[int], index: dict[int, int]) -> bool | None:
        """True: every part below this node is selected; False: none; None: some."""
        mine = [index[id(s)] + k for s in self.primitives() for k in range(len(s.own_parts()))]
        hit = sum(i in selected for i in mine)
        return True if hit == len(mine) else (False if hit == 0 else None)


class Union(_Node):
    """``a | b``: the points in either."""

    op = "|"

    def sdf(self, X: np.ndarray) -> np.ndarray:
        return np.minimum(self.a.sdf(X), self.b.sdf(X))

    def adf(self, X: torch.Tensor) -> torch.Tensor:
        return r_or(self.a.adf(X), self.b.adf(X))

    def _distance(self, selected: set[int], role: float, X: torch.Tensor,
                  index: dict[int, int]) -> list[torch.Tensor] | None:
        every = self._all(selected, index)
        if every is False:
            return []
        if every is None:  # a part's function would vanish inside the other region
            return None
        return [role * self.adf(X)]


class Intersection(_Node):
    """``a & b``: the points in both."""

    op = "&"

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.maximum(self.a.lo, self.b.lo), np.minimum(self.a.hi, self.b.hi)
        if (hi <= lo).any():
            raise ValueError(f"{self.a!r} & {self.b!r}: the bounding boxes do not overlap")
        return lo, hi

    def sdf(self, X: np.ndarray) -> np.ndarray:
        return np.maximum(self.a.sdf(X), self.b.sdf(X))

    def adf(self, X: torch.Tensor) -> torch.Tensor:
        return r_and(self.a.adf(X), self.b.adf(X))


class Difference(_Node):
    """``a - b``: the points of a not in b (b's boundary becomes a hole's, its normals
    turned round)."""

    op = "-"
    b_role = -1.0

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.a.lo.copy(), self.a.hi.copy()

    def _oriented(self) -> list[tuple[Primitive, float]]:
        return self.a._oriented() + [(s, -sign) for s, sign in self.b._oriented()]

    def sdf(self, X: np.ndarray) -> np.ndarray:
        return np.maximum(self.a.sdf(X), -self.b.sdf(X))

    def adf(self, X: torch.Tensor) -> torch.Tensor:
        return r_and(self.a.adf(X), -self.b.adf(X))


class Domain:
    """A geometry, optionally times a time interval: ``Domain(Disk((0, 0), 1), t=(0, 1))``.
    It has the interface of `fields.pinn.geometry.Box` (names, bounds, sampling, grids) and
    boundary sampling with normals; `lo` / `hi` are the bounding box's."""

    def __init__(self, geometry: Geometry, **time: tuple[float, float]) -> None:
        if not isinstance(geometry, Geometry):
            raise TypeError(f"Domain: geometry must be a pinn geometry (Disk, Rectangle, ...), "
                            f"got {type(geometry).__name__}")
        if len(time) > 1:
            raise ValueError(f"Domain: at most one time interval, e.g. t=(0, 1); got "
                             f"{sorted(time)}")
        self.geometry = geometry
        self.time: str | None = None
        for name in time:
            if name in geometry.names:
                raise ValueError(f"Domain: time {name!r} is also a coordinate of the geometry")
            self.time = name
        t_lo, t_hi = parse_bounds("Domain", time)
        self.names: tuple[str, ...] = (*geometry.names, *time)
        self.lo = np.concatenate([geometry.lo, t_lo]).astype(np.float64)
        self.hi = np.concatenate([geometry.hi, t_hi]).astype(np.float64)

    def __repr__(self) -> str:
        if self.time is None:
            return repr(self.geometry)
        t0, t1 = self.bounds(self.time)
        return f"{self.geometry!r} x {self.time}=({t0:g}, {t1:g})"

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def spatial(self) -> tuple[str, ...]:
        return self.geometry.names

    def index(self, name: str) -> int:
        if name not in self.names:
            raise ValueError(f"{self!r} has no coordinate {name!r}; it has "
                             f"{', '.join(self.names)}")
        return self.names.index(name)

    def bounds(self, name: str) -> tuple[float, float]:
        i = self.index(name)
        return float(self.lo[i]), float(self.hi[i])

    def volume(self) -> float:
        v = self.geometry.measure()
        if self.time is not None:
            t0, t1 = self.bounds(self.time)
            v *= t1 - t0
        return v

    def with_time(self, t0: float, t1: float) -> Domain:
        """The same geometry over another time interval."""
        return Domain(self.geometry, **{self.time: (t0, t1)})

    def contains(self, X: np.ndarray, tol: float = 0.0) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        ok = self.geometry.contains(X[:, : self.geometry.dim], tol)
        if self.time is not None:
            t0, t1 = self.bounds(self.time)
            t = X[:, -1]
            ok &= (t >= t0 - tol) & (t <= t1 + tol)
        return ok

    def tensor(self, pts: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(pts), dtype=dtype)

    def sample(self, n: int, method: str = "sobol", seed: int = 0) -> np.ndarray:
        """`n` interior points (n, dim): the space-time bounding box kept inside."""
        g = self.geometry
        return _rejection(self.dim, self.lo, self.hi,
                          lambda X: g.sdf(X[:, : g.dim]) < 0, n, method, seed, repr(self))

    def sample_slice(self, name: str, value: float, n: int, method: str = "sobol",
                     seed: int = 0) -> np.ndarray:
        """`n` points of the geometry at time ``name = value``."""
        if name != self.time:
            raise ValueError(f"{self!r}: slices are taken at a time, not along {name!r}")
        X = self.geometry.sample_interior(n, method, seed)
        return np.concatenate([X, np.full((len(X), 1), float(value))], 1)

    def sample_boundary(self, on: On, n: int, method: str = "sobol",
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """About `n` points on the spatial boundary parts named by `on` (times the time
        interval): points (m, dim), outward unit normals (m, dim; 0 along time), part index
        (m,)."""
        g = self.geometry
        pred = on
        if callable(on) and self.time is not None:
            pred = None  # applied below, with time
        P, N, W = g.sample_boundary(n, method, seed, pred)
        if self.time is not None:
            t0, t1 = self.bounds(self.time)
            t = t0 + (t1 - t0) * sample_unit(len(P), 1, method, seed + 3)[:, 0]
            rng = np.random.default_rng(seed)
            t = t[rng.permutation(len(t))]  # not aligned with the boundary's own sequence
            P = np.concatenate([P, t[:, None]], 1)
            N = np.concatenate([N, np.zeros((len(N), 1))], 1)
            if callable(on):
                P, N, W = keep_where(on, P, N, W)
        if len(P) == 0:
            raise ValueError(f"{self!r}: no boundary points on {on!r}")
        return P, N, W

    def distance(self, X: torch.Tensor, on: On) -> torch.Tensor | None:
        """The exact-Dirichlet distance of the parts `on` at X (N, dim), or None."""
        return self.geometry.distance(X[:, : self.geometry.dim], on)

    def part_keys(self, on: On) -> list[str] | None:
        """The full names of the parts `on` selects (None for a predicate)."""
        idx = self.geometry.select(on)
        if idx is None:
            return None
        names = self.geometry.part_names()
        return [names[i] for i in idx]

    def grid(self, n: int | Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
        """A regular grid of the bounding box (faces included): axes and points (ij)."""
        ns = [int(n)] * self.dim if isinstance(n, int) else [int(k) for k in n]
        axes = [np.linspace(a, b, k) for a, b, k in zip(self.lo, self.hi, ns, strict=True)]
        pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, self.dim)
        return axes, pts
