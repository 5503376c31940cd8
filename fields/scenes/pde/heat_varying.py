"""The heat equation with a coefficient that varies in space: no closed form.

u_t = (k(x) u_x)_x on x in [0, 1], t in [0, 1], k(x) = 0.1 (1 + 0.8 sin(2 pi x));
u(x, 0) = sin(pi x) + 0.5 sin(4 pi x); u(0, t) = u(1, t) = 0, both imposed exactly. The
reference is a P2 finite-element solution by scikit-fem (spacing 1/400, Crank-Nicolson with
time step 5e-4; `fields.pinn.fem`, cached under ~/.cache/fields/pinn).
Run: `fields solve heat_varying --output DIR`.
"""

import numpy as np
import torch

import fields.pinn as pinn
from fields.pinn import fem

PI = np.pi
H, DT = 1 / 400, 5e-4


def k(x, lib=np):
    return 0.1 * (1 + 0.8 * lib.sin(2 * PI * x))


def initial(x, lib=torch):
    return lib.sin(PI * x) + 0.5 * lib.sin(4 * PI * x)


def residual(u, x, t):
    u_x = pinn.grad(u, x)
    return pinn.grad(u, t) - pinn.grad(k(x, torch) * u_x, x)


def reference(n=(201, 101)) -> pinn.Reference:
    box = pinn.Box(x=(0, 1), t=(0, 1))
    axes, _ = box.grid(list(n))

    def compute() -> np.ndarray:
        basis, U = fem.heat(pinn.Interval(x=(0, 1)), lambda x: initial(x, np), axes[1],
                            k=lambda x: k(x), h=H, dt=DT)
        return fem.on_grid(basis, U, axes[0][:, None]).T  # (x, t)

    values = fem.cached("heat_varying", {"h": H, "dt": DT, "n": list(n)}, compute)
    return pinn.Reference(axes, values)


def build() -> pinn.Case:
    box = pinn.Box(x=(0, 1), t=(0, 1))
    problem = pinn.Problem(name="heat_varying", domain=box, residual=residual,
                           conditions=[pinn.Initial(initial), pinn.Dirichlet(0.0, on="x")],
                           reference=reference())
    return pinn.Case(problem, network=pinn.MLP(width=32, depth=4),
                     strategy=pinn.Strategy(adam_steps=1000, lbfgs_steps=4000,
                                            n_collocation=2048, max_seconds=300),
                     target=1e-2)


if __name__ == "__main__":
    pinn.main(build)
