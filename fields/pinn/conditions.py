"""Initial, boundary and data conditions of a PDE problem.

Each condition samples its own points and gives a residual (zero where it holds) that `solve`
squares and averages into the loss, unless the condition is imposed exactly by the network's
output transform (``hard``, see `fields.pinn.hard`).

Values are numbers or callables of coordinate tensors (each (N, 1)): `Initial` values take the
spatial coordinates (``lambda x: -torch.sin(torch.pi * x)``), `Dirichlet` / `Neumann` values
take every coordinate in the domain's order (``lambda x, t: ...``). A callable returns (N,),
(N, 1), (N, k) or a tuple of k columns for k outputs.

``output`` picks the outputs a condition constrains: None (all), a name, or a list of names.
``on`` names faces: ``"x"`` (both), ``"x-"`` / ``"x+"`` (one), a list, or None (every face of
every spatial coordinate).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fields.pinn.geometry import Box

__all__ = ["Condition", "Data", "Dirichlet", "Initial", "Neumann", "OperatorBC", "Periodic",
           "PointSet", "Robin", "value_columns"]

Value = float | Callable[..., Any]


def value_columns(value: Value, args: Sequence[torch.Tensor], k: int, what: str) -> torch.Tensor:
    """A condition's value at N points as an (N, k) tensor."""
    n = args[0].shape[0]
    ref = args[0]
    if callable(value):
        v = value(*args)
    else:
        v = value
    if isinstance(v, (tuple, list)):
        cols = [torch.as_tensor(c, dtype=ref.dtype, device=ref.device).reshape(-1, 1)
                for c in v]
        cols = [c.expand(n, 1) if c.shape[0] == 1 else c for c in cols]
        v = torch.cat(cols, 1)
    v = torch.as_tensor(v, dtype=ref.dtype, device=ref.device)
    if v.dim() == 0:
        v = v.expand(n, k)
    elif v.dim() == 1:
        v = v.reshape(-1, 1)
    if v.shape[0] == 1 and n != 1:
        v = v.expand(n, v.shape[1])
    if v.shape[1] == 1 and k > 1:
        v = v.expand(n, k)
    if tuple(v.shape) != (n, k):
        raise ValueError(f"{what}: the value has shape {tuple(v.shape)}; expected ({n}, {k}) "
                         f"(one column per constrained output)")
    return v


@dataclass
class Condition:
    """Base class: `output` (None: all), `weight` (a fixed loss weight), `n` (points; None:
    the strategy's default), `hard` (None: exact by the output transform where possible)."""

    output: str | Sequence[str] | None = field(default=None, kw_only=True)
    weight: float = field(default=1.0, kw_only=True)
    n: int | None = field(default=None, kw_only=True)
    hard: bool | None = field(default=None, kw_only=True)

    def columns(self, outputs: Sequence[str]) -> list[int]:
        if self.output is None:
            return list(range(len(outputs)))
        names = [self.output] if isinstance(self.output, str) else list(self.output)
        for n in names:
            if n not in outputs:
                raise ValueError(f"{self.label()}: unknown output {n!r}; the problem's outputs "
                                 f"are {', '.join(outputs)}")
        return [list(outputs).index(n) for n in names]

    def label(self) -> str:
        return type(self).__name__

    def sample(self, box: Box, n: int, method: str, seed: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def residual(self, ev: Any, pts: dict[str, torch.Tensor],
                 cols: list[int]) -> torch.Tensor:  # ev: fields.pinn.solve.Evaluator
        raise NotImplementedError


@dataclass
class Initial(Condition):
    """``d^derivative u / dt^derivative = value(x...)`` at the domain's initial time."""

    value: Value = 0.0
    derivative: int = 0

    def label(self) -> str:
        return "Initial" if self.derivative == 0 else f"Initial(d{self.derivative}/dt)"

    def sample(self, box: Box, n: int, method: str, seed: int) -> dict[str, np.ndarray]:
        if box.time is None:
            raise ValueError(f"{self.label()}: the domain {box} has no time coordinate "
                             f"(name it 't', or pass time= to Box)")
        return {"X": box.sample_slice(box.time, box.bounds(box.time)[0], n, method, seed)}

    def target(self, box: Box, X: torch.Tensor, k: int) -> torch.Tensor:
        args = [X[:, i : i + 1] for i, nm in enumerate(box.names) if nm != box.time]
        return value_columns(self.value, args, k, self.label())

    def residual(self, ev: Any, pts: dict[str, torch.Tensor], cols: list[int]) -> torch.Tensor:
        X = pts["X"]
        box = ev.box
        if self.derivative == 0:
            U = ev.values(X)[:, cols]
        else:
            from fields.pinn.diff import grad

            coords, U = ev.with_coords(X)
            t = coords[box.index(box.time)]
            U = torch.cat([grad(U[:, c : c + 1], t, self.derivative) for c in cols], 1)
        return U - self.target(box, X, len(cols))


def _boundary(box: Any, on: Any, n: int, method: str, seed: int) -> dict[str, np.ndarray]:
    X, normals, _ = box.sample_boundary(on, n, method, seed)
    return {"X": X, "normal": normals}


def _coords_of(X: torch.Tensor) -> list[torch.Tensor]:
    return [X[:, i : i + 1] for i in range(X.shape[1])]


def _normal_derivatives(ev: Any, pts: dict[str, torch.Tensor],
                        cols: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs `cols` (N, k) at the points and their outward normal derivatives (N, k)."""
    from fields.pinn.diff import grad

    coords, U = ev.with_coords(pts["X"])
    nrm = pts["normal"]
    dn = []
    for c in cols:
        u = U[:, c : c + 1]
        d = torch.cat([grad(u, x) for x in coords], 1)  # (N, dim)
        dn.append((d * nrm).sum(1, keepdim=True))
    return U[:, cols], torch.cat(dn, 1)


@dataclass
class Dirichlet(Condition):
    """``u = value`` on the boundary parts named by `on` (faces of a box, parts of a
    geometry, a predicate ``lambda x, y: ...`` of numpy coordinates; None: everywhere)."""

    value: Value = 0.0
    on: Any = None

    def label(self) -> str:
        return _on_label("Dirichlet", self.on)

    def sample(self, box: Box, n: int, method: str, seed: int) -> dict[str, np.ndarray]:
        return {"X": _boundary(box, self.on, n, method, seed)["X"]}

    def target(self, X: torch.Tensor, k: int) -> torch.Tensor:
        return value_columns(self.value, _coords_of(X), k, self.label())

    def residual(self, ev: Any, pts: dict[str, torch.Tensor], cols: list[int]) -> torch.Tensor:
        X = pts["X"]
        return ev.values(X)[:, cols] - self.target(X, len(cols))


@dataclass
class Neumann(Condition):
    """``du/dn = value`` (outward normal derivative) on the parts named by `on`."""

    value: Value = 0.0
    on: Any = None

    def label(self) -> str:
        return _on_label("Neumann", self.on)

    def sample(self, box: Box, n: int, method: str, seed: int) -> dict[str, np.ndarray]:
        return _boundary(box, self.on, n, method, seed)

    def residual(self, ev: Any, pts: dict[str, torch.Tensor], cols: list[int]) -> torch.Tensor:
        _, dn = _normal_derivatives(ev, pts, cols)
        return dn - value_columns(self.value, _coords_of(pts["X"]), len(cols), self.label())


@dataclass
class Robin(Condition):
    """``a u + b du/dn = value`` on the parts named by `on`; `a`, `b` and `value` are numbers
    or callables of the coordinates (e.g. a convective heat loss ``du/dn + h u = h u_inf``:
    ``Robin(a=h, b=1, value=h * u_inf)``)."""

    a: Value = 1.0
    b: Value = 1.0
    value: Value = 0.0
    on: Any = None

    def label(self) -> str:
        return _on_label("Robin", self.on)

    def sample(self, box: Box, n: int, method: str, seed: int) -> dict[str, np.ndarray]:
        return _boundary(box, self.on, n, method, seed)

    def residual(self, ev: Any, pts: dict[str, torch.Tensor], cols: list[int]) -> torch.Tensor:
        U, dn = _normal_derivatives(ev, pts, cols)
        args = _coords_of(pts["X"])
        k = len(cols)
        a = value_columns(self.a, args, k, f"{self.label()}: a")
        b = value_columns(self.b, args, k, f"{self.label()}: b")
        return a * U + b * dn - value_columns(self.value, args, k, self.label())


@dataclass
class OperatorBC(Condition):
    """Any boundary relation written with `pinn.grad`: ``operator(*outputs, *coords, normal)``
    returns the residual(s) (zero where it holds) on the parts named by `on`; `normal` is a
    tuple of the outward normal's components, one (N, 1) column per spatial coordinate. E.g.
    a normal flux ``k du/dn = q``: ``OperatorBC(lambda u, x, y, n: k * (pinn.grad(u, x) * n[0]
    + pinn.grad(u, y) * n[1]) - q, on="hole")``. `output` is ignored: the operator sees every
    output."""

    operator: Callable[..., Any] | None = None
    on: Any = None
    name: str = "OperatorBC"

    def label(self) -> str:
        return _on_label(self.name, self.on)

    def columns(self, outputs: Sequence[str]) -> list[int]:
        return list(range(len(outputs)))

    def sample(self, box: Box, n: int, method: str, seed: int) -> dict[str, np.ndarray]:
        if not callable(self.operator):
            raise ValueError(f"{self.label()}: give operator= (a function of the outputs, the "
                             f"coordinates and the normal)")
        pts = _boundary(box, self.on, n, method, seed)
        spatial = [box.index(nm) for nm in box.spatial]
        pts["normal"] = pts["normal"][:, spatial]
        return pts

    def residual(self, ev: Any, pts: dict[str, torch.Tensor], cols: list[int]) -> torch.Tensor:
        from fields.pinn.diff import CoordinateScope

        coords, U = ev.with_coords(pts["X"])
        outs = [U[:, j : j + 1] for j in range(U.shape[1])]
        nrm = tuple(pts["normal"][:, i : i + 1] for i in range(pts["normal"].shape[1]))
        with CoordinateScope(coords):
            r = self.operator(*outs, *coords, nrm)
        rs = list(r) if isinstance(r, (tuple, list)) else [r]
        n = pts["X"].shape[0]
        out = []
        for k, e in enumerate(rs):
            if not isinstance(e, torch.Tensor) or e.numel() != n:
                got = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
                raise ValueError(f"{self.label()}: residual {k} gave {got}; expected a tensor "
                                 f"of {n} values (N, 1)")
            out.append(e.reshape(-1, 1))
        return torch.cat(out, 1)


def _on_label(name: str, on: Any) -> str:
    """A condition's label: its name, and where it holds when not everywhere."""
    if on is None:
        return name
    return f"{name}(on={'predicate' if callable(on) else on})"


@dataclass
class Periodic(Condition):
    """``u(lo) = u(hi)`` and ``du/dx(lo) = du/dx(hi)`` across coordinate `on`. Exact (hard)
    by a periodic embedding of that coordinate unless ``hard=False``."""

    on: str = "x"
    derivatives: int = 1

    def label(self) -> str:
        return f"Periodic(on={self.on})"

    def sample(self, box: Box, n: int, method: str, seed: int) -> dict[str, np.ndarray]:
        if not isinstance(box, Box):
            raise ValueError(f"{self.label()}: periodic conditions need a pinn.Box domain "
                             f"(the faces of {self.on!r} are matched point by point); "
                             f"{box!r} is not one")
        lo_x, hi_x = box.bounds(self.on)
        a = box.sample_slice(self.on, lo_x, n, method, seed)
        b = a.copy()
        b[:, box.index(self.on)] = hi_x
        return {"X": np.concatenate([a, b])}

    def residual(self, ev: Any, pts: dict[str, torch.Tensor], cols: list[int]) -> torch.Tensor:
        from fields.pinn.diff import grad

        X = pts["X"]
        m = X.shape[0] // 2
        coords, U = ev.with_coords(X)
        x = coords[ev.box.index(self.on)]
        parts = []
        for c in cols:
            u = U[:, c : c + 1]
            for _ in range(self.derivatives + 1):
                parts.append(u[:m] - u[m:])
                u = grad(u, x)
        return torch.cat(parts, 1)


@dataclass
class Data(Condition):
    """Observations: ``u(points) = values``. `points` maps every coordinate name to an array
    (N,); `values` is (N,) or (N, k)."""

    points: dict[str, Any] = field(default_factory=dict)
    values: Any = None

    def sample(self, box: Box, n: int, method: str, seed: int) -> dict[str, np.ndarray]:
        missing = [nm for nm in box.names if nm not in self.points]
        if missing:
            raise ValueError(f"Data: points lack coordinate(s) {', '.join(missing)}")
        cols = [np.asarray(self.points[nm], dtype=np.float64).reshape(-1) for nm in box.names]
        if len({len(c) for c in cols}) != 1:
            raise ValueError("Data: every coordinate array needs the same length")
        if self.values is None:
            raise ValueError("Data: give values= (the observations at the points)")
        vals = np.asarray(self.values, dtype=np.float64)
        if vals.size == 0 or vals.size % len(cols[0]) != 0 or vals.shape[0] != len(cols[0]):
            raise ValueError(f"Data: values have shape {vals.shape} for {len(cols[0])} points; "
                             f"expected ({len(cols[0])},) or ({len(cols[0])}, k)")
        vals = vals.reshape(len(cols[0]), -1)
        return {"X": np.stack(cols, 1), "values": vals}

    def residual(self, ev: Any, pts: dict[str, torch.Tensor], cols: list[int]) -> torch.Tensor:
        U = ev.values(pts["X"])[:, cols]
        v = pts["values"]
        if v.shape[1] != len(cols):
            raise ValueError(f"Data: values have {v.shape[1]} column(s) for {len(cols)} "
                             f"output(s)")
        return U - v


class PointSet(Data):
    """Values at given points, inside or on the boundary: ``PointSet(points, values)`` with
    `points` an array (N, dim) in the domain's coordinate order (or a dict of coordinate
    arrays, as `Data`) and `values` an array (N,) / (N, k) or a callable of the coordinates
    (each (N, 1) tensors) giving them."""

    def __init__(self, points: Any, values: Any = None, *, output: Any = None,
                 weight: float = 1.0, n: int | None = None, hard: bool | None = None) -> None:
        super().__init__(points=points, values=values, output=output, weight=weight, n=n,
                         hard=hard)

    def label(self) -> str:
        return "PointSet"

    def sample(self, box: Box, n: int, method: str, seed: int) -> dict[str, np.ndarray]:
        return Data.sample(self.resolved(box), box, n, method, seed)

    def resolved(self, box: Box) -> PointSet:
        """The same points as a dict of coordinate arrays, the values as an array."""
        pts = self.points
        if not isinstance(pts, dict):
            P = np.asarray(pts, dtype=np.float64)
            if P.ndim == 1 and box.dim == 1:
                P = P[:, None]
            if P.ndim != 2 or P.shape[1] != box.dim:
                raise ValueError(f"PointSet: points have shape {P.shape}; expected (N, "
                                 f"{box.dim}) in the order {', '.join(box.names)}")
            pts = {nm: P[:, i] for i, nm in enumerate(box.names)}
        values = self.values
        if callable(values):
            cols = [torch.as_tensor(np.asarray(pts[nm], dtype=np.float64).reshape(-1, 1))
                    for nm in box.names]
            v = values(*cols)
            if isinstance(v, (tuple, list)):
                v = torch.cat([torch.as_tensor(c).reshape(-1, 1) for c in v], 1)
            values = torch.as_tensor(v).double().numpy()
        return PointSet(pts, values, output=self.output, weight=self.weight, n=self.n,
                        hard=self.hard)
