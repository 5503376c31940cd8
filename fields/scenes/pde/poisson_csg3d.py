"""Poisson's equation in 3-D on constructive geometry: a cube with a spherical cavity.

-(u_xx + u_yy + u_zz) = f on [-1, 1]^3 minus the ball of radius 0.4 about the origin, with
the manufactured solution u = sin(pi x) sin(pi y) sin(pi z) + (x^2 + y^2 + z^2) / 3 and u = that
on the cube's faces and the cavity's sphere, imposed exactly through the domain's R-function
distance. Run: `fields solve poisson_csg3d --output DIR`.
"""

import numpy as np
import torch

import fields.pinn as pinn

PI = np.pi


def exact(x, y, z, lib=np):
    return lib.sin(PI * x) * lib.sin(PI * y) * lib.sin(PI * z) + (x**2 + y**2 + z**2) / 3


def residual(u, x, y, z):
    # -laplace(exact) = 3 pi^2 sin sin sin - 2
    f = 3 * PI**2 * torch.sin(PI * x) * torch.sin(PI * y) * torch.sin(PI * z) - 2.0
    return -pinn.laplacian(u, x, y, z) - f


def geometry() -> pinn.Geometry:
    return (pinn.Cuboid(x=(-1, 1), y=(-1, 1), z=(-1, 1))
            - pinn.Sphere((0, 0, 0), 0.4, name="cavity"))


def build() -> pinn.Case:
    g = geometry()
    problem = pinn.Problem(
        name="poisson_csg3d", domain=g, residual=residual,
        conditions=[pinn.Dirichlet(lambda x, y, z: exact(x, y, z, torch))],
        reference=pinn.Reference.from_function(g, exact, 41))
    return pinn.Case(problem, network=pinn.MLP(width=48, depth=4),
                     strategy=pinn.Strategy(adam_steps=1000, lbfgs_steps=4000,
                                            n_collocation=4096, max_seconds=600),
                     target=1e-2)


if __name__ == "__main__":
    pinn.main(build)
