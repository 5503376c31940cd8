"""The wave equation in 1-D with two frequencies four times apart (PINNacle's Wave1d-C).

u_tt = c^2 u_xx on x in [0, 1], t in [0, 1], c = 2; u(x, 0) = sin(pi x) + 0.5 sin(4 pi x),
u_t(x, 0) = 0, u(0, t) = u(1, t) = 0. Exact: sin(pi x) cos(2 pi t) + 0.5 sin(4 pi x)
cos(8 pi t): four periods in time of the fast mode. All three conditions are exact through the
transform u = g(x) + t^2 x (1 - x) N (`wave.standing_waves`). A plain tanh network of (x, t)
stalls at about 0.3 (spectral bias in t); random Fourier features of t alone, x passed on raw
(`fourier_sigma={"t": 1.5}`), carry the four periods. Tried and dropped, each in 150-420 s: a
saturating ramp in place of t^2, sin activations, features of x and t together, the
first-order system (u, u_t), and four time windows carrying u and u_t (rel L2 0.3 to 0.8).
Run: `fields solve wave_multi --output DIR`.
"""

import fields.pinn as pinn
from fields.scenes.pde.wave import standing_waves


def build() -> pinn.Case:
    return standing_waves("wave_multi", 2.0, {1: 1.0, 4: 0.5}, pinn.MLP(width=48, depth=4),
                          pinn.Strategy(adam_steps=1000, lbfgs_steps=10000,
                                        n_collocation=4096, fourier_features=64,
                                        fourier_sigma={"t": 1.5}, max_seconds=600),
                          target=1e-2)


if __name__ == "__main__":
    pinn.main(build)
