"""The wave equation in 1-D, with the initial velocity imposed exactly by an explicit output
transform.

u_tt = c^2 u_xx on x in [0, 1], t in [0, 1], c = 1; u(x, 0) = sin(pi x) + 0.5 sin(3 pi x),
u_t(x, 0) = 0, u(0, t) = u(1, t) = 0. Exact: standing waves sin(k pi x) cos(k pi c t).
The transform u = g(x) + t^2 x (1 - x) N satisfies all three conditions by construction.
`standing_waves` builds this family for any speed and modes (`wave_multi.py` uses it).
Run: `fields solve wave --output DIR`.
"""

import numpy as np
import torch

import fields.pinn as pinn

PI = np.pi


def standing_waves(name: str, c: float, modes: dict[int, float], network: pinn.MLP,
                   strategy: pinn.Strategy, target: float) -> pinn.Case:
    """u_tt = c^2 u_xx on [0, 1]^2 with u(x, 0) = sum_k a_k sin(k pi x) (`modes`: k -> a_k),
    u_t(x, 0) = 0 and u = 0 at both ends, all exact by the transform above."""

    def exact(x, t):
        return sum(a * np.sin(k * PI * x) * np.cos(k * PI * c * t) for k, a in modes.items())

    def g(x):
        return sum(a * torch.sin(k * PI * x) for k, a in modes.items())

    def transform(coords, raw):
        x, t = coords["x"], coords["t"]
        return g(x) + 4 * t**2 * x * (1 - x) * raw

    def residual(u, x, t):
        return pinn.grad(u, t, 2) - c**2 * pinn.grad(u, x, 2)

    box = pinn.Box(x=(0, 1), t=(0, 1))
    problem = pinn.Problem(
        name=name, domain=box, residual=residual, transform=transform,
        conditions=[pinn.Initial(g, hard=True), pinn.Initial(0.0, derivative=1, hard=True),
                    pinn.Dirichlet(0.0, on="x", hard=True)],
        reference=pinn.Reference.from_function(box, exact, 101))
    return pinn.Case(problem, network=network, strategy=strategy, target=target)


def build() -> pinn.Case:
    return standing_waves("wave", 1.0, {1: 1.0, 3: 0.5}, pinn.MLP(width=32, depth=4),
                          pinn.Strategy(adam_steps=1000, lbfgs_steps=8000, n_collocation=4096,
                                        max_seconds=330),
                          target=1e-3)


if __name__ == "__main__":
    pinn.main(build)
