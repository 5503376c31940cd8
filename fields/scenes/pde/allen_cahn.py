"""The Allen-Cahn equation (Raissi et al. 2019's benchmark): sharp moving interfaces.

u_t = d u_xx + 5 u - 5 u^3, d = 1e-4, on x in [-1, 1) periodic, t in [0, 1];
u(x, 0) = x^2 cos(pi x). Reference: Fourier spectral + ETDRK4 (`fields.pinn.reference`).
Run: `fields solve allen_cahn --output DIR`.
"""

import numpy as np
import torch

import fields.pinn as pinn
from fields.pinn.reference import allen_cahn

D = 1e-4


def residual(u, x, t):
    return pinn.grad(u, t) - D * pinn.grad(u, x, 2) - 5 * u + 5 * u**3


def build() -> pinn.Case:
    x, t, u = allen_cahn(nx=512, t_out=np.linspace(0, 1, 101), d=D, dt=5e-5)
    problem = pinn.Problem(
        name="allen_cahn", domain=pinn.Box(x=(-1, 1), t=(0, 1)), residual=residual,
        conditions=[pinn.Initial(lambda x: x**2 * torch.cos(torch.pi * x)),
                    pinn.Periodic(on="x")],
        reference=pinn.Reference([x, t], u))
    return pinn.Case(problem, network=pinn.MLP(width=48, depth=4),
                     strategy=pinn.Strategy(adam_steps=500, lbfgs_steps=3000,
                                            n_collocation=4096, periodic_harmonics=4,
                                            time_windows=10, weighting="gradnorm",
                                            max_seconds=600),
                     target=1e-2)


if __name__ == "__main__":
    pinn.main(build)
