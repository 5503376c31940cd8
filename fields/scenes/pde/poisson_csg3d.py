"""Poisson's equation in 3-D on constructive geometry: a cube with a spherical cavity.

-(u_xx + u_yy + u_zz) = 3 pi^2 u on [-1, 1]^3 minus the ball of radius 0.4 about the origin,
manufactured solution u = sin(pi x) sin(pi y) sin(pi z): u = 0 on the cube's faces and
u = that on the cavity's sphere, two conditions blended exactly by the output transform (the
cube's and the sphere's R-function distances, transfinite interpolation): the lift takes the
solution's values near the sphere only, the network the rest. Run:
`fields solve poisson_csg3d --output DIR`.
"""

import numpy as np
import torch

import fields.pinn as pinn

PI = np.pi


def exact(x, y, z, lib=np):
    return lib.sin(PI * x) * lib.sin(PI * y) * lib.sin(PI * z)


def residual(u, x, y, z):
    return -pinn.laplacian(u, x, y, z) - 3 * PI**2 * exact(x, y, z, torch)


def geometry() -> pinn.Geometry:
    return (pinn.Cuboid(x=(-1, 1), y=(-1, 1), z=(-1, 1))
            - pinn.Sphere((0, 0, 0), 0.4, name="cavity"))


def build() -> pinn.Case:
    g = geometry()
    problem = pinn.Problem(
        name="poisson_csg3d", domain=g, residual=residual,
        conditions=[pinn.Dirichlet(0.0, on="cuboid"),
                    pinn.Dirichlet(lambda x, y, z: exact(x, y, z, torch), on="cavity")],
        reference=pinn.Reference.from_function(g, exact, 41))
    return pinn.Case(problem, network=pinn.MLP(width=48, depth=4),
                     strategy=pinn.Strategy(adam_steps=1000, lbfgs_steps=4000,
                                            n_collocation=4096, max_seconds=600),
                     target=1e-2)


if __name__ == "__main__":
    pinn.main(build)
