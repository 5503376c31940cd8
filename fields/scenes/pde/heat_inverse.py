"""An inverse problem: recover the diffusivity of the heat equation from scattered
observations.

u_t = a u_xx on [0, 1] x [0, 1], a unknown (true 0.1, started at 0.5); 400 observations of the
exact solution (the one of `heat.py`) at random points, plus the initial and boundary
conditions. Reports the recovered `a` and its relative error next to the field's rel L2.
Run: `fields solve heat_inverse --output DIR`.
"""

import numpy as np
import torch

import fields.pinn as pinn

TRUE_ALPHA = 0.1
PI = np.pi


def exact(x, t):
    return (np.exp(-TRUE_ALPHA * PI**2 * t) * np.sin(PI * x)
            + 0.5 * np.exp(-TRUE_ALPHA * 9 * PI**2 * t) * np.sin(3 * PI * x))


def build() -> pinn.Case:
    alpha = pinn.Unknown(0.5, name="alpha", positive=True)

    def residual(u, x, t):
        return pinn.grad(u, t) - alpha() * pinn.grad(u, x, 2)

    rng = np.random.default_rng(0)
    xs, ts = rng.random(400), rng.random(400)
    box = pinn.Box(x=(0, 1), t=(0, 1))
    problem = pinn.Problem(
        name="heat_inverse", domain=box, residual=residual, unknowns=[alpha],
        conditions=[pinn.Initial(lambda x: torch.sin(PI * x) + 0.5 * torch.sin(3 * PI * x)),
                    pinn.Dirichlet(0.0, on="x"),
                    pinn.Data(points={"x": xs, "t": ts}, values=exact(xs, ts), weight=10.0)],
        reference=pinn.Reference.from_function(box, exact, 101))

    def coefficient(sol: pinn.Solution) -> dict:
        a = sol.unknowns()["alpha"]
        return {"alpha": a, "alpha_true": TRUE_ALPHA,
                "alpha_rel_error": abs(a - TRUE_ALPHA) / TRUE_ALPHA}

    return pinn.Case(problem, network=pinn.MLP(width=32, depth=4),
                     strategy=pinn.Strategy(adam_steps=2000, lbfgs_steps=3000,
                                            n_collocation=2048, lr=3e-3, max_seconds=300),
                     target=1e-3, extra_metrics=coefficient)


if __name__ == "__main__":
    pinn.main(build)
