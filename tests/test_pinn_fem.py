"""fields.pinn.fem: the finite-element references converge to analytic solutions under mesh
refinement (Poisson on a disk and on a plate with holes, heat on an interval and a disk), and
the cache keeps what was computed."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fields.pinn as pinn
from fields.pinn import fem

PLATE = (pinn.Rectangle(x=(0, 2), y=(0, 1)) - pinn.Disk((0.5, 0.5), 0.2, name="hole")
         - pinn.Disk((1.5, 0.5), 0.25, name="hole"))


def _max_error(basis, u, pts, exact):
    v = fem.on_grid(basis, u, pts)
    ok = np.isfinite(v)
    assert ok.mean() > 0.98  # only slivers between a curve and its chords are off the mesh
    return float(np.abs(v[ok] - exact(*pts[ok].T)).max())


def test_poisson_on_a_disk_converges():
    disk = pinn.Disk((0.0, 0.0), 1.0)
    pts = disk.sample_interior(1500, seed=3)
    errs = [_max_error(*fem.poisson(disk, 1.0, 0.0, h=h), pts,
                       lambda x, y: (1 - x**2 - y**2) / 4) for h in (0.2, 0.1, 0.05)]
    # chords of the circle: second order
    assert errs[0] / errs[1] > 3 and errs[1] / errs[2] > 3, errs
    assert errs[2] < 3e-4


def test_poisson_with_holes_and_a_varying_coefficient_converges():
    def u(x, y):
        return np.sin(np.pi * x) * np.cos(np.pi * y)

    def k(x, y):
        return 1 + 0.5 * x

    def f(x, y):  # -div(k grad u) for this u and k
        return k(x, y) * 2 * np.pi**2 * u(x, y) - 0.5 * np.pi * np.cos(np.pi * x) * \
            np.cos(np.pi * y)

    pts = PLATE.sample_interior(2000, seed=4)
    errs = [_max_error(*fem.poisson(PLATE, f, u, k, h=h), pts, u) for h in (0.1, 0.05)]
    assert errs[0] / errs[1] > 4 and errs[1] < 5e-4, errs


def test_heat_on_an_interval_and_a_disk_converges():
    line = pinn.Interval(x=(0, 1))
    x = np.linspace(0, 1, 21)[:, None]
    t1 = 0.1
    exact = math.exp(-(math.pi**2) * t1) * np.sin(math.pi * x[:, 0]) \
        + math.exp(-(4 * math.pi) ** 2 * t1) * np.sin(4 * math.pi * x[:, 0])
    errs = []
    for h, dt in ((0.05, 4e-3), (0.025, 2e-3)):
        basis, U = fem.heat(line, lambda x: np.sin(np.pi * x) + np.sin(4 * np.pi * x),
                            [0.0, t1], h=h, dt=dt)
        errs.append(float(np.abs(fem.on_grid(basis, U, x)[1] - exact).max()))
    assert errs[0] / errs[1] > 3 and errs[1] < 1e-4, errs
    # a source and boundary values that depend on time: u = exp(-t) (1 - r^2) + t r^2
    disk = pinn.Disk((0, 0), 1.0)

    def ue(x, y, t):
        r2 = x**2 + y**2
        return np.exp(-t) * (1 - r2) + t * r2

    def src(x, y, t):  # u_t - laplace(u)
        r2 = x**2 + y**2
        return -np.exp(-t) * (1 - r2) + r2 - (-4 * np.exp(-t) + 4 * t)

    basis, U = fem.heat(disk, lambda x, y: ue(x, y, 0), [0.25, 0.5], f=src,
                        g=lambda x, y, t: ue(x, y, t), h=0.1, dt=5e-3)
    pts = disk.sample_interior(500, seed=2)
    v = fem.on_grid(basis, U, pts)
    ok = np.isfinite(v[1])
    assert np.abs(v[1][ok] - ue(*pts[ok].T, 0.5)).max() < 2e-3


def test_cached_computes_once(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDS_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return np.arange(5.0)

    a = fem.cached("thing", {"h": 0.1}, compute)
    b = fem.cached("thing", {"h": 0.1}, compute)
    c = fem.cached("thing", {"h": 0.05}, compute)
    assert np.array_equal(a, b) and np.array_equal(a, c) and len(calls) == 2
    assert len(list((tmp_path / "pinn").glob("thing-*.npy"))) == 2


def test_mesh_rejects_what_it_cannot_mesh():
    with pytest.raises(ValueError, match="h must be positive"):
        fem.mesh(PLATE, 0.0)
    with pytest.raises(ValueError, match="1-D and 2-D only"):
        fem.mesh(pinn.Sphere((0, 0, 0), 1.0), 0.1)


def test_navier_stokes_cavity_matches_ghia_et_al():
    """The finite-element cavity at Re = 100 against the centre-line table of Ghia, Ghia & Shin
    (1982): within 6e-3 (u) and 1e-2 (v), the table's own accuracy (its 129 x 129 grid)."""
    import importlib.util

    from fields.pinn.run import scenes_dir

    spec = importlib.util.spec_from_file_location("cavity_script", scenes_dir() / "cavity.py")
    cav = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cav)
    sb, U, pb, P, iterations = fem.navier_stokes(pinn.Rectangle(x=(0, 1), y=(0, 1)), 100.0,
                                                 cav.lid, h=1 / 32, structured=True)
    assert 3 < iterations < 60
    u = fem.on_grid(sb, U[0], np.stack([np.full(17, 0.5), cav.GHIA_Y], 1))
    v = fem.on_grid(sb, U[1], np.stack([cav.GHIA_X, np.full(17, 0.5)], 1))
    assert np.abs(u - cav.GHIA_U)[1:-1].max() < 6e-3
    assert np.abs(v - cav.GHIA_V)[1:-1].max() < 1e-2
    # divergence-free in the mean and the pressure pinned at the corner
    assert abs(fem.on_grid(pb, P, np.array([[0.0, 0.0]]))[0]) < 1e-12
    # Stokes alone (Re -> 0 limit, a different flow) is not within the table: the test can fail
    sb0, U0, _, _, _ = fem.navier_stokes(pinn.Rectangle(x=(0, 1), y=(0, 1)), 1e-3, cav.lid,
                                         h=1 / 16, structured=True)
    v0 = fem.on_grid(sb0, U0[1], np.stack([cav.GHIA_X, np.full(17, 0.5)], 1))
    assert np.abs(v0 - cav.GHIA_V)[1:-1].max() > 0.03


def test_navier_stokes_outflow_gives_poiseuille_flow():
    """A channel with a parabolic inflow and a do-nothing outlet: the exact solution is
    Poiseuille flow, u = 4 U y (H - y) / H^2, v = 0, p = 8 U (L - x) / (Re H^2) (zero at the
    outlet, where grad(u) n / Re - p n = 0), which P2 / P1 elements hold exactly."""
    L, H, U, re = 2.0, 0.5, 1.5, 50.0
    channel = pinn.Rectangle(x=(0, L), y=(0, H))

    def velocity(x, y):
        return np.where(x < 1e-12, 4 * U * y * (H - y) / H**2, 0.0), np.zeros_like(x)

    sb, V, pb, P, _ = fem.navier_stokes(channel, re, velocity, h=1 / 8, structured=True,
                                        outflow=lambda x, y: x > L - 1e-9)
    pts = np.stack([np.array([0.3, 1.0, 1.7, 2.0]), np.array([0.1, 0.25, 0.4, 0.3])], 1)
    u_exact = 4 * U * pts[:, 1] * (H - pts[:, 1]) / H**2
    np.testing.assert_allclose(fem.on_grid(sb, V[0], pts), u_exact, atol=1e-9)
    np.testing.assert_allclose(fem.on_grid(sb, V[1], pts), 0.0, atol=1e-9)
    p_exact = 8 * U * (L - pts[:, 0]) / (re * H**2)
    np.testing.assert_allclose(fem.on_grid(pb, P, pts), p_exact, atol=1e-8)
    # with the outlet walled off instead, the same inflow has nowhere to go: not Poiseuille
    sb2, V2, _, _, _ = fem.navier_stokes(channel, re, velocity, h=1 / 8, structured=True)
    assert np.abs(fem.on_grid(sb2, V2[0], pts[1:2]) - u_exact[1]).max() > 0.1
    with pytest.raises(ValueError, match="outflow holds on no boundary edge"):
        fem.navier_stokes(channel, re, velocity, h=1 / 4, structured=True,
                          outflow=lambda x, y: x > 5)


def test_navier_stokes_around_a_cylinder_conserves_mass():
    """The built-in cylinder problem's finite-element flow (a coarse mesh): what enters at the
    inlet leaves at the do-nothing outlet, the flow is held still on the cylinder, and it is
    slower behind the cylinder than beside it."""
    import importlib.util

    from fields.pinn.run import scenes_dir

    spec = importlib.util.spec_from_file_location("cyl", scenes_dir() / "cylinder.py")
    cyl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cyl)
    g = cyl.geometry()

    def velocity(x, y):
        return np.where(x < 1e-12, cyl.inflow(x, y), 0.0), np.zeros_like(x)

    sb, V, pb, P, iterations = fem.navier_stokes(g, 1 / cyl.NU, velocity, h=1 / 60,
                                                 outflow=lambda x, y: x > cyl.L - 1e-9)
    assert iterations < 60
    ys = np.linspace(0, cyl.H, 401)
    flux_in = np.trapezoid(cyl.inflow(0 * ys, ys), ys)
    u_out = fem.on_grid(sb, V[0], np.stack([np.full_like(ys, cyl.L - 1e-9), ys], 1))
    assert abs(np.trapezoid(u_out, ys) / flux_in - 1) < 2e-3
    ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ring = np.asarray(cyl.CENTER) + (cyl.RADIUS + 1e-6) * np.stack([np.cos(ang), np.sin(ang)], 1)
    assert np.abs(fem.on_grid(sb, V[0], ring)).max() < 0.05
    behind, beside = fem.on_grid(sb, V[0], np.array([[0.3, 0.2], [0.2, 0.3]]))
    assert behind < 0.5 * beside
    # the pressure falls along the channel to about 0 at the open outlet (p = nu du/dx there)
    p_in, p_out = fem.on_grid(pb, P, np.array([[0.02, 0.2], [cyl.L - 1e-9, 0.2]]))
    assert p_in > 0.02 and abs(p_out) < 2e-3
