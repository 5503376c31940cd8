"""Dense BFGS for small PINNs: `BFGS`, one quasi-Newton iteration per `step(closure)`.

L-BFGS keeps the last few curvature pairs; BFGS keeps them all, in a dense inverse-Hessian
approximation of n x n for n parameters. For the few-thousand-parameter networks a PINN uses
that is affordable (a 4 x 48 MLP has about 7,400 parameters: 430 MB in float64, two
matrix-vector products and one rank-2 update per iteration), and it is what lets quasi-Newton
training reach losses L-BFGS stalls above (Urban, Stefanou & Pons 2025, "Unveiling the
optimization process of physics informed neural networks"; Kiyani et al. 2025).

The iteration (Nocedal & Wright 2006, algorithm 6.1): direction d = -H g; a backtracking line
search from t = 1 to the Armijo condition (quadratic interpolation, at least a tenth and at most
half of the previous trial); then the inverse update with s = t d, y = g_new - g,
rho = 1 / y.s::

    H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T

skipped when y.s is not safely positive (the curvature condition, which Armijo backtracking
alone does not guarantee). Before the first update H = I is rescaled to (y.s / y.y) I (Shanno &
Phua's initial scaling), so the first unit steps are sized to the problem. A direction that is
not a descent direction, or a line search that finds no decrease, resets H to that scaled
identity; twice in a row and the step is left undone, which the caller reads as a stall.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["BFGS"]


class BFGS(torch.optim.Optimizer):
    """Full-batch BFGS with a dense inverse Hessian (see the module doc). `max_eval`: function
    evaluations per line search; `dtype` of the inverse Hessian (float64 by default: the
    update subtracts nearly equal terms)."""

    def __init__(self, params, max_eval: int = 25, c1: float = 1e-4,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__(params, {"max_eval": int(max_eval), "c1": float(c1)})
        if len(self.param_groups) != 1:
            raise ValueError("BFGS takes one parameter group")
        self._params = [p for p in self.param_groups[0]["params"]]
        self._dtype = dtype

    # -- flat views ----------------------------------------------------------------------

    def _flat_grad(self) -> torch.Tensor:
        return torch.cat([torch.zeros(p.numel(), dtype=self._dtype, device=p.device)
                          if p.grad is None else p.grad.detach().reshape(-1).to(self._dtype)
                          for p in self._params])

    def _flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1).to(self._dtype) for p in self._params])

    def _set_params(self, x: torch.Tensor) -> None:
        i = 0
        with torch.no_grad():
            for p in self._params:
                n = p.numel()
                p.copy_(x[i : i + n].view_as(p).to(p.dtype))
                i += n

    # -- the iteration -------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """One BFGS iteration; `closure` zeroes the gradients, evaluates the loss and calls
        backward. Returns the loss at the point the iteration started from."""
        group = self.param_groups[0]
        state = self.state[self._params[0]]
        evaluate = torch.enable_grad()(closure)
        f0 = evaluate()
        f0v = float(f0)
        g0 = self._flat_grad()
        if not math.isfinite(f0v) or not bool(torch.isfinite(g0).all()):
            return f0
        x0 = self._flat_params()
        n = x0.numel()
        H = state.get("H")
        if H is None or H.shape != (n, n):
            H = None
        elif H.dtype != self._dtype:  # a checkpoint loaded next to float32 parameters
            H = state["H"] = H.to(self._dtype)
        for _attempt in range(2):
            if H is None:
                d = -g0 * state.get("scale", min(1.0, 1.0 / max(float(g0.abs().sum()), 1e-30)))
            else:
                d = -(H @ g0)
            gtd = float(g0 @ d)
            if not gtd < 0:  # not a descent direction: start again from the scaled identity
                H = None
                state.pop("H", None)
                continue
            t, accepted = 1.0, False
            for _ in range(group["max_eval"]):
                self._set_params(x0 + t * d)
                f = float(evaluate())
                if math.isfinite(f) and f <= f0v + group["c1"] * t * gtd:
                    accepted = True
                    break
                # the minimiser of the quadratic through f0, its slope and f(t), kept in
                # [t / 10, t / 2]; an overflow just halves
                if math.isfinite(f):
                    q = -gtd * t * t / (2.0 * (f - f0v - gtd * t))
                    t = min(max(q, 0.1 * t), 0.5 * t)
                else:
                    t = 0.5 * t
            if not accepted:  # no decrease along d
                self._set_params(x0)
                H = None
                state.pop("H", None)
                continue
            g1 = self._flat_grad()
            s = t * d
            y = g1 - g0
            ys = float(y @ s)
            if ys > 1e-10 * float(y.norm() * s.norm()) and bool(torch.isfinite(y).all()):
                if H is None:
                    H = torch.eye(n, dtype=self._dtype, device=x0.device) * (ys / float(y @ y))
                rho = 1.0 / ys
                Hy = H @ y
                c = rho * rho * float(y @ Hy) + rho
                A = torch.stack([Hy, s], 1)
                B = torch.stack([-rho * s, c * s - rho * Hy], 0)
                H.addmm_(A, B)
                state["H"] = H
            elif H is None:
                state["scale"] = t * state.get("scale", 1.0)
            state["iterations"] = state.get("iterations", 0) + 1
            return f0
        self._set_params(x0)
        return f0
