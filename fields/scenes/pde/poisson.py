"""Poisson's equation in 2-D with a manufactured solution.

-(u_xx + u_yy) = f on [0, 1]^2, u = 0 on the boundary, exact u = sin(2 pi x) sin(2 pi y)
+ 0.25 sin(pi x) sin(4 pi y). Run: `fields solve poisson --output DIR`.
"""

import numpy as np
import torch

import fields.pinn as pinn

PI = np.pi


def exact(x, y, lib=np):
    return (lib.sin(2 * PI * x) * lib.sin(2 * PI * y)
            + 0.25 * lib.sin(PI * x) * lib.sin(4 * PI * y))


def source(x, y):
    return (8 * PI**2 * torch.sin(2 * PI * x) * torch.sin(2 * PI * y)
            + 0.25 * 17 * PI**2 * torch.sin(PI * x) * torch.sin(4 * PI * y))


def residual(u, x, y):
    return -pinn.laplacian(u, x, y) - source(x, y)


def build() -> pinn.Case:
    box = pinn.Box(x=(0, 1), y=(0, 1))
    problem = pinn.Problem(name="poisson", domain=box, residual=residual,
                           conditions=[pinn.Dirichlet(0.0)],
                           reference=pinn.Reference.from_function(box, exact, 101))
    return pinn.Case(problem, network=pinn.MLP(width=32, depth=4),
                     strategy=pinn.Strategy(adam_steps=1000, lbfgs_steps=3000,
                                            n_collocation=2048, max_seconds=300),
                     target=1e-3)


if __name__ == "__main__":
    pinn.main(build)
