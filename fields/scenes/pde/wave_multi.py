"""The wave equation in 1-D with two frequencies four times apart (PINNacle's Wave1d-C).

u_tt = c^2 u_xx on x in [0, 1], t in [0, 1], c = 2; u(x, 0) = sin(pi x) + 0.5 sin(4 pi x),
u_t(x, 0) = 0, u(0, t) = u(1, t) = 0. Exact: sin(pi x) cos(2 pi t) + 0.5 sin(4 pi x)
cos(8 pi t): four periods in time of the fast mode. All three conditions are exact through the
transform u = g(x) + t^2 x (1 - x) N. Run: `fields solve wave_multi --output DIR`.
"""

import numpy as np
import torch

import fields.pinn as pinn

C = 2.0
PI = np.pi


def exact(x, t):
    return (np.sin(PI * x) * np.cos(PI * C * t)
            + 0.5 * np.sin(4 * PI * x) * np.cos(4 * PI * C * t))


def g(x):
    return torch.sin(PI * x) + 0.5 * torch.sin(4 * PI * x)


def transform(c, raw):
    x, t = c["x"], c["t"]
    return g(x) + 4 * t**2 * x * (1 - x) * raw


def residual(u, x, t):
    return pinn.grad(u, t, 2) - C**2 * pinn.grad(u, x, 2)


def build() -> pinn.Case:
    box = pinn.Box(x=(0, 1), t=(0, 1))
    problem = pinn.Problem(
        name="wave_multi", domain=box, residual=residual, transform=transform,
        conditions=[pinn.Initial(g, hard=True), pinn.Initial(0.0, derivative=1, hard=True),
                    pinn.Dirichlet(0.0, on="x", hard=True)],
        reference=pinn.Reference.from_function(box, exact, 101))
    return pinn.Case(problem, network=pinn.MLP(width=48, depth=4),
                     strategy=pinn.Strategy(adam_steps=1000, lbfgs_steps=10000,
                                            n_collocation=4096, max_seconds=420),
                     target=1e-2)


if __name__ == "__main__":
    pinn.main(build)
