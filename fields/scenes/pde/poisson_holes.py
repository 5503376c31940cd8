"""Poisson's equation on a plate with three circular holes: no closed form.

-(u_xx + u_yy) = 1 on the rectangle [0, 2] x [0, 1] minus three disks, u = 0 on the whole
boundary (outer edges and holes), imposed exactly: u = phi N with phi the domain's approximate
distance function (R-functions, Sukumar & Srivastava 2022). The reference is a P2 finite-element
solution by scikit-fem on a mesh of spacing 0.0125 (`fields.pinn.fem`, cached under
~/.cache/fields/pinn). Run: `fields solve poisson_holes --output DIR`.
"""

import numpy as np

import fields.pinn as pinn
from fields.pinn import fem

HOLES = [((0.45, 0.5), 0.2), ((1.1, 0.3), 0.15), ((1.55, 0.65), 0.18)]
H = 0.0125  # the reference's mesh spacing


def geometry() -> pinn.Geometry:
    g = pinn.Rectangle(x=(0, 2), y=(0, 1))
    for c, r in HOLES:
        g = g - pinn.Disk(c, r, name="hole")
    return g


def residual(u, x, y):
    return pinn.laplacian(u, x, y) + 1.0


def reference(g: pinn.Geometry, n=(161, 81)) -> pinn.Reference:
    dom = pinn.Domain(g)
    axes, pts = dom.grid(list(n))

    def compute() -> np.ndarray:
        basis, u = fem.poisson(g, 1.0, 0.0, h=H)
        return fem.on_grid(basis, u, pts)

    values = fem.cached("poisson_holes", {"holes": HOLES, "h": H, "n": list(n)}, compute)
    values = np.where(dom.contains(pts), values, np.nan)
    return pinn.Reference(axes, values.reshape(*n))


def build() -> pinn.Case:
    g = geometry()
    problem = pinn.Problem(name="poisson_holes", domain=g, residual=residual,
                           conditions=[pinn.Dirichlet(0.0)], reference=reference(g))
    return pinn.Case(problem, network=pinn.MLP(width=32, depth=4),
                     strategy=pinn.Strategy(adam_steps=1000, lbfgs_steps=4000,
                                            n_collocation=2048, max_seconds=300),
                     target=1e-2)


if __name__ == "__main__":
    pinn.main(build)
