"""The heat equation in 1-D with a multi-scale initial condition (a high-frequency mode).

u_t = k u_xx on x in [0, 1], t in [0, 1], k = 1 / (10 pi)^2; u(x, 0) = sin(pi x) +
0.5 sin(20 pi x); u(0, t) = u(1, t) = 0, both imposed exactly. Exact (separation of variables):
exp(-k pi^2 t) sin(pi x) + 0.5 exp(-400 k pi^2 t) sin(20 pi x): the slow mode barely decays
(1%), the fast one by e^-4. A plain tanh network fits the fast mode poorly (spectral bias);
random Fourier features of x alone (Tancik et al. 2020; spatio-temporal features as in Wang,
Wang & Perdikaris 2021) carry it, with t passed on raw: features of t as well (the same scale
on both) fitted the collocation points but were noisy between them (rel L2 0.46). The points
are redrawn during Adam (RAD), twice as many as a smooth 2-D problem takes.
Run: `fields solve heat_multiscale --output DIR`.
"""

import numpy as np
import torch

import fields.pinn as pinn

PI = np.pi
K = 1 / (10 * PI) ** 2


def exact(x, t):
    return (np.exp(-K * PI**2 * t) * np.sin(PI * x)
            + 0.5 * np.exp(-400 * K * PI**2 * t) * np.sin(20 * PI * x))


def initial(x):
    return torch.sin(PI * x) + 0.5 * torch.sin(20 * PI * x)


def residual(u, x, t):
    return pinn.grad(u, t) - K * pinn.grad(u, x, 2)


def build() -> pinn.Case:
    box = pinn.Box(x=(0, 1), t=(0, 1))
    problem = pinn.Problem(name="heat_multiscale", domain=box, residual=residual,
                           conditions=[pinn.Initial(initial), pinn.Dirichlet(0.0, on="x")],
                           reference=pinn.Reference.from_function(box, exact, (201, 101)))
    return pinn.Case(problem, network=pinn.MLP(width=48, depth=4),
                     strategy=pinn.Strategy(adam_steps=1000, lbfgs_steps=6000,
                                            n_collocation=8192, resample="rad",
                                            fourier_features=64,
                                            fourier_sigma={"x": 5.0, "t": 0.0},
                                            max_seconds=420),
                     target=1e-2)


if __name__ == "__main__":
    pinn.main(build)
