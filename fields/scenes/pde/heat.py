"""The heat equation in 1-D.

u_t = a u_xx on x in [0, 1], t in [0, 1], a = 0.1; u(x, 0) = sin(pi x) + 0.5 sin(3 pi x);
u(0, t) = u(1, t) = 0. Exact: each sine decays as exp(-a (k pi)^2 t).
Run: `fields solve heat --output DIR`.
"""

import numpy as np
import torch

import fields.pinn as pinn

ALPHA = 0.1
PI = np.pi


def exact(x, t, alpha=ALPHA):
    return (np.exp(-alpha * PI**2 * t) * np.sin(PI * x)
            + 0.5 * np.exp(-alpha * 9 * PI**2 * t) * np.sin(3 * PI * x))


def initial(x):
    return torch.sin(PI * x) + 0.5 * torch.sin(3 * PI * x)


def residual(u, x, t):
    return pinn.grad(u, t) - ALPHA * pinn.grad(u, x, 2)


def build() -> pinn.Case:
    box = pinn.Box(x=(0, 1), t=(0, 1))
    problem = pinn.Problem(name="heat", domain=box, residual=residual,
                           conditions=[pinn.Initial(initial), pinn.Dirichlet(0.0, on="x")],
                           reference=pinn.Reference.from_function(box, exact, 101))
    return pinn.Case(problem, network=pinn.MLP(width=32, depth=4),
                     strategy=pinn.Strategy(adam_steps=1000, lbfgs_steps=3000,
                                            n_collocation=2048, max_seconds=300),
                     target=1e-3)


if __name__ == "__main__":
    pinn.main(build)
