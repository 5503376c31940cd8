"""Hard constraints: an output transform that satisfies conditions exactly.

For each output, ``u = A(X) + D(X) * N(X)`` where `N` is the network, `D` vanishes on the
constrained boundary (on a box, products of normalised distances ``(x - lo)(hi - x) /
(L/2)^2``; on any other geometry its approximate distance function, Sukumar & Srivastava 2022,
`fields.pinn.shapes`) and at the initial time (``(t - t0) / T``), and the lift `A` takes the
prescribed values there:

- Dirichlet only: ``A = h(X)`` (its value, evaluated anywhere in the domain);
- several Dirichlet conditions on disjoint parts (a lid moving, the other walls still):
  ``D = 1 / sum_i 1/phi_i`` and ``A = sum_i w_i h_i`` with ``w_i = (1/phi_i) / sum_k 1/phi_k``
  (transfinite interpolation, Sukumar & Srivastava 2022): ``w_i`` is 1 on part i and 0 on
  the others (where parts meet, at a corner, every weight is 0); one constant on several
  parts is merged into one condition first;
- initial only: ``A = g(x)``;
- both: ``A = h(x, t) + g(x) - h(x, t0)`` (exact when g and h agree at the corners).

A periodic condition is exact through the periodic embedding (`fields.pinn.networks`). A
condition that cannot be made exact this way (Neumann, Robin, a derivative initial condition,
two Dirichlet conditions on the same part of one output, a predicate or part of a union's or
a hole's boundary) stays in the loss; one marked ``hard=True`` then is an error, unless the
problem gives its own `transform`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from fields.pinn.conditions import Condition, Dirichlet, Initial, Periodic
from fields.pinn.geometry import Box

__all__ = ["OutputTransform"]


class OutputTransform(nn.Module):
    """Raw network outputs (N, m) at coordinates X (N, dim) to outputs satisfying the hard
    conditions; `satisfied` lists the conditions it makes exact (by index)."""

    def __init__(self, box: Box, outputs: Sequence[str], conditions: Sequence[Condition],
                 enabled: bool = True,
                 explicit: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
                 | None = None) -> None:
        super().__init__()
        self.box = box
        self.outputs = tuple(outputs)
        self.explicit = explicit
        self.satisfied: list[int] = []
        self.periodic: dict[str, int] = {}
        self.plan: list[tuple[list[tuple[int, Dirichlet]], tuple[int, Initial] | None]] = []
        self.merged: dict[int, list[int]] = {}  # output -> Dirichlet conditions merged into one
        if explicit is not None:
            self.satisfied = [i for i, c in enumerate(conditions) if c.hard]
            return
        for i, c in enumerate(conditions):
            if isinstance(c, Periodic) and enabled and c.hard is not False:
                self.periodic[c.on] = 1
                self.satisfied.append(i)
        used: set[int] = set()
        for j in range(len(self.outputs)):
            dir_c = [(i, c) for i, c in enumerate(conditions) if isinstance(c, Dirichlet)
                     and enabled and c.hard is not False and j in c.columns(self.outputs)
                     and _exactable(box, c.on)]
            ini_c = [(i, c) for i, c in enumerate(conditions) if isinstance(c, Initial)
                     and c.derivative == 0 and enabled and c.hard is not False
                     and j in c.columns(self.outputs)]
            if len(dir_c) > 1 and all(isinstance(c.value, (int, float)) for _, c in dir_c) \
                    and len({float(c.value) for _, c in dir_c}) == 1 and len(
                    {len(c.columns(self.outputs)) for _, c in dir_c}) == 1:
                # one constant on several parts: one condition over all of them
                names = sorted({k for _, c in dir_c for k in box.part_keys(c.on)})
                merged = Dirichlet(dir_c[0][1].value, on=names, output=dir_c[0][1].output)
                if _exactable(box, merged.on):
                    self.merged[j] = [i for i, _ in dir_c]
                    dir_c = [(dir_c[0][0], merged)]
            if len(dir_c) > 1:
                # several values on disjoint parts: blended (transfinite interpolation);
                # parts shared by two conditions: none is exact
                keys = [set(box.part_keys(c.on)) for _, c in dir_c]
                if sum(len(k) for k in keys) != len(set().union(*keys)):
                    dir_c = []
            g = ini_c[0] if len(ini_c) == 1 and box.time is not None else None
            self.plan.append((dir_c, g))
            used |= {i for i, _ in dir_c} | ({g[0]} if g else set())
            if dir_c and j in self.merged:
                used |= set(self.merged[j])
        # a condition is exact only if it is exact for every output it constrains
        for i in sorted(used):
            c = conditions[i]
            ok = all(any(k == i for k, _ in self.plan[j][0]) or i in self.merged.get(j, ())
                     or (self.plan[j][1] and self.plan[j][1][0] == i)
                     for j in c.columns(self.outputs))
            if ok:
                self.satisfied.append(i)
            else:  # pragma: no cover - plan covers each column it was asked for
                self.plan = [([(k, cd) for k, cd in ds if k != i],
                              g if g and g[0] != i else None) for ds, g in self.plan]
        for i, c in enumerate(conditions):
            if c.hard and i not in self.satisfied:
                raise ValueError(f"{c.label()} is marked hard=True but cannot be imposed by "
                                 f"the automatic output transform (only Dirichlet, Initial "
                                 f"values and Periodic can: Dirichlet on disjoint parts, one "
                                 f"initial value per output); give the "
                                 f"problem a transform= or leave it soft")
        self.satisfied.sort()

    def _dirichlet(self, X: torch.Tensor, j: int,
                   ds: list[tuple[int, Dirichlet]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The distance to the Dirichlet parts of output j and the lift taking their values."""
        values = []
        for _, cd in ds:
            k = cd.columns(self.outputs).index(j)
            values.append(cd.target(X, len(cd.columns(self.outputs)))[:, k : k + 1])
        if len(ds) == 1:
            return self.box.distance(X, ds[0][1].on), values[0]
        phi, weights = _blend_weights([self.box.distance(X, cd.on) for _, cd in ds])
        return phi, sum(w * v for w, v in zip(weights, values, strict=True))

    def forward(self, X: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        box = self.box
        if self.explicit is not None:
            coords = {nm: X[:, i : i + 1] for i, nm in enumerate(box.names)}
            return self.explicit(coords, raw)
        if not any(ds or g for ds, g in self.plan):
            return raw
        cols = []
        for j, (ds, g) in enumerate(self.plan):
            n = raw[:, j : j + 1]
            if not ds and g is None:
                cols.append(n)
                continue
            dist = torch.ones_like(n)
            lift = torch.zeros_like(n)
            if ds:
                phi, lift_d = self._dirichlet(X, j, ds)
                dist = dist * phi
                lift = lift + lift_d
            if g is not None:
                _, cg = g
                ti = box.index(box.time)
                t0, t1 = box.bounds(box.time)
                dist = dist * (X[:, ti : ti + 1] - t0) / (t1 - t0)
                k = cg.columns(self.outputs).index(j)
                ncols = len(cg.columns(self.outputs))
                lift = lift + cg.target(box, X, ncols)[:, k : k + 1]
                if ds:
                    X0 = X.clone()
                    X0[:, ti] = t0
                    lift = lift - self._dirichlet(X0, j, ds)[1]
            cols.append(lift + dist * n)
        return torch.cat(cols, 1)


def _blend_weights(phis: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """For distances phi_1..m (each zero on its own parts): the joint distance ``1 / sum
    1/phi_i`` (zero on every part) and the transfinite weights ``w_i = (1/phi_i) / sum_k
    1/phi_k`` (1 on part i, 0 on the others), written with products so that a zero phi
    divides nothing (Sukumar & Srivastava 2022, eq. 13 with m = 1)."""
    others = []
    for i in range(len(phis)):
        p = torch.ones_like(phis[0])
        for k, f in enumerate(phis):
            if k != i:
                p = p * f
        others.append(p)
    total = sum(others)
    tiny = torch.finfo(phis[0].dtype).tiny
    den = total + tiny  # where two parts meet (a corner), every weight is 0
    return phis[0] * others[0] / den, [o / den for o in others]


def _exactable(box: Any, on: Any) -> bool:
    """Whether the domain gives a distance function for the parts `on` (a predicate, part of
    a union's or a hole's boundary: no)."""
    if callable(on) or box.part_keys(on) is None:
        return False
    probe = torch.as_tensor(0.5 * (box.lo + box.hi), dtype=torch.float64).reshape(1, -1)
    return box.distance(probe, on) is not None
