"""Logistic reaction at rho = 5 (Krishnapriyan et al. 2021's second failure mode).

u_t = rho u (1 - u) on x in [0, 2 pi) periodic, t in [0, 1]; u(x, 0) = exp(-(x - pi)^2 /
(2 (pi / 4)^2)). Exact: u = h e^{rho t} / (h e^{rho t} + 1 - h), h the initial value.
(The Gaussian is periodic in value only: its slope is +-1.7e-3 at the ends, which the exact
periodic embedding cannot follow; the growth e^{rho t} amplifies that mismatch.)
Run: `fields solve reaction --output DIR`.
"""

import numpy as np
import torch

import fields.pinn as pinn

RHO = 5.0


def initial(x, lib=torch):
    return lib.exp(-((x - np.pi) ** 2) / (2 * (np.pi / 4) ** 2))


def exact(x, t):
    h = initial(x, np)
    e = np.exp(RHO * t)
    return h * e / (h * e + 1 - h)


def residual(u, x, t):
    return pinn.grad(u, t) - RHO * u * (1 - u)


def build() -> pinn.Case:
    box = pinn.Box(x=(0, 2 * np.pi), t=(0, 1))
    problem = pinn.Problem(name="reaction", domain=box, residual=residual,
                           conditions=[pinn.Initial(initial), pinn.Periodic(on="x")],
                           reference=pinn.Reference.from_function(box, exact, (256, 101)))
    return pinn.Case(problem, network=pinn.MLP(width=32, depth=4),
                     strategy=pinn.Strategy(adam_steps=1000, lbfgs_steps=6000,
                                            n_collocation=4096, periodic_harmonics=4,
                                            causal=1.0, max_seconds=300),
                     target=1e-2)


if __name__ == "__main__":
    pinn.main(build)
