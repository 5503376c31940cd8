"""Steady flow around a cylinder in a channel (velocity-pressure), Re = 20: no closed form.

(u . grad) u + grad p - nu laplace(u) = 0, div u = 0 in the channel [0, 1.1] x [0, 0.41]
minus the cylinder of radius 0.05 centred at (0.2, 0.2), nu = 1e-3: the geometry and inflow of
Schafer & Turek's benchmark 2D-1 (1996: parabolic inflow u = 4 U y (0.41 - y) / 0.41^2,
U = 0.3, so Re = 20 on the mean velocity and the diameter), in the channel shortened to 1.1
as in Rao, Sun & Liu's PINN study (2020, Theor. Appl. Mech. Lett. 10). No slip on the walls
and the cylinder; the outlet x = 1.1 is open, with the natural ("do-nothing") condition of
this form, nu du/dx - p = 0 and dv/dx = 0, an `OperatorBC` (it also fixes the pressure's
gauge). u and v are exact on the rest of the boundary: the inflow profile and the walls'
zero blended by transfinite interpolation over the domain's distance functions.

The reference is a Taylor-Hood finite-element solution by scikit-fem with the same do-nothing
outlet (`fields.pinn.fem.navier_stokes`, spacing 1/100, cached under ~/.cache/fields/pinn);
u, v and p are compared; the target is on the worst of the three (v, the smallest, in
practice). The drag on the cylinder is not reported (the shortened channel changes it from the
benchmark's 5.58). Run: `fields solve cylinder --output DIR`.
"""

import numpy as np

import fields.pinn as pinn
from fields.pinn import fem

L, H = 1.1, 0.41
CENTER, RADIUS = (0.2, 0.2), 0.05
U_MAX, NU = 0.3, 1e-3
MESH_H = 1 / 100


def geometry() -> pinn.Geometry:
    return pinn.Rectangle(x=(0, L), y=(0, H)) - pinn.Disk(CENTER, RADIUS, name="cylinder")


def inflow(x, y):
    return 4 * U_MAX * y * (H - y) / H**2


def residual(u, v, p, x, y):
    g = pinn.grad
    u_x, u_y, v_x, v_y = g(u, x), g(u, y), g(v, x), g(v, y)
    return (u * u_x + v * u_y + g(p, x) - NU * (g(u_x, x) + g(u_y, y)),
            u * v_x + v * v_y + g(p, y) - NU * (g(v_x, x) + g(v_y, y)),
            u_x + v_y)


def outlet(u, v, p, x, y, n):
    """Do-nothing: nu du/dn - p n = 0 on the outlet (n = (1, 0))."""
    return NU * pinn.grad(u, x) - p, NU * pinn.grad(v, x)


def reference(g: pinn.Geometry, n=(111, 42)) -> pinn.Reference:
    dom = pinn.Domain(g)
    axes, pts = dom.grid(list(n))

    def velocity(x, y):
        return np.where(x < 1e-12, inflow(x, y), 0.0), np.zeros_like(x)

    def compute() -> np.ndarray:
        sb, V, pb, P, _ = fem.navier_stokes(g, 1 / NU, velocity, h=MESH_H,
                                            outflow=lambda x, y: x > L - 1e-9)
        return np.stack([*fem.on_grid(sb, V, pts), fem.on_grid(pb, P, pts)], -1)

    values = fem.cached("cylinder", {"L": L, "H": H, "c": CENTER, "r": RADIUS, "U": U_MAX,
                                     "nu": NU, "h": MESH_H, "n": list(n)}, compute)
    values = np.where(dom.contains(pts)[:, None], values, np.nan)
    return pinn.Reference(axes, values.reshape(*n, 3))


def build() -> pinn.Case:
    g = geometry()
    walls = ["y-", "y+", "cylinder"]
    problem = pinn.Problem(
        name="cylinder", domain=g, residual=residual, outputs=("u", "v", "p"),
        conditions=[pinn.Dirichlet(lambda x, y: inflow(x, y), on="x-", output="u"),
                    pinn.Dirichlet(0.0, on=walls, output="u"),
                    pinn.Dirichlet(0.0, on=["x-", *walls], output="v"),
                    pinn.OperatorBC(outlet, on="x+", name="outlet")],
        reference=reference(g))
    return pinn.Case(problem, network=pinn.MLP(width=48, depth=4),
                     strategy=pinn.Strategy(adam_steps=2000, lbfgs_steps=6000,
                                            n_collocation=2048, max_seconds=900),
                     target=1e-1)


if __name__ == "__main__":
    pinn.main(build)

