"""fields.pinn beyond boxes: geometry (sampling, normals, signed and approximate distances,
constructive geometry, space-time), the boundary conditions on it (Neumann, Robin, OperatorBC,
PointSet), exact Dirichlet conditions on general domains, the script shapes `fields solve`
runs, and the honest per-condition summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import fields.pinn as pinn
from fields.pinn.field import Evaluator
from fields.pinn.hard import OutputTransform

D64 = torch.float64
L_SHAPE = [(0, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2)]


def plate_with_holes():
    return (pinn.Rectangle(x=(0, 2), y=(0, 1))
            - pinn.Disk((0.5, 0.5), 0.2, name="hole") - pinn.Disk((1.5, 0.5), 0.25, name="hole"))


# -- sampling -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["sobol", "lhs", "uniform"])
def test_interior_sampling_is_inside_and_uniform(method):
    disk = pinn.Disk((1.0, -2.0), 2.0)
    X = disk.sample_interior(4000, method, seed=1)
    assert X.shape == (4000, 2)
    r = np.linalg.norm(X - [1.0, -2.0], axis=1)
    assert (r < 2.0).all()
    # uniform by area: half of the points within radius 2 / sqrt(2)
    assert abs(np.mean(r < 2.0 / math.sqrt(2)) - 0.5) < 0.03
    L = pinn.Polygon(L_SHAPE)
    X = L.sample_interior(3000, method, seed=2)
    assert (L.sdf(X) < 0).all()
    thirds = [np.mean((X[:, 0] < 1) & (X[:, 1] < 1)), np.mean(X[:, 0] > 1), np.mean(X[:, 1] > 1)]
    assert np.allclose(thirds, 1 / 3, atol=0.03), thirds
    g = plate_with_holes()
    X = g.sample_interior(2000, method, seed=3)
    assert (g.sdf(X) < 0).all() and len(X) == 2000
    # nothing inside a hole
    assert (np.linalg.norm(X - [0.5, 0.5], axis=1) > 0.2).all()


def test_boundary_normals_match_the_analytic_ones():
    disk = pinn.Disk((0.3, 0.1), 0.7)
    P, N, _ = disk.sample_boundary(500)
    assert np.allclose(np.linalg.norm(P - [0.3, 0.1], axis=1), 0.7)
    assert np.allclose(N, (P - [0.3, 0.1]) / 0.7)
    ell = pinn.Ellipse((0, 0), (2.0, 1.0))
    P, N, _ = ell.sample_boundary(500)
    assert np.allclose((P[:, 0] / 2) ** 2 + P[:, 1] ** 2, 1)
    g = np.stack([P[:, 0] / 4, P[:, 1]], 1)
    assert np.allclose(N, g / np.linalg.norm(g, axis=1, keepdims=True))
    # by arc length: the flat ends (|x| > 1.9) hold their share of the perimeter
    assert abs(np.mean(np.abs(P[:, 0]) > 1.9) - _ellipse_share(2.0, 1.0, 1.9)) < 0.02
    ball = pinn.Sphere((0, 0, 0), 2.0)
    P, N, _ = ball.sample_boundary(2000)
    assert np.allclose(P, 2 * N) and np.allclose(np.linalg.norm(N, axis=1), 1)
    assert np.allclose(P.mean(0), 0, atol=0.1)  # spread over the whole sphere


def _ellipse_share(a, b, x0):
    th = np.linspace(0, 2 * np.pi, 200001)
    speed = np.sqrt((a * np.sin(th)) ** 2 + (b * np.cos(th)) ** 2)
    return float(np.sum(speed * (np.abs(a * np.cos(th)) > x0)) / np.sum(speed))


def test_constructive_boundary_by_length_with_outward_normals():
    g = plate_with_holes()
    P, N, W = g.sample_boundary(4000, seed=5)
    assert np.abs(g.sdf(P)).max() < 1e-12
    assert np.allclose(np.linalg.norm(N, axis=1), 1)
    names = g.part_names()
    hole = np.array([names[w] == "hole" for w in W])
    lengths = 6.0, 2 * math.pi * (0.2 + 0.25)
    assert abs(hole.mean() - lengths[1] / sum(lengths)) < 0.02
    # a hole's outward normal (out of the domain) points into the hole: towards its centre
    c = np.where(P[hole, :1] < 1, 0.5, 1.5)
    to_centre = np.concatenate([c, np.full_like(c, 0.5)], 1) - P[hole]
    assert ((N[hole] * to_centre).sum(1) > 0).all()
    # by name and by predicate
    P2, _, W2 = g.sample_boundary(300, on="hole")
    assert all(names[w] == "hole" for w in W2) and len(P2) > 250
    P3, _, _ = g.sample_boundary(300, on=lambda x, y: y > 0.99)
    assert (P3[:, 1] > 0.99).all() and len(P3) > 200
    with pytest.raises(ValueError, match="no boundary part named 'rim'; its parts: "):
        g.sample_boundary(10, on="rim")
    # a union keeps no point of the shared edge of an L made of two rectangles
    U = pinn.Rectangle(x=(0, 2), y=(0, 1)) | pinn.Rectangle(x=(0, 1), y=(0, 2))
    P, N, _ = U.sample_boundary(2000)
    assert np.abs(U.sdf(P)).max() < 1e-12
    inner = (P[:, 0] > 1e-9) & (P[:, 0] < 1 - 1e-9) & (np.abs(P[:, 1] - 1) < 1e-9)
    assert not inner.any()
    assert abs(len(P) - 2000) < 100


def test_signed_distance_sign_and_magnitude():
    L = pinn.Polygon(L_SHAPE)
    X = np.array([[0.5, 0.5], [1.5, 1.5], [0.5, 1.5], [3.0, 0.5], [-1.0, -1.0]])
    assert np.allclose(L.sdf(X), [-0.5, 0.5, -0.5, 1.0, math.sqrt(2)])
    # clockwise vertices: the same polygon
    assert np.allclose(pinn.Polygon(L_SHAPE[::-1]).sdf(X), L.sdf(X))
    R = pinn.Rectangle(x=(0, 2), y=(0, 1))
    assert np.allclose(R.sdf(np.array([[1, 0.5], [3, 0.5], [3, 2], [0.1, 0.5]])),
                       [-0.5, 1, math.sqrt(2), -0.1])
    d = pinn.Disk((0, 0), 1)
    assert np.allclose(d.sdf(np.array([[0, 0], [2, 0], [0, 0.5]])), [-1, 1, -0.5])
    g = plate_with_holes()
    assert g.sdf(np.array([[0.5, 0.5]]))[0] == pytest.approx(0.2)  # in a hole: outside
    assert g.sdf(np.array([[1.0, 0.5]]))[0] == pytest.approx(-0.25)  # between the holes
    inter = pinn.Disk((0, 0), 1) & pinn.Rectangle(x=(0, 2), y=(-2, 2))
    assert inter.sdf(np.array([[0.5, 0.0]]))[0] == pytest.approx(-0.5)
    assert inter.sdf(np.array([[-0.5, 0.0]]))[0] == pytest.approx(0.5)
    assert inter.measure() == pytest.approx(math.pi / 2, rel=0.01)
    assert plate_with_holes().measure() == pytest.approx(2 - math.pi * (0.04 + 0.0625), rel=0.01)


@pytest.mark.parametrize("shape", ["disk", "polygon", "plate", "ellipse"])
def test_approximate_distance_vanishes_on_the_boundary_with_unit_slope(shape):
    g = {"disk": pinn.Disk((0.2, 0.0), 1.3), "polygon": pinn.Polygon(L_SHAPE),
         "plate": plate_with_holes(), "ellipse": pinn.Ellipse((0, 0), (1.0, 1.0))}[shape]
    P, N, _ = g.sample_boundary(400, seed=1)
    X = torch.tensor(P, dtype=D64)
    assert float(g.adf(X).abs().max()) < 1e-10
    inside = torch.tensor(g.sample_interior(500), dtype=D64)
    assert float(g.adf(inside).min()) > 0
    # unit inward slope: phi(x - h n) ~ h away from corners
    corner = np.zeros(len(P), dtype=bool)
    if shape in ("polygon", "plate"):
        V = np.array(L_SHAPE if shape == "polygon" else [(0, 0), (2, 0), (2, 1), (0, 1)])
        corner = (np.linalg.norm(P[:, None] - V[None], axis=2) < 0.05).any(1)
    h = 1e-6
    slope = g.adf(torch.tensor(P - h * N, dtype=D64)).squeeze(1).numpy() / h
    assert np.allclose(slope[~corner], 1.0, atol=1e-3)


def test_distance_is_exact_only_where_the_construction_allows():
    g = plate_with_holes()
    hole = g.distance(torch.tensor(g.sample_boundary(200, on="hole")[0]), "hole")
    assert float(hole.abs().max()) < 1e-12
    inside = torch.tensor(g.sample_interior(300), dtype=D64)
    for on in ("hole", "x-", ["x-", "y+"], None):
        assert float(g.distance(inside, on).min()) > 0
    # the part of a union's boundary, part of a hole's, a predicate: no distance
    U = pinn.Rectangle(x=(0, 2), y=(0, 1)) | pinn.Rectangle(x=(0, 1), y=(0, 2))
    assert U.distance(inside, "x-") is None
    assert U.distance(inside, None) is not None
    square_hole = pinn.Rectangle(x=(0, 3), y=(0, 3)) - pinn.Rectangle(x=(1, 2), y=(1, 2),
                                                                          name="hole")
    assert square_hole.distance(inside, "hole.x-") is None
    assert square_hole.distance(inside, "hole") is not None
    assert g.distance(inside, lambda x, y: x < 1) is None


def test_space_time_domain():
    dom = pinn.Domain(pinn.Disk((0, 0), 1), t=(0, 2))
    assert dom.names == ("x", "y", "t") and dom.time == "t" and dom.spatial == ("x", "y")
    X = dom.sample(1000)
    assert (np.linalg.norm(X[:, :2], axis=1) < 1).all()
    assert X[:, 2].min() >= 0 and X[:, 2].max() <= 2 and abs(X[:, 2].mean() - 1) < 0.05
    P, N, _ = dom.sample_boundary(None, 200)
    assert np.allclose(np.linalg.norm(P[:, :2], axis=1), 1) and np.allclose(N[:, 2], 0)
    S = dom.sample_slice("t", 0.0, 50)
    assert np.allclose(S[:, 2], 0) and (np.linalg.norm(S[:, :2], axis=1) < 1).all()
    assert dom.volume() == pytest.approx(2 * math.pi, rel=0.01)
    assert dom.with_time(0.5, 1.0).bounds("t") == (0.5, 1.0)
    ref = pinn.Reference.from_function(dom, lambda x, y, t: x + t, 11)
    assert np.isnan(ref.values[0, 0, 0, 0]) and np.isfinite(ref.values[5, 5, 5, 0])
    with pytest.raises(ValueError, match="time 'x' is also a coordinate"):
        pinn.Domain(pinn.Disk((0, 0), 1), x=(0, 1))


def test_bad_geometry_is_named():
    with pytest.raises(ValueError, match="radius must be positive"):
        pinn.Disk((0, 0), -1)
    with pytest.raises(ValueError, match="at least 3 points"):
        pinn.Polygon([(0, 0), (1, 1)])
    with pytest.raises(ValueError, match="coordinate names differ"):
        pinn.Disk((0, 0), 1) | pinn.Rectangle(u=(0, 1), v=(0, 1))
    with pytest.raises(ValueError, match="Interval: give one coordinate"):
        pinn.Interval(x=(0, 1), y=(0, 1))
    with pytest.raises(ValueError, match=r"periodic conditions need a pinn\.Box"):
        pinn.Periodic(on="x").sample(pinn.Domain(pinn.Disk((0, 0), 1)), 10, "sobol", 0)


# -- conditions against an analytic solution --------------------------------------------------


class Analytic(nn.Module):
    """u = scale (x^2 + y^2) + shift: a stand-in for a trained field."""

    def __init__(self, scale: float = 1.0, shift: float = 0.0) -> None:
        super().__init__()
        self.scale, self.shift = scale, shift
        self.register_buffer("dummy", torch.zeros(1, dtype=D64))

    def forward(self, X):
        return self.scale * (X[:, :1] ** 2 + X[:, 1:2] ** 2) + self.shift


def _max_residual(problem, cond, model, n=300):
    ev = Evaluator(problem, model)
    pts = cond.sample(problem.domain, n, "sobol", 0)
    pts_t = {k: torch.as_tensor(v, dtype=torch.int64 if v.dtype.kind == "i" else D64)
             for k, v in pts.items()}
    return float(cond.residual(ev, pts_t, cond.columns(problem.outputs)).detach().abs().max())


@pytest.mark.parametrize("geometry", ["disk", "annulus", "box"])
def test_every_condition_holds_for_the_analytic_solution(geometry):
    # u = x^2 + y^2: du/dn = 2 r on a circle about the origin (outward), -2 r on a hole's
    g = {"disk": pinn.Disk((0, 0), 1.0),
         "annulus": pinn.Disk((0, 0), 2.0, name="outer") - pinn.Disk((0, 0), 1.0, name="inner"),
         "box": pinn.Box(x=(0, 1), y=(0, 1))}[geometry]
    on = "inner" if geometry == "annulus" else ("x+" if geometry == "box" else None)

    def dn_exact(x, y):  # the outward normal derivative where the conditions are
        if geometry == "box":
            return 2 * x
        r = torch.sqrt(x**2 + y**2)
        return -2 * r if geometry == "annulus" else 2 * r

    def u_exact(x, y):
        return x**2 + y**2

    conds = [
        pinn.Dirichlet(u_exact, on=on),
        pinn.Neumann(dn_exact, on=on),
        pinn.Robin(a=2.0, b=0.5, value=lambda x, y: 2 * u_exact(x, y) + 0.5 * dn_exact(x, y),
                   on=on),
        pinn.OperatorBC(lambda u, x, y, n: pinn.grad(u, x) * n[0] + pinn.grad(u, y) * n[1]
                        - dn_exact(x, y), on=on),
        pinn.PointSet(np.array([[0.1, 0.2], [0.3, 0.4], [1.5, 0.1]]) if geometry == "annulus"
                      else np.array([[0.1, 0.2], [0.3, 0.4]]), u_exact),
    ]
    problem = pinn.Problem(domain=g, residual=lambda u, x, y: pinn.laplacian(u, x, y) - 4,
                           conditions=conds)
    for c in conds:
        assert _max_residual(problem, c, Analytic()) < 1e-12, c.label()
        assert _max_residual(problem, c, Analytic(1.1, 0.1)) > 0.09, c.label()  # it can fail


def test_exact_dirichlet_on_a_disk_holds_before_training():
    g = pinn.Disk((0.5, 0.0), 1.0)
    value = lambda x, y: torch.sin(3 * x) * y + 1  # noqa: E731
    problem = pinn.Problem(domain=g, residual=lambda u, x, y: pinn.laplacian(u, x, y),
                           conditions=[pinn.Dirichlet(value)])
    T = OutputTransform(problem.domain, problem.outputs, problem.conditions)
    assert T.satisfied == [0]
    P = torch.tensor(g.sample_boundary(500)[0], dtype=D64)
    raw = torch.randn(len(P), 1, dtype=D64)
    out = T(P, raw)
    assert torch.allclose(out, value(P[:, :1], P[:, 1:]), atol=1e-12)
    inside = torch.tensor(g.sample_interior(200), dtype=D64)
    # inside the network matters: the transform is not the lift alone
    assert not torch.allclose(T(inside, raw[:200]), T(inside, raw[:200] + 1))


def test_exact_initial_and_boundary_on_a_space_time_disk():
    dom = pinn.Domain(pinn.Disk((0, 0), 1.0), t=(0, 1))
    problem = pinn.Problem(
        domain=dom,
        residual=lambda u, x, y, t: pinn.grad(u, t) - pinn.laplacian(u, x, y),
        conditions=[pinn.Initial(lambda x, y: 1 - x**2 - y**2), pinn.Dirichlet(0.0)])
    T = OutputTransform(dom, problem.outputs, problem.conditions)
    assert T.satisfied == [0, 1]
    sol = pinn.solve(problem, pinn.MLP(width=8, depth=2),
                     pinn.Strategy(adam_steps=2, lbfgs_steps=0, n_collocation=64),
                     progress=False)
    from fields.pinn.run import condition_report

    rep = condition_report(sol)
    assert [c["enforced"] for c in rep] == ["exact", "exact"]
    assert max(c["max_error"] for c in rep) < 1e-12


# -- training on general domains --------------------------------------------------------------


def test_poisson_on_an_l_shape_with_exact_dirichlet_trains():
    L = pinn.Polygon(L_SHAPE)

    def u(x, y):
        return np.sin(np.pi * x / 2) * np.sin(np.pi * y / 2)

    def residual(v, x, y):
        return pinn.laplacian(v, x, y) + (np.pi**2 / 2) * torch.sin(np.pi * x / 2) * \
            torch.sin(np.pi * y / 2)

    problem = pinn.Problem(domain=L, residual=residual, conditions=[
        pinn.Dirichlet(lambda x, y: torch.sin(np.pi * x / 2) * torch.sin(np.pi * y / 2))],
        reference=pinn.Reference.from_function(L, u, 41))
    sol = pinn.solve(problem, pinn.MLP(width=20, depth=3),
                     pinn.Strategy(adam_steps=200, lbfgs_steps=300, n_collocation=400,
                                   max_seconds=60), progress=False)
    assert sol.rel_l2() < 5e-3


def test_robin_on_a_disk_trains_to_the_analytic_solution():
    # laplace(u) = 4 with u + du/dn = 3 on the unit circle: u = x^2 + y^2 (soft, unique)
    g = pinn.Disk((0, 0), 1.0)
    problem = pinn.Problem(domain=g, residual=lambda u, x, y: pinn.laplacian(u, x, y) - 4,
                           conditions=[pinn.Robin(a=1.0, b=1.0, value=3.0)],
                           reference=pinn.Reference.from_function(g, lambda x, y: x**2 + y**2,
                                                                  31))
    sol = pinn.solve(problem, pinn.MLP(width=16, depth=2),
                     pinn.Strategy(adam_steps=200, lbfgs_steps=300, n_collocation=300,
                                   n_condition=100, max_seconds=60), progress=False)
    assert sol.rel_l2() < 1e-2


# -- script shapes, defaults, summaries ---------------------------------------------------------

README_SHAPED = '''
import torch
import fields.pinn as pinn

def residual(u, x):
    return pinn.grad(u, x, 2) + torch.pi ** 2 * torch.sin(torch.pi * x)

problem = pinn.Problem(
    domain=pinn.Interval(x=(0, 1)), residual=residual, conditions=[pinn.Dirichlet(0.0)],
    reference=pinn.Reference.from_function(pinn.Interval(x=(0, 1)),
                                           lambda x: __import__("numpy").sin(torch.pi * x)))
target = 1e-3
solution = pinn.solve(problem, strategy=pinn.Strategy(adam_steps=300, lbfgs_steps=300))
raise SystemExit("the lines after pinn.solve must not run under fields solve")
'''


def test_fields_solve_runs_a_readme_shaped_script(tmp_path):
    from fields.pinn.run import load_case, load_solution, run_case

    script = tmp_path / "my_problem.py"
    script.write_text(README_SHAPED)
    case = load_case(str(script))  # stops at pinn.solve: nothing trained yet
    assert case.target == 1e-3 and case.strategy.adam_steps == 300
    assert case.network == pinn.MLP(width=20, depth=3)  # the 1-D default network
    m = run_case(case, tmp_path / "out", overrides={"max_seconds": 20.0, "total_steps": 400},
                 progress=False, pictures=False)
    assert m["steps"] <= 400 and m["met_target"], m
    assert m["strategy_config"]["n_collocation"] == 128  # sized for 1-D
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["conditions"][0]["enforced"] == "exact"
    sol, _ = load_solution(tmp_path / "out" / "checkpoint.pt")  # rebuilt from the script
    assert abs(sol(x=0.5)[0] - 1.0) < 1e-2


def test_summary_says_which_conditions_were_exact(tmp_path):
    from fields.pinn.run import Case, run_case

    box = pinn.Box(x=(0, 1), y=(0, 1))
    problem = pinn.Problem(
        domain=box, residual=lambda u, x, y: pinn.laplacian(u, x, y),
        conditions=[pinn.Dirichlet(1.0, on="x-"), pinn.Dirichlet(0.0, on="x+"),
                    pinn.Neumann(0.0, on="y")],
        reference=pinn.Reference.from_function(box, lambda x, y: 1 - x, 21))
    case = Case(problem, pinn.MLP(width=8, depth=2),
                pinn.Strategy(adam_steps=20, lbfgs_steps=0, n_collocation=64, n_condition=32))
    m = run_case(case, None, progress=False)
    # two values on two faces: both exact (blended); the Neumann condition: soft
    assert "hard BC 2/3" in m["strategy"]
    assert [c["enforced"] for c in m["conditions"]] == ["exact", "exact", "soft"]
    assert m["conditions"][0]["max_error"] < 1e-12 < m["conditions"][2]["max_error"]
    # the same without exact conditions: said so, with the boundary errors it left
    case.strategy = pinn.Strategy(adam_steps=20, lbfgs_steps=0, n_collocation=64,
                                  n_condition=32, hard=False)
    m = run_case(case, None, progress=False)
    assert "soft BC" in m["strategy"] and "hard BC" not in m["strategy"]
    assert [c["enforced"] for c in m["conditions"]] == ["soft", "soft", "soft"]
    assert all(c["max_error"] > 1e-6 for c in m["conditions"])
    # one constant on both faces: exact, and said so
    problem2 = pinn.Problem(domain=box, residual=lambda u, x, y: pinn.laplacian(u, x, y),
                            conditions=[pinn.Dirichlet(0.0, on="x-"),
                                        pinn.Dirichlet(0.0, on="x+")])
    m2 = run_case(Case(problem2, pinn.MLP(width=8, depth=2),
                       pinn.Strategy(adam_steps=5, lbfgs_steps=0, n_collocation=32)), None,
                  progress=False)
    assert "hard BC" in m2["strategy"] and m2["conditions"][0]["max_error"] < 1e-12


def test_defaults_scale_with_dimension():
    s = pinn.Strategy()
    assert (s.sized(1).n_collocation, s.sized(1).n_condition) == (128, 64)
    assert s.sized(2).n_collocation == 4096 and s.sized(3).n_collocation == 8192
    assert pinn.Strategy(n_collocation=77).sized(1).n_collocation == 77
    from fields.pinn.solve import default_network

    assert default_network(1).width < default_network(2).width < default_network(3).width


# -- device ------------------------------------------------------------------------------------


def _device_problem():
    dom = pinn.Domain(pinn.Disk((0, 0), 1.0), t=(0, 0.5))
    return pinn.Problem(domain=dom,
                        residual=lambda u, x, y, t: pinn.grad(u, t) - 0.1 * pinn.laplacian(u, x, y),
                        conditions=[pinn.Initial(lambda x, y: 1 - x**2 - y**2),
                                    pinn.Dirichlet(0.0)],
                        reference=pinn.Reference.from_function(
                            dom, lambda x, y, t: 1 - x**2 - y**2, 9))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_solve_on_a_device(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    s = pinn.Strategy(adam_steps=30, lbfgs_steps=20, n_collocation=256, n_condition=64,
                      device=device, resample="rad", resample_every=10)
    assert s.resolved_dtype == ("float64" if device == "cpu" else "float32")
    before = torch.backends.cuda.matmul.allow_tf32
    seen = []
    sol = pinn.solve(_device_problem(), pinn.MLP(width=16, depth=2), s, progress=False,
                     callback=lambda rec: seen.append(torch.backends.cuda.matmul.allow_tf32))
    # TF32 off while training on a GPU, as it was afterwards
    assert torch.backends.cuda.matmul.allow_tf32 == before
    if device == "cuda":
        assert seen and not any(seen)
    assert sol.device.type == device and sol.dtype == s.torch_dtype
    out = sol(x=np.array([0.1, 0.2]), y=0.0, t=0.25)  # on the host, as numpy
    assert out.shape == (2, 1) and np.isfinite(out).all()
    from fields.pinn.run import condition_report

    assert [c["enforced"] for c in condition_report(sol)] == ["exact", "exact"]
    assert np.isfinite(sol.rel_l2())


def test_device_errors_are_clear():
    with pytest.raises(ValueError, match=r"Strategy.device = 'gpu': expected 'cpu', 'cuda'"):
        pinn.Strategy(device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"Strategy.device = 'cuda': --device cuda: torch"):
            pinn.solve(_device_problem(), pinn.MLP(width=4, depth=1),
                       pinn.Strategy(adam_steps=1, lbfgs_steps=0, device="cuda"),
                       progress=False)


def test_solution_figure_colour_range_ignores_nan(tmp_path, monkeypatch):
    """NaN in the reference (outside a non-box domain, or an output with no reference) leaves
    the colour range of the solution maps to the finite values."""
    import matplotlib.axes

    from fields.plots import write_pde_figure

    seen = []
    real = matplotlib.axes.Axes.imshow

    def spy(self, img, *args, **kw):
        seen.append((kw.get("vmin"), kw.get("vmax")))
        return real(self, img, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", spy)
    x, y = np.linspace(0, 1, 9), np.linspace(0, 2, 7)
    pred = np.stack([np.outer(x, y), np.full((9, 7), 0.5)], -1)
    ref = pred.copy()
    ref[0, 0, 0] = np.nan  # a point outside the domain
    ref[..., 1] = np.nan  # an output with no reference
    write_pde_figure(tmp_path / "s.png", [x, y], ("x", "y"), ("u", "p"), pred, ref)
    assert (tmp_path / "s.png").is_file()
    assert seen[0] == seen[1] == (0.0, 2.0)
    assert seen[3] == seen[4] == (0.5, 0.5)
