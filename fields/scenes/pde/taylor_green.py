"""Unsteady incompressible Navier-Stokes: the decaying Taylor-Green vortex (velocity-pressure).

u_t + (u . grad) u + grad p - nu laplace(u) = 0, div u = 0 on [0, 2 pi]^2 (periodic in x
and y), t in [0, 2], nu = 0.1. Exact (Taylor & Green 1937), with F(t) = exp(-2 nu t):
u = -cos x sin y F, v = sin x cos y F, p = -(cos 2x + cos 2y) F^2 / 4: the convective term is
balanced by the pressure, the time derivative by the viscous term, so every term of the
residual is exercised. Both periodic conditions are exact (periodic embedding) and so is the
initial velocity (the output transform); the pressure's gauge, free on a periodic domain, is
fixed by p = 0 along the line x = y = pi/4 (where the exact pressure is 0 at every time), a
soft `PointSet`. u, v and p are all compared. The standard check of NSFnets (Jin et al.
2021, J. Comput. Phys. 426). Run: `fields solve taylor_green --output DIR`.
"""

import numpy as np
import torch

import fields.pinn as pinn

PI = np.pi
NU = 0.1


def exact(x, y, t, lib=np):
    F = lib.exp(-2 * NU * t)
    return (-lib.cos(x) * lib.sin(y) * F, lib.sin(x) * lib.cos(y) * F,
            -(lib.cos(2 * x) + lib.cos(2 * y)) * F**2 / 4)


def initial(x, y):
    u, v, _ = exact(x, y, 0 * x, torch)
    return u, v


def residual(u, v, p, x, y, t):
    g = pinn.grad
    u_x, u_y, v_x, v_y = g(u, x), g(u, y), g(v, x), g(v, y)
    return (g(u, t) + u * u_x + v * u_y + g(p, x) - NU * (g(u_x, x) + g(u_y, y)),
            g(v, t) + u * v_x + v * v_y + g(p, y) - NU * (g(v_x, x) + g(v_y, y)),
            u_x + v_y)


def build() -> pinn.Case:
    box = pinn.Box(x=(0, 2 * PI), y=(0, 2 * PI), t=(0, 2))
    ts = np.linspace(0, 2, 33)
    gauge = np.stack([np.full_like(ts, PI / 4), np.full_like(ts, PI / 4), ts], 1)
    problem = pinn.Problem(
        name="taylor_green", domain=box, residual=residual, outputs=("u", "v", "p"),
        conditions=[pinn.Periodic(on="x"), pinn.Periodic(on="y"),
                    pinn.Initial(initial, output=("u", "v")),
                    pinn.PointSet(gauge, np.zeros(len(ts)), output="p")],
        reference=pinn.Reference.from_function(box, exact, (41, 41, 11)))
    return pinn.Case(problem, network=pinn.MLP(width=32, depth=4),
                     strategy=pinn.Strategy(adam_steps=1000, lbfgs_steps=4000,
                                            n_collocation=2048, max_seconds=420),
                     target=1e-2)


if __name__ == "__main__":
    pinn.main(build)
