"""A PDE problem: domain, residual, conditions, unknown coefficients, and a reference.

```python
problem = pinn.Problem(domain=pinn.Box(x=(-1, 1), t=(0, 1)), residual=residual,
                       conditions=[pinn.Initial(lambda x: -torch.sin(torch.pi * x)),
                                   pinn.Dirichlet(0.0, on="x")])
```

``residual(*outputs, *coordinates)`` gets each output column (N, 1) (names in `outputs`, default
``("u",)``) then each coordinate (N, 1) in the domain's order, and returns one tensor or a
tuple of them (several equations), each zero where the PDE holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fields.pinn.conditions import Condition
from fields.pinn.geometry import Box

__all__ = ["Problem", "Reference", "Unknown"]


class Unknown(nn.Module):
    """A coefficient to recover (an inverse problem): call it (``nu()``) inside the residual.
    ``positive=True`` keeps it positive (it is stored as a logarithm)."""

    def __init__(self, initial: float, name: str = "unknown", positive: bool = False) -> None:
        super().__init__()
        if positive and not initial > 0:
            raise ValueError(f"Unknown {name!r}: positive=True needs initial > 0, got {initial}")
        self.name = name
        self.positive = positive
        v = math.log(initial) if positive else float(initial)
        self.raw = nn.Parameter(torch.tensor(v, dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return torch.exp(self.raw) if self.positive else self.raw

    def item(self) -> float:
        return float(self().detach())


@dataclass
class Reference:
    """The exact (or accurately computed) solution on a grid: `axes` one 1-D array per
    coordinate, `values` of shape ``(*len(axes), n_outputs)``; NaN where the grid (of a
    domain's bounding box) leaves the domain, which errors ignore."""

    axes: list[np.ndarray]
    values: np.ndarray

    def __post_init__(self) -> None:
        self.axes = [np.asarray(a, dtype=np.float64) for a in self.axes]
        v = np.asarray(self.values, dtype=np.float64)
        shape = tuple(len(a) for a in self.axes)
        if v.shape == shape:
            v = v[..., None]
        if v.shape[:-1] != shape:
            raise ValueError(f"Reference: values have shape {v.shape}; expected {shape} + "
                             f"(n_outputs,)")
        self.values = v

    def mask(self) -> np.ndarray:
        """Where the reference is defined for every output: ``(*len(axes),)`` bool."""
        return np.isfinite(self.values).all(-1)

    @classmethod
    def from_function(cls, box: Box, fn: Callable[..., Any],
                      n: int | Sequence[int] = 101) -> Reference:
        """Evaluates ``fn(*coords)`` (numpy arrays, one per coordinate; returns an array or a
        tuple of arrays for several outputs) on a regular grid of `box`."""
        from fields.pinn.shapes import Domain, Geometry

        if isinstance(box, Geometry):
            box = Domain(box)
        axes, pts = box.grid(n)
        out = fn(*[pts[:, i] for i in range(box.dim)])
        cols = [np.broadcast_to(np.asarray(c, dtype=np.float64), (len(pts),))
                for c in (out if isinstance(out, (tuple, list)) else [out])]
        shape = tuple(len(a) for a in axes)
        values = np.stack(cols, -1)
        if hasattr(box, "geometry"):  # points of the bounding box outside the domain: NaN
            values = np.where(box.contains(pts, 1e-12)[:, None], values, np.nan)
        return cls(axes, values.reshape(*shape, len(cols)))

    def points(self) -> np.ndarray:
        return np.stack(np.meshgrid(*self.axes, indexing="ij"), -1).reshape(-1, len(self.axes))


@dataclass
class Problem:
    """See the module doc. `transform`: an explicit output transform ``(coords: dict of
    (N, 1) tensors, raw: (N, n_outputs)) -> outputs`` for hard constraints the automatic one
    does not cover; conditions it satisfies are marked ``hard=True``."""

    domain: Box
    residual: Callable[..., torch.Tensor | Sequence[torch.Tensor]]
    conditions: Sequence[Condition] = ()
    outputs: Sequence[str] = ("u",)
    unknowns: Sequence[Unknown] = ()
    transform: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor] | None = None
    reference: Reference | None = None
    name: str = "problem"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from fields.pinn.shapes import Domain, Geometry

        if isinstance(self.domain, Geometry):
            self.domain = Domain(self.domain)
        if not isinstance(self.domain, (Box, Domain)):
            raise TypeError(f"Problem {self.name!r}: domain must be a pinn.Box, a geometry "
                            f"(pinn.Disk, pinn.Polygon, ...) or a pinn.Domain, got "
                            f"{type(self.domain).__name__}")
        if not callable(self.residual):
            raise TypeError(f"Problem {self.name!r}: residual must be callable")
        self.outputs = tuple(self.outputs)
        if not self.outputs or len(set(self.outputs)) != len(self.outputs):
            raise ValueError(f"Problem {self.name!r}: outputs must be distinct names, got "
                             f"{self.outputs}")
        clash = set(self.outputs) & set(self.domain.names)
        if clash:
            raise ValueError(f"Problem {self.name!r}: output name(s) {sorted(clash)} are also "
                             f"coordinate names")
        for c in self.conditions:
            if not isinstance(c, Condition):
                raise TypeError(f"Problem {self.name!r}: {c!r} is not a pinn condition")
            c.columns(self.outputs)
        if self.reference is not None:
            if len(self.reference.axes) != self.domain.dim:
                raise ValueError(f"Problem {self.name!r}: the reference has "
                                 f"{len(self.reference.axes)} axes for a {self.domain.dim}-D "
                                 f"domain")
            if self.reference.values.shape[-1] != len(self.outputs):
                raise ValueError(f"Problem {self.name!r}: the reference has "
                                 f"{self.reference.values.shape[-1]} output(s), the problem "
                                 f"{len(self.outputs)}")
