"""Derivatives of network outputs with respect to coordinates, by autograd, to any order.

`grad(u, x)` is ``du/dx`` with the graph kept, so that it can be differentiated again
(``grad(grad(u, x), x)``) and trained through. It works for any network built from torch ops,
`FusedMLP` included (its fused CPU kernels give first derivatives; a second derivative
differentiates the torch reference, which `FusedMLP` does by itself).

Inside `fields.pinn.solve` the coordinates are registered in a `CoordinateScope`: one backward
pass then gives ``u``'s derivatives with respect to *all* coordinates, and the others are cached
for the next `grad(u, .)` call, so ``u_t, u_x = grad(u, t), grad(u, x)`` costs one pass, not two.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence

import torch

__all__ = ["CoordinateScope", "divergence", "grad", "jacobian", "laplacian"]

_SCOPE: contextvars.ContextVar[CoordinateScope | None] = contextvars.ContextVar(
    "fields_pinn_scope", default=None
)


class CoordinateScope:
    """The coordinate tensors of one evaluation, and a cache of first derivatives.

    Use as a context manager around a residual evaluation; `grad` consults it.
    """

    def __init__(self, coords: Sequence[torch.Tensor]) -> None:
        self.coords = list(coords)
        self._ids = {id(c): i for i, c in enumerate(self.coords)}
        self._cache: dict[int, tuple[torch.Tensor, list[torch.Tensor | None]]] = {}
        self._token: contextvars.Token | None = None

    def __enter__(self) -> CoordinateScope:
        self._token = _SCOPE.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _SCOPE.reset(self._token)
        self._cache.clear()

    def derivative(self, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        i = self._ids.get(id(x))
        if i is None or self.coords[i] is not x:
            return None
        hit = self._cache.get(id(u))
        if hit is None or hit[0] is not u:
            grads = torch.autograd.grad(
                u, self.coords, grad_outputs=torch.ones_like(u), create_graph=True,
                allow_unused=True,
            )
            hit = (u, list(grads))
            self._cache[id(u)] = hit  # holds u, so its id cannot be reused meanwhile
        g = hit[1][i]
        return torch.zeros_like(u) if g is None else g


def _check(u: torch.Tensor, x: torch.Tensor) -> None:
    if not isinstance(u, torch.Tensor) or not isinstance(x, torch.Tensor):
        raise TypeError("pinn.grad(u, x): u and x must be tensors")
    if not x.requires_grad:
        raise ValueError("pinn.grad(u, x): x does not require grad; differentiate with respect "
                         "to the coordinate tensors the residual was called with")
    if u.shape != x.shape:
        raise ValueError(f"pinn.grad(u, x): u has shape {tuple(u.shape)} but x has shape "
                         f"{tuple(x.shape)}; u must be one output column, shape (N, 1)")


def grad(u: torch.Tensor, x: torch.Tensor, order: int = 1) -> torch.Tensor:
    """``d^order u / dx^order`` (pointwise: u and x of shape (N, 1)), graph kept.

    A `u` that does not depend on `x` gives zeros (not an error)."""
    if order < 0:
        raise ValueError(f"pinn.grad: order must be >= 0, got {order}")
    for _ in range(order):
        _check(u, x)
        scope = _SCOPE.get()
        if not u.requires_grad:  # a constant: no graph to differentiate
            g = torch.zeros_like(u)
        else:
            g = scope.derivative(u, x) if scope is not None else None
        if g is None:
            (g,) = torch.autograd.grad(u, x, grad_outputs=torch.ones_like(u),
                                       create_graph=True, allow_unused=True)
            g = torch.zeros_like(u) if g is None else g
        u = g
    return u


def laplacian(u: torch.Tensor, *xs: torch.Tensor) -> torch.Tensor:
    """``sum_i d^2 u / dx_i^2`` over the coordinates given (``laplacian(u, x, y)``, or a
    sequence: ``laplacian(u, (x, y))``)."""
    if len(xs) == 1 and isinstance(xs[0], (tuple, list)):
        xs = tuple(xs[0])
    if not xs:
        raise ValueError("pinn.laplacian(u, *xs): give at least one coordinate")
    return sum(grad(grad(u, x), x) for x in xs)


def divergence(vs: Sequence[torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_i d v_i / d x_i``."""
    if len(vs) != len(xs) or not vs:
        raise ValueError("pinn.divergence: give as many components as coordinates (>= 1)")
    return sum(grad(v, x) for v, x in zip(vs, xs, strict=True))


def jacobian(us: Sequence[torch.Tensor], xs: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """``[[du_i/dx_j]]``."""
    return [[grad(u, x) for x in xs] for u in us]
