"""Reference solutions the project computes itself, to measure PINNs against.

- `burgers`: viscous Burgers ``u_t + u u_x = nu u_xx`` on [-1, 1], ``u(x, 0) = -sin(pi x)``,
  ``u(+-1, t) = 0``, by the Cole-Hopf transformation: the solution is a ratio of two
  Gaussian-weighted integrals, computed by the trapezoidal rule on a fine grid in the shift
  variable (spectrally accurate for these smooth, fast-decaying integrands) with the exponents
  shifted by their maximum (no overflow at nu = 0.01 / pi).
- `allen_cahn`: ``u_t = d u_xx + 5 u - 5 u^3`` on [-1, 1] periodic, ``u(x, 0) = x^2 cos(pi x)``,
  by a Fourier pseudo-spectral method in space and ETDRK4 in time (Cox & Matthews 2002, with the
  contour-integral coefficients of Kassam & Trefethen 2005).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["allen_cahn", "burgers"]


def burgers(x: np.ndarray, t: np.ndarray, nu: float = 0.01 / math.pi,
            n_quad: int = 4001, width: float = 12.0) -> np.ndarray:
    """The exact solution on the grid ``x`` (nx,) by ``t`` (nt,): returns (nx, nt).

    Cole-Hopf: ``u = -int sin(pi (x - s)) f(x - s) G(s) ds / int f(x - s) G(s) ds`` with
    ``f(y) = exp(-cos(pi y) / (2 pi nu))`` and ``G(s) = exp(-s^2 / (4 nu t))``; ``s`` runs over
    ``width`` standard deviations of G on `n_quad` points.
    """
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if nu <= 0:
        raise ValueError(f"burgers: nu must be positive, got {nu}")
    out = np.empty((len(x), len(t)))
    z = np.linspace(-width, width, n_quad)  # s = sqrt(4 nu t) z
    for j, tj in enumerate(t):
        if tj <= 0:
            out[:, j] = -np.sin(np.pi * x)
            continue
        s = math.sqrt(4 * nu * tj) * z
        y = x[:, None] - s[None, :]
        e = -np.cos(np.pi * y) / (2 * np.pi * nu) - z[None, :] ** 2
        w = np.exp(e - e.max(1, keepdims=True))
        num = (np.sin(np.pi * y) * w).sum(1)
        den = w.sum(1)
        out[:, j] = -num / den
    return out


def _etdrk4_coefficients(L: np.ndarray, dt: float, m: int = 64):
    r = np.exp(1j * np.pi * (np.arange(1, m + 1) - 0.5) / m)
    LR = dt * L[:, None] + r[None, :]
    Q = dt * np.real(np.mean((np.exp(LR / 2) - 1) / LR, 1))
    f1 = dt * np.real(np.mean((-4 - LR + np.exp(LR) * (4 - 3 * LR + LR**2)) / LR**3, 1))
    f2 = dt * np.real(np.mean((2 + LR + np.exp(LR) * (-2 + LR)) / LR**3, 1))
    f3 = dt * np.real(np.mean((-4 - 3 * LR - LR**2 + np.exp(LR) * (4 - LR)) / LR**3, 1))
    return np.exp(dt * L), np.exp(dt * L / 2), Q, f1, f2, f3


def allen_cahn(nx: int = 512, t_out: np.ndarray | None = None, d: float = 1e-4,
               dt: float = 1e-5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Allen-Cahn on the periodic grid ``x_j = -1 + 2 j / nx``: returns (x (nx,), t (nt,),
    u (nx, nt)); `t_out` defaults to 201 times in [0, 1] (each a multiple of `dt`)."""
    if t_out is None:
        t_out = np.linspace(0.0, 1.0, 201)
    t_out = np.asarray(t_out, dtype=np.float64)
    x = -1.0 + 2.0 * np.arange(nx) / nx
    k = np.fft.fftfreq(nx, d=2.0 / nx) * 2 * np.pi  # wavenumbers on a period of 2
    L = -d * k**2 + 5.0  # the linear part: diffusion and the linear reaction
    E, E2, Q, f1, f2, f3 = _etdrk4_coefficients(L, dt)

    def N(v_hat: np.ndarray) -> np.ndarray:
        u = np.real(np.fft.ifft(v_hat))
        return np.fft.fft(-5.0 * u**3)

    v = np.fft.fft(x**2 * np.cos(np.pi * x))
    steps = np.rint(t_out / dt).astype(np.int64)
    if np.any(np.abs(steps * dt - t_out) > 1e-9) or np.any(np.diff(steps) < 0):
        raise ValueError("allen_cahn: t_out must be increasing multiples of dt")
    out = np.empty((nx, len(t_out)))
    n = 0
    for j, target in enumerate(steps):
        while n < target:
            Nv = N(v)
            a = E2 * v + Q * Nv
            Na = N(a)
            b = E2 * v + Q * Na
            Nb = N(b)
            c = E2 * a + Q * (2 * Nb - Nv)
            Nc = N(c)
            v = E * v + Nv * f1 + 2 * (Na + Nb) * f2 + Nc * f3
            n += 1
        out[:, j] = np.real(np.fft.ifft(v))
    return x, t_out, out
