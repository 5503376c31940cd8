"""Helmholtz's equation in 2-D (Wang, Teng & Perdikaris 2021's benchmark).

u_xx + u_yy + k^2 u = q on [-1, 1]^2, u = 0 on the boundary, k = 1, exact
u = sin(pi x) sin(4 pi y). Run: `fields solve helmholtz --output DIR`.
"""

import numpy as np
import torch

import fields.pinn as pinn

A1, A2, K = 1.0, 4.0, 1.0
PI = np.pi


def exact(x, y):
    return np.sin(A1 * PI * x) * np.sin(A2 * PI * y)


def residual(u, x, y):
    q = (K**2 - (A1 * PI) ** 2 - (A2 * PI) ** 2) * torch.sin(A1 * PI * x) * torch.sin(A2 * PI * y)
    return pinn.laplacian(u, x, y) + K**2 * u - q


def build() -> pinn.Case:
    box = pinn.Box(x=(-1, 1), y=(-1, 1))
    problem = pinn.Problem(name="helmholtz", domain=box, residual=residual,
                           conditions=[pinn.Dirichlet(0.0)],
                           reference=pinn.Reference.from_function(box, exact, 101))
    return pinn.Case(problem, network=pinn.MLP(width=32, depth=4),
                     strategy=pinn.Strategy(adam_steps=1000, lbfgs_steps=8000,
                                            n_collocation=4096, max_seconds=330),
                     target=1e-3)


if __name__ == "__main__":
    pinn.main(build)
