"""Multi-stage training to near machine precision (Wang & Lai 2024), float64.

A 1-D boundary-value problem u'' = f on [0, 1], u(0) = u(1) = 0, exact
u = sin(2 pi x) exp(x); each stage fits what the previous ones left, scaled
to order one. Run: `fields solve multistage --output DIR`.
"""

import numpy as np
import torch

import fields.pinn as pinn


def exact(x, lib=np):
    return lib.sin(2 * np.pi * x) * lib.exp(x)


def residual(u, x):
    # f = u_exact''
    s, c, e = torch.sin(2 * np.pi * x), torch.cos(2 * np.pi * x), torch.exp(x)
    f = e * ((1 - 4 * np.pi**2) * s + 4 * np.pi * c)
    return pinn.grad(u, x, 2) - f


def build() -> pinn.Case:
    box = pinn.Box(x=(0, 1))
    problem = pinn.Problem(name="multistage", domain=box, residual=residual,
                           conditions=[pinn.Dirichlet(0.0)],
                           reference=pinn.Reference.from_function(box, exact, 1001))
    return pinn.Case(problem, network=pinn.MLP(width=32, depth=3),
                     strategy=pinn.Strategy(adam_steps=1000, lbfgs_steps=3000,
                                            n_collocation=512, sampler="grid", stages=3,
                                            stage_adam_steps=500, stage_lbfgs_steps=3000,
                                            max_seconds=300),
                     target=1e-8)


if __name__ == "__main__":
    pinn.main(build)
