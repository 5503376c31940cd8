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

__all__ = ["Condition", "Data", "Dirichlet", "Initial", "Neumann", "Periodic", "value_columns"]

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


@dataclass
class Dirichlet(Condition):
    """``u = value`` on the faces named by `on`."""

    value: Value = 0.0
    on: str | Sequence[str] | None = None

    def label(self) -> str:
        return f"Dirichlet(on={self.on})" if self.on else "Dirichlet"

    def sample(self, box: Box, n: int, method: str, seed: int) -> dict[str, np.ndarray]:
        X, _ = box.sample_faces(box.faces(self.on), n, method, seed)
        return {"X": X}

    def target(self, X: torch.Tensor, k: int) -> torch.Tensor:
        return value_columns(self.value, [X[:, i : i + 1] for i in range(X.shape[1])], k,
                             self.label())

    def residual(self, ev: Any, pts: dict[str, torch.Tensor], cols: list[int]) -> torch.Tensor:
        X = pts["X"]
        return ev.values(X)[:, cols] - self.target(X, len(cols))


@dataclass
class Neumann(Condition):
    """``du/dn = value`` (outward normal derivative) on the faces named by `on`."""

    value: Value = 0.0
    on: str | Sequence[str] | None = None

    def label(self) -> str:
        return f"Neumann(on={self.on})" if self.on else "Neumann"

    def sample(self, box: Box, n: int, method: str, seed: int) -> dict[str, np.ndarray]:
        faces = box.faces(self.on)
        X, which = box.sample_faces(faces, n, method, seed)
        axis = np.array([a for a, _ in faces])[which]
        sign = np.array([2.0 * s - 1.0 for _, s in faces])[which]
        return {"X": X, "axis": axis.astype(np.int64), "sign": sign}

    def residual(self, ev: Any, pts: dict[str, torch.Tensor], cols: list[int]) -> torch.Tensor:
        from fields.pinn.diff import grad

        X = pts["X"]
        coords, U = ev.with_coords(X)
        axis, sign = pts["axis"], pts["sign"][:, None]
        out = []
        for c in cols:
            u = U[:, c : c + 1]
            d = torch.cat([grad(u, x) for x in coords], 1)  # (N, dim)
            out.append(d.gather(1, axis[:, None]))
        dn = torch.cat(out, 1) * sign
        target = value_columns(self.value, [X[:, i : i + 1] for i in range(X.shape[1])],
                               len(cols), self.label())
        return dn - target


@dataclass
class Periodic(Condition):
    """``u(lo) = u(hi)`` and ``du/dx(lo) = du/dx(hi)`` across coordinate `on`. Exact (hard)
    by a periodic embedding of that coordinate unless ``hard=False``."""

    on: str = "x"
    derivatives: int = 1

    def label(self) -> str:
        return f"Periodic(on={self.on})"

    def sample(self, box: Box, n: int, method: str, seed: int) -> dict[str, np.ndarray]:
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
