"""The lid-driven cavity at Re = 100: steady incompressible Navier-Stokes, velocity and pressure.

(u . grad) u + grad p - laplace(u) / Re = 0, div u = 0 on [0, 1]^2; the lid (y = 1) moves at
u = 1, the other walls are still (u = v = 0); the pressure is fixed to 0 at the corner (0, 0)
(its gauge). v = 0 on every wall is exact (the output transform); u's two values are loss
terms: an exact u would carry the jump at the lid's corners into the network's output, whose
momentum residual then needs the corners' 1/r pressure singularity, which no smooth network
holds (tried: the relative error stayed above 0.8 after 2000 Adam steps; with the lid's velocity
ramped to 0 over 0.05 at the corners, in the reference too, and both exact, 0.26 in 600 s, no
better than soft). The gauge is a soft point value. The collocation points are redrawn where
the residual is large (RAD: the lid's corners and the jet by the right wall): 0.17 in 600 s
against 0.26 with fixed points.

Checked two ways: against a Taylor-Hood finite-element solution by scikit-fem (spacing 1/40,
Picard iterations; `fields.pinn.fem.navier_stokes`, cached under ~/.cache/fields/pinn), the
relative L2 error of u and v on a 101 x 101 grid (the pressure, singular at the lid's corners,
is not compared: NaN in the reference); and against the centre-line velocities
tabulated by Ghia, Ghia & Shin (1982, J. Comput. Phys. 48, 387-411, tables I and II, Re = 100),
the largest deviation of u along x = 0.5 and of v along y = 0.5 (`ghia_u_max_error`,
`ghia_v_max_error`). The finite-element reference itself is within 5e-3 (u) and 1e-2 (v) of
that table. Run: `fields solve cavity --output DIR`.
"""

import numpy as np

import fields.pinn as pinn
from fields.pinn import fem

RE = 100.0
H = 1 / 40

# Ghia, Ghia & Shin (1982), Re = 100: u on the vertical centre line, v on the horizontal one
GHIA_Y = np.array([0.0, 0.0547, 0.0625, 0.0703, 0.1016, 0.1719, 0.2813, 0.4531, 0.5, 0.6172,
                   0.7344, 0.8516, 0.9531, 0.9609, 0.9688, 0.9766, 1.0])
GHIA_U = np.array([0.0, -0.03717, -0.04192, -0.04775, -0.06434, -0.10150, -0.15662, -0.21090,
                   -0.20581, -0.13641, 0.00332, 0.23151, 0.68717, 0.73722, 0.78871, 0.84123,
                   1.0])
GHIA_X = np.array([0.0, 0.0625, 0.0703, 0.0781, 0.0938, 0.1563, 0.2266, 0.2344, 0.5, 0.8047,
                   0.8594, 0.9063, 0.9453, 0.9531, 0.9609, 0.9688, 1.0])
GHIA_V = np.array([0.0, 0.09233, 0.10091, 0.10890, 0.12317, 0.16077, 0.17507, 0.17527,
                   0.05454, -0.24533, -0.22445, -0.16914, -0.10313, -0.08864, -0.07391,
                   -0.05906, 0.0])


def residual(u, v, p, x, y):
    u_x, u_y = pinn.grad(u, x), pinn.grad(u, y)
    v_x, v_y = pinn.grad(v, x), pinn.grad(v, y)
    lap_u = pinn.grad(u_x, x) + pinn.grad(u_y, y)
    lap_v = pinn.grad(v_x, x) + pinn.grad(v_y, y)
    return (u * u_x + v * u_y + pinn.grad(p, x) - lap_u / RE,
            u * v_x + v * v_y + pinn.grad(p, y) - lap_v / RE,
            u_x + v_y)


def lid(x, y):
    """The boundary velocity: 1 along the lid (corners excluded), 0 elsewhere."""
    on_lid = (y > 1 - 1e-12) & (x > 1e-12) & (x < 1 - 1e-12)
    return np.where(on_lid, 1.0, 0.0), np.zeros_like(x)


def reference(n=101) -> pinn.Reference:
    box = pinn.Box(x=(0, 1), y=(0, 1))
    axes, pts = box.grid(n)

    def compute() -> np.ndarray:
        sb, U, _, _, _ = fem.navier_stokes(pinn.Rectangle(x=(0, 1), y=(0, 1)), RE, lid, h=H,
                                            structured=True)
        return np.stack([*fem.on_grid(sb, U, pts), np.full(len(pts), np.nan)], -1)

    values = fem.cached("cavity", {"re": RE, "h": H, "n": n, "p": "not compared"}, compute)
    return pinn.Reference(axes, values.reshape(n, n, 3))


def ghia_errors(sol: pinn.Solution) -> dict:
    """The largest deviations from Ghia et al.'s centre-line table (inner points)."""
    u = sol(x=np.full(len(GHIA_Y), 0.5), y=GHIA_Y)[:, 0]
    v = sol(x=GHIA_X, y=np.full(len(GHIA_X), 0.5))[:, 1]
    return {"ghia_u_max_error": float(np.abs(u - GHIA_U)[1:-1].max()),
            "ghia_v_max_error": float(np.abs(v - GHIA_V)[1:-1].max())}


def build() -> pinn.Case:
    box = pinn.Box(x=(0, 1), y=(0, 1))
    problem = pinn.Problem(
        name="cavity", domain=box, residual=residual, outputs=("u", "v", "p"),
        conditions=[pinn.Dirichlet(1.0, on="y+", output="u", hard=False),
                    pinn.Dirichlet(0.0, on=["x", "y-"], output="u", hard=False),
                    pinn.Dirichlet(0.0, output="v"),
                    pinn.PointSet(np.array([[0.0, 0.0]]), np.array([0.0]), output="p")],
        reference=reference())
    return pinn.Case(problem, network=pinn.MLP(width=48, depth=4),
                     strategy=pinn.Strategy(adam_steps=2000, lbfgs_steps=8000,
                                            n_collocation=2048, resample="rad",
                                            max_seconds=600),
                     target=1e-1, extra_metrics=ghia_errors)


if __name__ == "__main__":
    pinn.main(build)
