"""Viscous Burgers' equation, nu = 0.01 / pi (Raissi et al. 2019's benchmark).

u_t + u u_x = nu u_xx on x in [-1, 1], t in [0, 1]; u(x, 0) = -sin(pi x); u(+-1, t) = 0.
A shock forms at x = 0 near t = 0.3. Reference: Cole-Hopf by quadrature.
Run: `fields solve burgers --output DIR` or `python -m fields.scenes.pde.burgers DIR`.
"""

import math

import numpy as np
import torch

import fields.pinn as pinn
from fields.pinn.reference import burgers

NU = 0.01 / math.pi


def residual(u, x, t):
    u_t, u_x = pinn.grad(u, t), pinn.grad(u, x)
    return u_t + u * u_x - NU * pinn.grad(u_x, x)


def build() -> pinn.Case:
    x, t = np.linspace(-1, 1, 256), np.linspace(0, 1, 101)
    problem = pinn.Problem(
        name="burgers",
        domain=pinn.Box(x=(-1, 1), t=(0, 1)),
        residual=residual,
        conditions=[pinn.Initial(lambda x: -torch.sin(torch.pi * x)), pinn.Dirichlet(0.0, on="x")],
        reference=pinn.Reference([x, t], burgers(x, t, NU)),
    )
    return pinn.Case(problem, network=pinn.MLP(width=32, depth=6),
                     strategy=pinn.Strategy(adam_steps=3000, lbfgs_steps=30000,
                                            n_collocation=4096, resample="rad",
                                            resample_every=1000, max_seconds=600),
                     target=1e-3)


if __name__ == "__main__":
    pinn.main(build)
