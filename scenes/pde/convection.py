"""Convection at beta = 50: a known failure mode of plain PINNs (Krishnapriyan et al. 2021
report a relative error near 1 for beta >= 30).

u_t + beta u_x = 0 on x in [0, 2 pi) periodic, t in [0, 1]; u(x, 0) = sin(x). Exact:
u = sin(x - beta t). What makes it work here: exact periodicity (a periodic embedding of x),
the initial condition imposed exactly, a first layer of sines at the right frequency
(`first_scale`), and causal time weighting.
Run: `fields solve convection --output DIR`.
"""

import numpy as np
import torch

import fields.pinn as pinn

BETA = 50.0


def exact(x, t):
    return np.sin(x - BETA * t)


def residual(u, x, t):
    return pinn.grad(u, t) + BETA * pinn.grad(u, x)


def build() -> pinn.Case:
    box = pinn.Box(x=(0, 2 * np.pi), t=(0, 1))
    problem = pinn.Problem(name="convection", domain=box, residual=residual,
                           conditions=[pinn.Initial(torch.sin), pinn.Periodic(on="x")],
                           reference=pinn.Reference.from_function(box, exact, (256, 101)))
    return pinn.Case(problem, network=pinn.MLP(width=48, depth=4, first_scale=30.0),
                     strategy=pinn.Strategy(adam_steps=2000, lbfgs_steps=4000,
                                            n_collocation=4096, causal=1.0, causal_chunks=32,
                                            max_seconds=420),
                     target=1e-2)


if __name__ == "__main__":
    pinn.main(build)
