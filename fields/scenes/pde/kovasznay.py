"""Kovasznay flow: steady incompressible Navier-Stokes at Re = 20, exact solution
(Kovasznay 1948).

u u_x + v u_y + p_x - (u_xx + u_yy) / Re = 0, same for v, u_x + v_y = 0 on
[-0.5, 1] x [-0.5, 1.5]; (u, v) given on the whole boundary, p on the outlet x = 1.
Run: `fields solve kovasznay --output DIR`.
"""

import numpy as np
import torch

import fields.pinn as pinn

RE = 20.0
LAM = RE / 2 - np.sqrt(RE**2 / 4 + 4 * np.pi**2)


def exact(x, y, lib=np):
    e = lib.exp(LAM * x)
    u = 1 - e * lib.cos(2 * np.pi * y)
    v = LAM / (2 * np.pi) * e * lib.sin(2 * np.pi * y)
    p = 0.5 * (1 - lib.exp(2 * LAM * x))
    return u, v, p


def velocity(x, y):
    u, v, _ = exact(x, y, torch)
    return u, v


def pressure(x, y):
    return exact(x, y, torch)[2]


def residual(u, v, p, x, y):
    g = pinn.grad
    u_x, u_y, v_x, v_y = g(u, x), g(u, y), g(v, x), g(v, y)
    mom_x = u * u_x + v * u_y + g(p, x) - (g(u_x, x) + g(u_y, y)) / RE
    mom_y = u * v_x + v * v_y + g(p, y) - (g(v_x, x) + g(v_y, y)) / RE
    return mom_x, mom_y, u_x + v_y


def build() -> pinn.Case:
    box = pinn.Box(x=(-0.5, 1.0), y=(-0.5, 1.5))
    problem = pinn.Problem(
        name="kovasznay", domain=box, residual=residual, outputs=("u", "v", "p"),
        conditions=[pinn.Dirichlet(velocity, output=("u", "v")),
                    pinn.Dirichlet(pressure, on="x+", output="p")],
        reference=pinn.Reference.from_function(box, exact, (76, 101)))
    return pinn.Case(problem, network=pinn.MLP(width=40, depth=4),
                     strategy=pinn.Strategy(adam_steps=1000, lbfgs_steps=4000,
                                            n_collocation=2048, max_seconds=420),
                     target=1e-3)


if __name__ == "__main__":
    pinn.main(build)
