"""fields.pinn: derivatives, sampling, conditions, exact constraints, references, training
strategies, the built-in problem scripts and `fields solve`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import fields.pinn as pinn
from fields.pinn.conditions import value_columns
from fields.pinn.diff import CoordinateScope
from fields.pinn.field import Evaluator, Field
from fields.pinn.hard import OutputTransform
from fields.pinn.networks import Embedding
from fields.pinn.reference import allen_cahn, burgers
from fields.pinn.terms import Terms, resample

D64 = torch.float64


def leaves(*arrays):
    return [torch.as_tensor(a, dtype=D64).reshape(-1, 1).requires_grad_(True) for a in arrays]


# -- derivatives -----------------------------------------------------------------------------


@pytest.mark.parametrize("scoped", [False, True])
def test_grad_matches_closed_forms(scoped):
    rng = np.random.default_rng(0)
    x, t = leaves(rng.random(50), rng.random(50))
    scope = CoordinateScope([x, t]) if scoped else None
    if scope:
        scope.__enter__()
    try:
        u = torch.sin(3 * x) * t**3
        assert torch.allclose(pinn.grad(u, x), 3 * torch.cos(3 * x) * t**3)
        assert torch.allclose(pinn.grad(u, t), 3 * torch.sin(3 * x) * t**2)
        assert torch.allclose(pinn.grad(u, x, 2), -9 * torch.sin(3 * x) * t**3)
        assert torch.allclose(pinn.grad(u, x, 3), -27 * torch.cos(3 * x) * t**3)
        assert torch.allclose(pinn.grad(pinn.grad(u, x), t), 9 * torch.cos(3 * x) * t**2)
        assert torch.allclose(pinn.laplacian(u, x, t),
                              -9 * torch.sin(3 * x) * t**3 + 6 * torch.sin(3 * x) * t)
        # a function of x only has a zero t-derivative
        assert torch.equal(pinn.grad(torch.sin(x), t), torch.zeros_like(x))
    finally:
        if scope:
            scope.__exit__(None, None, None)


def test_grad_rejects_bad_input():
    x = torch.rand(5, 1, dtype=D64)
    with pytest.raises(ValueError, match="does not require grad"):
        pinn.grad(x * 2, x)
    (y,) = leaves(np.ones(5))
    with pytest.raises(ValueError, match="shape"):
        pinn.grad(torch.cat([y, y], 1), y)


def test_scope_caches_one_backward_per_output():
    x, t = leaves(np.linspace(0, 1, 7), np.linspace(1, 2, 7))
    calls = []
    orig = torch.autograd.grad

    def counting(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    u = x**2 * t
    with CoordinateScope([x, t]):
        torch.autograd.grad = counting
        try:
            ut, ux = pinn.grad(u, t), pinn.grad(u, x)
        finally:
            torch.autograd.grad = orig
    assert len(calls) == 1
    assert torch.allclose(ut, x**2) and torch.allclose(ux, 2 * x * t)


def test_second_derivative_through_fused_mlp_matches_torch_backend():
    from fields.nn.mlp import FusedMLP

    torch.manual_seed(0)
    a = FusedMLP(2, 1, 16, 2, "Tanh", bias=True, backend="torch")
    b = FusedMLP(2, 1, 16, 2, "Tanh", bias=True, backend="auto")
    b.load_state_dict(a.state_dict())
    x, y = leaves(np.linspace(-1, 1, 64), np.linspace(0, 1, 64))
    x32, y32 = (v.detach().float().requires_grad_(True) for v in (x, y))
    outs = []
    for net in (a, b):
        u = net(torch.cat([x32, y32], 1))
        uxx = pinn.grad(pinn.grad(u, x32), x32)
        (g,) = torch.autograd.grad(uxx.sum(), [net.weights[0]])
        outs.append((uxx.detach(), g))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-4)


# -- geometry --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["uniform", "lhs", "sobol", "grid"])
def test_box_sampling_stays_inside(method):
    box = pinn.Box(x=(-1, 2), t=(0, 0.5))
    pts = box.sample(1000, method, seed=3)
    assert pts.shape[1] == 2 and len(pts) >= 900
    assert (pts >= box.lo).all() and (pts <= box.hi).all()
    # roughly uniform: mean near the centre
    assert np.allclose(pts.mean(0), (box.lo + box.hi) / 2, atol=0.1)


def test_grid_sampling_on_faces_is_a_grid_of_the_face():
    box = pinn.Box(x=(0, 1), t=(0, 1))
    X = box.sample_slice("t", 0.0, 256, "grid")
    assert len(np.unique(X[:, 0])) == len(X) and (X[:, 1] == 0).all()
    X, _ = box.sample_faces(box.faces("x"), 200, "grid")
    assert len(np.unique(X[X[:, 0] == 0, 1])) == int((X[:, 0] == 0).sum())


def test_lbfgs_uses_its_whole_budget():
    problem = _poisson_1d()
    sol = pinn.solve(problem, pinn.MLP(width=16, depth=3),
                     pinn.Strategy(adam_steps=10, lbfgs_steps=250, n_collocation=256,
                                   eval_every=50, max_seconds=60), progress=False)
    assert sol.steps == 260


def test_tuple_dirichlet_values_do_not_crash_the_transform():
    problem = pinn.Problem(domain=pinn.Box(x=(0, 1), y=(0, 1)),
                           residual=lambda u, v, x, y: u + v, outputs=("u", "v"),
                           conditions=[pinn.Dirichlet((1.0, 0.0), on="y+", output=("u", "v")),
                                       pinn.Dirichlet(0.0, on=["x", "y-"], output=("u", "v"))])
    model = _field(problem)
    # two values on disjoint faces (a lid-driven cavity): both exact, blended between
    assert model.transform.satisfied == [0, 1]
    s = np.linspace(0.05, 0.95, 7)
    lid = torch.tensor(np.stack([s, np.ones_like(s)], 1), dtype=D64)
    walls = torch.tensor(np.concatenate([np.stack([np.zeros_like(s), s], 1),
                                         np.stack([np.ones_like(s), s], 1),
                                         np.stack([s, np.zeros_like(s)], 1)]), dtype=D64)
    with torch.no_grad():
        assert torch.allclose(model(lid), torch.tensor([1.0, 0.0], dtype=D64).expand(7, 2))
        assert torch.allclose(model(walls), torch.zeros(21, 2, dtype=D64), atol=1e-15)
        inside = model(torch.tensor([[0.5, 0.5], [0.3, 0.8]], dtype=D64))
    assert not torch.allclose(inside, torch.zeros_like(inside))
    # the same face twice with two values: neither can be exact
    clash = pinn.Problem(domain=pinn.Box(x=(0, 1), y=(0, 1)), residual=lambda u, x, y: u,
                         conditions=[pinn.Dirichlet(1.0, on="y+"), pinn.Dirichlet(0.0)])
    assert _field(clash).transform.satisfied == []


def test_box_faces_and_errors():
    box = pinn.Box(x=(0, 1), y=(0, 3), t=(0, 1))
    assert box.spatial == ("x", "y") and box.time == "t"
    assert box.faces(None) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert box.faces("y+") == [(1, 1)]
    X, which = box.sample_faces(box.faces("x"), 200)
    assert set(np.unique(X[:, 0])) == {0.0, 1.0}
    X, which = box.sample_faces(box.faces(None), 800)
    # y-faces are 3x smaller in area (x: 1 x 1) than x-faces (y: 3 x 1)
    n_x = int(np.isin(which, [0, 1]).sum())
    assert abs(n_x / len(which) - 0.75) < 0.02
    with pytest.raises(ValueError, match="low < high"):
        pinn.Box(x=(1, 0))
    with pytest.raises(ValueError, match="no coordinate 'z'"):
        box.faces("z")
    with pytest.raises(ValueError, match="unknown sampler"):
        box.sample(10, "halton")


# -- conditions and exact constraints ----------------------------------------------------------


def test_value_columns_shapes():
    x = torch.rand(6, 1, dtype=D64)
    assert value_columns(2.0, [x], 3, "c").shape == (6, 3)
    assert value_columns(lambda x: x[:, 0], [x], 1, "c").shape == (6, 1)
    assert value_columns(lambda x: (x, 2 * x), [x], 2, "c").shape == (6, 2)
    with pytest.raises(ValueError, match=r"expected \(6, 2\)"):
        value_columns(lambda x: torch.cat([x, x, x], 1), [x], 2, "Dirichlet")


def _field(problem, strategy=None, network=None):
    s = strategy or pinn.Strategy()
    tr = OutputTransform(problem.domain, problem.outputs, problem.conditions, enabled=s.hard,
                         explicit=problem.transform)
    emb = Embedding(problem.domain, dict.fromkeys(tr.periodic, s.periodic_harmonics))
    net = (network or pinn.MLP(width=16, depth=2)).build(emb.out_features,
                                                          len(problem.outputs))
    return Field(emb, net, tr)


def _max_condition_residual(problem, model, i):
    c = problem.conditions[i]
    pts = {k: torch.as_tensor(v, dtype=torch.int64 if v.dtype.kind == "i" else D64)
           for k, v in c.sample(problem.domain, 100, "uniform", 1).items()}
    r = c.residual(Evaluator(problem, model), pts, c.columns(problem.outputs))
    return float(r.detach().abs().max())


@pytest.mark.parametrize("name", ["burgers", "kovasznay", "wave", "allen_cahn", "heat_inverse"])
def test_hard_conditions_hold_exactly_at_initialisation(name):
    from fields.pinn.run import load_case

    if name == "allen_cahn":  # skip the reference solve: build the problem by hand
        problem = pinn.Problem(
            name="ac", domain=pinn.Box(x=(-1, 1), t=(0, 1)), residual=lambda u, x, t: u,
            conditions=[pinn.Initial(lambda x: x**2 * torch.cos(torch.pi * x)),
                        pinn.Periodic(on="x")])
    else:
        problem = load_case(name).problem
    model = _field(problem)
    assert model.transform.satisfied, "no condition was made exact"
    for i in model.transform.satisfied:
        if name == "allen_cahn" and isinstance(problem.conditions[i], pinn.Periodic):
            # x^2 cos(pi x) has a derivative jump across x = +-1: the values are periodic
            problem.conditions[i].derivatives = 0
        assert _max_condition_residual(problem, model, i) < 1e-12, problem.conditions[i]
    # and the soft ones do not hold by accident
    for i in range(len(problem.conditions)):
        if i not in model.transform.satisfied and not isinstance(problem.conditions[i],
                                                                 pinn.Data):
            assert _max_condition_residual(problem, model, i) > 1e-6


def test_hard_false_keeps_conditions_in_the_loss():
    problem = pinn.Problem(domain=pinn.Box(x=(0, 1)), residual=lambda u, x: u,
                           conditions=[pinn.Dirichlet(1.0), pinn.Periodic(on="x")])
    model = _field(problem, pinn.Strategy(hard=False))
    assert model.transform.satisfied == []
    assert _max_condition_residual(problem, model, 0) > 1e-3


def test_impossible_hard_condition_is_an_error():
    problem = pinn.Problem(domain=pinn.Box(x=(0, 1)), residual=lambda u, x: u,
                           conditions=[pinn.Neumann(1.0, hard=True)])
    with pytest.raises(ValueError, match="Neumann is marked hard=True"):
        _field(problem)


def test_wrong_explicit_transform_is_caught():
    problem = pinn.Problem(domain=pinn.Box(x=(0, 1)), residual=lambda u, x: pinn.grad(u, x, 2),
                           conditions=[pinn.Dirichlet(0.0, hard=True)],
                           transform=lambda c, raw: raw)  # does not vanish on the boundary
    with pytest.raises(ValueError, match="does not hold"):
        pinn.solve(problem, pinn.MLP(width=8, depth=1),
                   pinn.Strategy(adam_steps=1, lbfgs_steps=0), progress=False)


def test_periodic_embedding_is_periodic_in_value_and_derivative():
    problem = pinn.Problem(domain=pinn.Box(x=(0, 2 * math.pi), t=(0, 1)),
                           residual=lambda u, x, t: u, conditions=[pinn.Periodic(on="x")])
    model = _field(problem, pinn.Strategy(periodic_harmonics=3))
    assert _max_condition_residual(problem, model, 0) < 1e-12


def test_fourier_features_per_coordinate():
    """A scale per coordinate: features vary along x only, t passes through raw, and a
    coordinate with a periodic embedding keeps it inside the features."""
    box = pinn.Box(x=(0, 1), t=(0, 2))
    emb = Embedding(box, fourier=8, fourier_sigma={"x": 5.0, "t": 0.0}, seed=3)
    assert emb.out_features == 2 * 8 + 1
    X = torch.tensor([[0.3, 0.0], [0.3, 1.0], [0.3, 2.0], [0.7, 1.0]], dtype=D64)
    h = emb(X)
    # the features of points that differ only in t are equal; the raw t is the last column
    assert torch.allclose(h[0, :16], h[1, :16]) and torch.allclose(h[1, :16], h[2, :16])
    assert not torch.allclose(h[1, :16], h[3, :16])
    assert torch.allclose(h[:3, 16], torch.tensor([-1.0, 0.0, 1.0], dtype=D64))
    assert torch.all(emb.B[1] == 0) and emb.B[0].abs().max() > 2.0  # x's row at scale 5
    # one number: every coordinate inside the features, none raw (as before)
    assert Embedding(box, fourier=8, fourier_sigma=2.0).out_features == 16
    per = Embedding(box, {"x": 2}, fourier=4, fourier_sigma={"t": 1.0})
    assert per.out_features == 2 * 4 + 4  # x's four periodic columns raw beside t's features
    with pytest.raises(ValueError, match="no coordinate 'y'"):
        Embedding(box, fourier=4, fourier_sigma={"y": 1.0})
    for bad in ({"x": -1.0}, {"x": 0.0}, {}, 0.0):
        with pytest.raises(ValueError, match=r"Strategy\.fourier_sigma"):
            pinn.Strategy(fourier_features=4, fourier_sigma=bad)
    s = pinn.Strategy.from_dict({"fourier_features": 4, "fourier_sigma": {"x": 5, "t": 0}})
    assert s.fourier_sigma == {"x": 5, "t": 0}


def test_problem_validation_names_the_problem():
    box = pinn.Box(x=(0, 1))
    with pytest.raises(ValueError, match="unknown output 'v'"):
        pinn.Problem(name="p", domain=box, residual=lambda u, x: u,
                     conditions=[pinn.Dirichlet(0.0, output="v")])
    with pytest.raises(ValueError, match="also coordinate names"):
        pinn.Problem(domain=box, residual=lambda x, x2: x, outputs=("x",))
    bad = pinn.Problem(name="bad", domain=box, residual=lambda u, x: torch.cat([u, u], 1))
    with pytest.raises(ValueError, match="Problem 'bad': residual equation 0"):
        pinn.solve(bad, pinn.MLP(width=8, depth=1), pinn.Strategy(adam_steps=1, lbfgs_steps=0),
                   progress=False)
    with pytest.raises(ValueError, match=r"Strategy.weighting = 'softadapt': expected"):
        pinn.Strategy(weighting="softadapt")
    with pytest.raises(ValueError, match="Strategy: unknown key"):
        pinn.Strategy.from_dict({"adam": 3})


# -- references --------------------------------------------------------------------------------


def test_burgers_reference_solves_the_equation():
    nu = 0.01 / math.pi
    x = np.linspace(-1, 1, 801)
    t = np.array([0.0, 0.2, 0.2 + 1e-4, 0.6])
    u = burgers(x, t, nu)
    assert np.allclose(u[:, 0], -np.sin(np.pi * x))
    assert np.abs(u[[0, -1], 1:]).max() < 1e-10  # boundary values
    assert np.allclose(u, -u[::-1], atol=1e-12)  # odd in x
    # the PDE by finite differences at t = 0.2 (before the shock is steep)
    dx = x[1] - x[0]
    ut = (u[:, 2] - u[:, 1]) / 1e-4
    um = 0.5 * (u[:, 1] + u[:, 2])
    ux = np.gradient(um, dx)
    uxx = np.gradient(ux, dx)
    r = ut + um * ux - nu * uxx
    assert np.abs(r[5:-5]).max() < 2e-2 * np.abs(ut[5:-5]).max()
    # converged in the quadrature
    u2 = burgers(x[::10], t, nu, n_quad=8001, width=14)
    assert np.abs(u2 - u[::10]).max() < 1e-10


def test_allen_cahn_reference_matches_explicit_rk4():
    t_out = np.array([0.0, 0.05])
    x, _, u = allen_cahn(nx=64, t_out=t_out, dt=1e-4)
    # an independent solver: spectral derivative + classical RK4 with a tiny step
    k = np.fft.fftfreq(64, d=2.0 / 64) * 2 * np.pi

    def f(v):
        vxx = np.real(np.fft.ifft(-(k**2) * np.fft.fft(v)))
        return 1e-4 * vxx + 5 * v - 5 * v**3

    v = x**2 * np.cos(np.pi * x)
    h = 1e-5
    for _ in range(5000):
        k1 = f(v)
        k2 = f(v + h / 2 * k1)
        k3 = f(v + h / 2 * k2)
        k4 = f(v + h * k3)
        v = v + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    assert np.allclose(u[:, 0], x**2 * np.cos(np.pi * x))
    assert np.abs(u[:, 1] - v).max() < 1e-9


# -- training --------------------------------------------------------------------------------


def _poisson_1d(hard=True, neumann=False):
    def residual(u, x):
        return pinn.grad(u, x, 2) + math.pi**2 * torch.sin(math.pi * x)

    conds = [pinn.Dirichlet(0.0, on="x-")]
    conds.append(pinn.Neumann(-math.pi, on="x+") if neumann else pinn.Dirichlet(0.0, on="x+"))
    box = pinn.Box(x=(0, 1))
    return pinn.Problem(name="p1", domain=box, residual=residual, conditions=conds,
                        reference=pinn.Reference.from_function(
                            box, lambda x: np.sin(np.pi * x), 201))


def test_neumann_on_the_low_face_points_outward():
    # u = (x - 2)^2 - 1: u(1) = 0, and the outward derivative at x = 0 is -u'(0) = 4
    def residual(u, x):
        return pinn.grad(u, x, 2) - 2.0

    box = pinn.Box(x=(0, 1))
    problem = pinn.Problem(name="nlow", domain=box, residual=residual,
                           conditions=[pinn.Dirichlet(0.0, on="x+"), pinn.Neumann(4.0, on="x-")],
                           reference=pinn.Reference.from_function(
                               box, lambda x: (x - 2) ** 2 - 1, 101))
    sol = pinn.solve(problem, pinn.MLP(width=16, depth=2),
                     pinn.Strategy(adam_steps=200, lbfgs_steps=300, n_collocation=64,
                                   n_condition=4, lr=1e-2, max_seconds=60), progress=False)
    assert sol.rel_l2() < 1e-3


@pytest.mark.parametrize("hard,neumann,tol", [(True, False, 1e-4), (False, False, 1e-3),
                                              (True, True, 1e-3)])
def test_solve_1d_poisson(hard, neumann, tol):
    problem = _poisson_1d(hard, neumann)
    sol = pinn.solve(problem, pinn.MLP(width=16, depth=2),
                     pinn.Strategy(adam_steps=200, lbfgs_steps=400, n_collocation=128,
                                   n_condition=8, hard=hard, lr=1e-2, max_seconds=60),
                     progress=False)
    assert sol.rel_l2() < tol
    # the solution is callable with named coordinates
    assert abs(float(sol(x=0.5)[0]) - 1.0) < 10 * tol
    assert sol.history and sol.history[-1]["phase"] == "L-BFGS"


def test_multistage_reduces_the_error_by_orders():
    problem = _poisson_1d()
    s = pinn.Strategy(adam_steps=200, lbfgs_steps=200, n_collocation=128, sampler="grid",
                      lr=1e-2, stages=2, stage_adam_steps=100, stage_lbfgs_steps=400,
                      max_seconds=120)
    errors = {}

    def cb(rec):
        errors.setdefault(rec["stage"], []).append(rec["rel_l2"])

    pinn.solve(problem, pinn.MLP(width=16, depth=2), s, progress=False, callback=cb)
    assert errors[2][-1] < errors[1][-1] / 20, errors


def test_inverse_problem_recovers_the_coefficient():
    a = pinn.Unknown(0.3, name="a", positive=True)

    def residual(u, x):
        return pinn.grad(u, x, 2) + a() * math.pi**2 * torch.sin(math.pi * x)

    xs = np.linspace(0.05, 0.95, 20)
    problem = pinn.Problem(name="inv", domain=pinn.Box(x=(0, 1)), residual=residual,
                           unknowns=[a],
                           conditions=[pinn.Dirichlet(0.0),
                                       pinn.Data(points={"x": xs},
                                                 values=2.0 * np.sin(np.pi * xs))])
    sol = pinn.solve(problem, pinn.MLP(width=16, depth=2),
                     pinn.Strategy(adam_steps=300, lbfgs_steps=300, n_collocation=128,
                                   lr=1e-2, max_seconds=60), progress=False)
    assert abs(sol.unknowns()["a"] - 2.0) < 1e-3


def test_gradnorm_and_causal_weights():
    problem = pinn.Problem(
        domain=pinn.Box(x=(0, 1), t=(0, 1)),
        residual=lambda u, x, t: pinn.grad(u, t) - 0.1 * pinn.grad(u, x, 2),
        conditions=[pinn.Initial(lambda x: torch.sin(torch.pi * x), hard=False),
                    pinn.Dirichlet(0.0, on="x", hard=False)])
    s = pinn.Strategy(adam_steps=30, lbfgs_steps=0, weighting="gradnorm", weight_every=10,
                      causal=5.0, causal_chunks=8, n_collocation=512, hard=False)
    model = _field(problem, s)
    terms = Terms(problem, model, s, D64, 0)
    from fields.pinn.terms import trainable_params, update_gradnorm

    update_gradnorm(terms, trainable_params(model, problem))
    lam = terms.lam
    assert lam.shape == (3,) and torch.isfinite(lam).all() and not torch.allclose(
        lam, torch.ones(3, dtype=D64))
    terms.term_losses()
    w = terms.causal_w
    assert w is not None and w[0] == 1.0 and (w[1:] <= w[:-1]).all() and w[-1] < 1.0


def test_ntk_traces_match_per_point_gradients():
    # a 2-equation system (u, v) and a soft condition: the Hutchinson estimate of each term's
    # per-point NTK trace against the exact sum of per-residual squared gradients
    problem = pinn.Problem(
        domain=pinn.Box(x=(0, 1), y=(0, 1)), outputs=("u", "v"),
        residual=lambda u, v, x, y: [pinn.grad(u, x) - v, pinn.laplacian(v, x, y) + u * v],
        conditions=[pinn.Dirichlet(0.0, on="x", output="u", hard=False)])
    s = pinn.Strategy(n_collocation=24, n_condition=16, hard=False)
    torch.manual_seed(0)
    model = _field(problem, s)
    terms = Terms(problem, model, s, D64, 0)
    from fields.pinn.terms import ntk_traces, trainable_params

    params = trainable_params(model, problem)
    exact = []
    for r, n in terms.term_residuals():
        total = 0.0
        for i in range(r.numel()):
            g = torch.autograd.grad(r[i], params, retain_graph=True, allow_unused=True)
            total += sum(float((x**2).sum()) for x in g if x is not None)
        exact.append(total / n)
    exact = torch.tensor(exact, dtype=D64)
    est = ntk_traces(terms, params, probes=400, generator=torch.Generator().manual_seed(1))
    assert len(exact) == 2 and (exact > 0).all()
    assert torch.allclose(est, exact, rtol=0.15), (est, exact)


def test_ntk_weighting_balances_terms():
    problem = pinn.Problem(
        domain=pinn.Box(x=(0, 1), t=(0, 1)),
        residual=lambda u, x, t: pinn.grad(u, t) - 0.1 * pinn.grad(u, x, 2),
        conditions=[pinn.Initial(lambda x: torch.sin(torch.pi * x), hard=False),
                    pinn.Dirichlet(0.0, on="x", hard=False)])
    s = pinn.Strategy(adam_steps=40, lbfgs_steps=0, weighting="ntk", weight_every=10,
                      weight_momentum=0.0, ntk_probes=64, n_collocation=256, hard=False,
                      max_seconds=60)
    model = _field(problem, s)
    terms = Terms(problem, model, s, D64, 0)
    from fields.pinn.terms import ntk_traces, trainable_params, update_ntk

    params = trainable_params(model, problem)
    update_ntk(terms, params, 0)
    # the same probes as the update (its generator's seed): with momentum 0 the weights are
    # sum / trace, so the weighted traces are all equal, where the traces differ
    traces = ntk_traces(terms, params, 64, torch.Generator().manual_seed(s.seed + 7))
    balanced = terms.lam * traces
    assert torch.allclose(balanced, traces.sum().expand(3), rtol=1e-9)
    assert traces.max() / traces.min() > 2
    # the PDE's second derivatives make its kernel the largest: the smallest weight
    assert int(torch.argmin(terms.lam)) == 0
    sol = pinn.solve(problem, pinn.MLP(width=16, depth=2), s, progress=False)
    assert math.isfinite(sol.history[-1]["loss"])
    with pytest.raises(ValueError, match="weighting"):
        pinn.Strategy(weighting="ntk-ish")


def test_rad_resampling_follows_the_residual():
    problem = pinn.Problem(domain=pinn.Box(x=(0, 1)),
                           residual=lambda u, x: 0 * u + (x > 0.5).to(x.dtype))
    s = pinn.Strategy(n_collocation=256, resample="rad", rad_c=0.0)
    terms = Terms(problem, _field(problem, s), s, D64, 0)
    resample(terms, 1)
    assert len(terms.X) == 256 and (terms.X[:, 0] > 0.5).all()
    s2 = pinn.Strategy(n_collocation=256, resample="rar", rar_add=32)
    terms = Terms(problem, _field(problem, s2), s2, D64, 0)
    resample(terms, 1)
    assert len(terms.X) == 288 and (terms.X[256:, 0] > 0.5).all()


@pytest.mark.parametrize("spec", [
    pinn.MLP(width=8, depth=2, activation="wavelet"),
    pinn.MLP(width=8, depth=2, modified=True, factorized=True),
    pinn.MLP(width=8, depth=2, first_scale=10.0),
    pinn.MLP(width=16, depth=2, backend="fused"),
    pinn.Gaussians(n=64, features=4, width=8),
])
def test_networks_train_and_differentiate(spec):
    problem = _poisson_1d()
    sol = pinn.solve(problem, spec, pinn.Strategy(adam_steps=100, lbfgs_steps=0,
                                                  n_collocation=64, lr=1e-2),
                     progress=False)
    first = sol.history[0]["loss"]
    assert sol.history[-1]["loss"] < first
    # pinn.grad through the network agrees with central differences of its values
    x = torch.linspace(0.1, 0.9, 9, dtype=D64)[:, None].requires_grad_(True)
    u = sol.model(x)
    du = pinn.grad(u, x)
    d2u = pinn.grad(du, x)
    h = 1e-4
    with torch.no_grad():
        up, um, u0 = sol.model(x + h), sol.model(x - h), sol.model(x)
    tol = 1e-3 * float(u0.abs().max() + 1)
    assert torch.allclose(du, (up - um) / (2 * h), atol=tol)
    assert torch.allclose(d2u, (up - 2 * u0 + um) / h**2, atol=100 * tol)


def test_bad_network_spec():
    with pytest.raises(ValueError, match="unknown PINN activation"):
        pinn.MLP(activation="relu6")
    with pytest.raises(ValueError, match="backend='fused'"):
        pinn.MLP(modified=True, backend="fused")


# -- the built-in problems and the command line ------------------------------------------------


def test_every_builtin_problem_builds():
    from fields.pinn.run import builtin_names, load_case

    names = builtin_names()
    for required in ("burgers", "allen_cahn", "convection", "poisson", "helmholtz", "heat",
                     "wave", "kovasznay", "reaction", "multistage", "heat_inverse"):
        assert required in names
    for n in names:
        if n in ("allen_cahn", "cylinder"):
            # their references take a while (spectral solve; a 1/100 finite-element mesh):
            # covered by the CLI test and tests/test_pinn_fem.py on a coarser mesh
            continue
        case = load_case(n)
        assert case.problem.reference is not None and case.target is not None


def test_taylor_green_exact_solution_satisfies_its_residual():
    """The built-in unsteady Navier-Stokes problem: its closed form makes every residual
    vanish (autograd), and a wrong viscosity does not."""
    import importlib.util

    from fields.pinn.diff import CoordinateScope
    from fields.pinn.run import scenes_dir

    spec = importlib.util.spec_from_file_location("tg", scenes_dir() / "taylor_green.py")
    tg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tg)
    g = torch.Generator().manual_seed(0)
    x, y = (2 * math.pi * torch.rand(64, 1, generator=g, dtype=D64) for _ in range(2))
    t = 2 * torch.rand(64, 1, generator=g, dtype=D64)
    for c in (x, y, t):
        c.requires_grad_(True)
    with CoordinateScope([x, y, t]):
        u, v, p = tg.exact(x, y, t, torch)
        assert max(float(r.detach().abs().max()) for r in tg.residual(u, v, p, x, y, t)) < 1e-12
        u2, v2, p2 = (c * torch.exp(0.1 * t) for c in (u, v, p))  # decays at the wrong rate
        assert float(tg.residual(u2, v2, p2, x, y, t)[0].detach().abs().max()) > 1e-2
    u0, v0 = tg.initial(x.detach(), y.detach())
    e0 = tg.exact(x, y, 0 * t, torch)
    assert torch.allclose(u0, e0[0].detach()) and torch.allclose(v0, e0[1].detach())
    case = tg.build()
    gauge = case.problem.conditions[-1].resolved(case.problem.domain)
    _, _, pg = tg.exact(gauge.points["x"], gauge.points["y"], gauge.points["t"])
    assert np.abs(pg).max() < 1e-12  # the gauge line is where the exact pressure is 0


def test_cavity_corner_flow_is_stokes_flow_and_meets_the_walls():
    """The cavity's corner enrichment: Taylor's scraper flow solves Stokes' equations (its
    pressure included) with u = 1 on the sliding wall and 0 on the resting one; the output
    transform meets every wall condition for any network output, 0 at the corners; a wrong
    pressure does not solve Stokes' equations."""
    import importlib.util

    from fields.pinn.run import scenes_dir

    spec = importlib.util.spec_from_file_location("cav", scenes_dir() / "cavity.py")
    cav = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cav)
    g = torch.Generator().manual_seed(0)
    X, Y = (torch.rand(128, 1, generator=g, dtype=D64).requires_grad_(True) for _ in range(2))
    U, V, P = cav.corner(X, Y)

    def d(a, b):
        return torch.autograd.grad(a.sum(), b, create_graph=True)[0]

    def lap(a):
        return d(d(a, X), X) + d(d(a, Y), Y)

    for p in (P, 2 * P):
        err = max(float((d(p, X) - lap(U) / cav.RE).detach().abs().max()),
                  float((d(p, Y) - lap(V) / cav.RE).detach().abs().max()))
        assert (err < 1e-10) == (p is P), err
    assert float((d(U, X) + d(V, Y)).detach().abs().max()) < 1e-12
    t = torch.linspace(1e-3, 1 - 1e-3, 64, dtype=D64)[:, None]
    z = torch.zeros_like(t)
    lid, wall = cav.corner(t, z), cav.corner(z, t)
    assert torch.allclose(lid[0], torch.ones_like(t)) and float(lid[1].abs().max()) < 1e-15
    assert max(float(wall[0].abs().max()), float(wall[1].abs().max())) < 1e-15
    raw = torch.randn(64, 3, generator=g, dtype=D64)
    one = torch.ones_like(t)
    for (x, y), u in [((t, one), 1.0), ((z, t), 0.0), ((one, t), 0.0), ((t, z), 0.0)]:
        out = cav.transform({"x": x, "y": y}, raw)
        assert float((out[:, 0] - u).abs().max()) < 1e-14
        assert float(out[:, 1].abs().max()) < 1e-14
    cx = torch.tensor([[0.0], [1.0]], dtype=D64, requires_grad=True)
    corners = cav.transform({"x": cx, "y": torch.ones(2, 1, dtype=D64)}, raw[:2])
    assert float(corners[:, :2].detach().abs().max()) == 0.0
    # derivatives at a corner point itself are finite (DeepXDE puts residual points there)
    assert bool(torch.isfinite(torch.autograd.grad(corners.sum(), cx)[0]).all())


def test_load_case_errors(tmp_path):
    from fields.pinn.run import load_case

    with pytest.raises(ValueError, match="unknown problem 'nope'; built-in problems: "):
        load_case("nope")
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ValueError, match=r"neither calls pinn.solve\(problem, ...\) nor defines "
                                         r"build\(\)"):
        load_case(str(bad))


def test_builtin_problems_ship_inside_the_package(tmp_path, monkeypatch):
    import setuptools

    from fields.pinn.run import builtin_names, scenes_dir

    assert "fields.scenes.pde" in setuptools.find_packages(
        str(scenes_dir().parents[2]), include=["fields*"])
    assert scenes_dir().parent.parent.name == "fields" and (scenes_dir() / "heat.py").is_file()
    monkeypatch.chdir(tmp_path)  # found from any working directory
    assert "heat" in builtin_names()


def _solve(args, expect=0):
    from typer.testing import CliRunner

    from fields.cli import app

    r = CliRunner().invoke(app, ["solve", *args])
    assert r.exit_code == expect, r.output
    return r


TINY = '{"n_collocation": 128, "n_condition": 32, "eval_every": 10}'


def test_cli_solve_writes_outputs(tmp_path):
    r = _solve(["heat", "--output", str(tmp_path / "h"), "--adam-steps", "30",
                "--lbfgs-steps", "20", "--config", '{"n_collocation": 256}'])
    m = json.loads((tmp_path / "h" / "metrics.json").read_text())
    assert list(m)[:3] == ["steps", "seconds", "wall_seconds"]
    assert m["problem"] == "heat" and 0 < m["rel_l2"] < 1 and m["steps"] == 50
    assert m["wall_seconds"] >= m["seconds"] > 0 and "target" in m and "met_target" in m
    for f in ("config.json", "solution.png", "history.png", "solution.npz", "checkpoint.pt"):
        assert (tmp_path / "h" / f).is_file()
    c = json.loads((tmp_path / "h" / "config.json").read_text())
    assert c["kind"] == "pinn" and c["input"] == "heat" and c["problem"] == "heat"
    assert c["seed"] == 0 and c["steps"] == 50 and c["script"] == "heat"
    assert c["config"]["n_collocation"] == 256 and c["config"]["adam_steps"] == 30
    assert c["network"]["type"] == "MLP" and c["network"]["width"] == 32
    assert "deprecated" not in r.output
    _solve(["nope"], 2).output.index("unknown problem 'nope'")
    assert "not valid JSON" in _solve(["heat", "--config", "{bad"], 2).output
    assert "Strategy: unknown key 'adam'" in _solve(["heat", "--config", '{"adam": 1}'], 2).output
    assert "expected a JSON object" in _solve(["heat", "--config", '["x"]'], 2).output
    assert "give problem NAMES or --all" in _solve([], 2).output
    assert "--steps must be >= 1" in _solve(["heat", "--steps", "0"], 2).output
    assert "--max-seconds must be" in _solve(["heat", "--max-seconds", "-1"], 2).output
    assert "one problem" in _solve(["heat", "poisson", "--resume", str(tmp_path / "h" /
                                                                      "checkpoint.pt")], 2).output
    # several problems: one sub-folder each; the old --strategy still works, with one line
    r = _solve(["heat", "poisson", "--output", str(tmp_path / "two"), "--adam-steps", "3",
                "--lbfgs-steps", "2", "--strategy", '{"n_collocation": 64}'])
    assert r.output.count("deprecated: --strategy is now --config") == 1
    for name in ("heat", "poisson"):
        c = json.loads((tmp_path / "two" / name / "config.json").read_text())
        assert c["config"]["n_collocation"] == 64
        assert json.loads((tmp_path / "two" / name / "metrics.json").read_text())["steps"] == 5


def test_cli_solve_default_folder_and_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.json").write_text(TINY)
    _solve(["heat", "--config", "s.json", "--steps", "4"])
    (run,) = (tmp_path / "outputs" / "heat" / "pinn").iterdir()
    c = json.loads((run / "config.json").read_text())
    assert c["config"]["n_collocation"] == 128 and c["config"]["total_steps"] == 4
    assert json.loads((run / "metrics.json").read_text())["steps"] == 4


def test_steps_is_the_total_of_adam_and_lbfgs(tmp_path):
    from fields.pinn.task import plan

    s = pinn.Strategy(adam_steps=1000, lbfgs_steps=3000)
    assert [p.steps for p in plan(s)] == [1000, 3000]
    assert [p.steps for p in plan(s, 100)] == [100, 0]
    assert [p.steps for p in plan(s, 2500)] == [1000, 1500]
    assert [p.steps for p in plan(s, 6000)] == [1000, 5000]
    s3 = pinn.Strategy(adam_steps=10, lbfgs_steps=20, stages=3, stage_adam_steps=5,
                       stage_lbfgs_steps=7)
    assert [p.steps for p in plan(s3, 40)] == [10, 20, 5, 5, 0, 0]
    assert [p.steps for p in plan(s3, 60)] == [10, 20, 5, 7, 5, 13]
    assert [p.steps for p in plan(pinn.Strategy(adam_steps=10, lbfgs_steps=0), 25)] == [25, 0]
    _solve(["heat", "--output", str(tmp_path / "a"), "--adam-steps", "30", "--steps", "40",
            "--config", TINY])
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["steps"] == 40
    hist = json.loads((tmp_path / "a" / "history.json").read_text())
    assert max(h["step"] for h in hist if h["phase"] == "Adam") == 30
    assert max(h["step"] for h in hist if h["phase"] == "L-BFGS") == 40


def test_seed_is_used(tmp_path):
    rel = {}
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        _solve(["heat", "--output", str(tmp_path / name), "--steps", "6", "--seed", seed,
                "--config", TINY])
        rel[name] = json.loads((tmp_path / name / "metrics.json").read_text())["rel_l2"]
        assert json.loads((tmp_path / name / "config.json").read_text())["seed"] == int(seed)
    assert rel["a"] == rel["b"] != rel["c"]


@pytest.mark.parametrize("first", ["25", "30"])  # stopped in Adam / in L-BFGS
def test_resume_continues_the_run(tmp_path, first):
    budget = ["--adam-steps", "20" if first == "30" else "40", "--lbfgs-steps",
              "40" if first == "30" else "20", "--config", TINY]
    _solve(["heat", "--output", str(tmp_path / "whole"), *budget])
    _solve(["heat", "--output", str(tmp_path / "part"), "--steps", first, *budget])
    assert json.loads((tmp_path / "part" / "metrics.json").read_text())["steps"] == int(first)
    _solve(["heat", "--output", str(tmp_path / "rest"), *budget, "--resume",
            str(tmp_path / "part" / "checkpoint.pt")])
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    rest = json.loads((tmp_path / "rest" / "metrics.json").read_text())
    assert rest["steps"] == whole["steps"] == 60
    assert rest["rel_l2"] == pytest.approx(whole["rel_l2"], rel=1e-9, abs=0)
    c = json.loads((tmp_path / "rest" / "config.json").read_text())
    assert c["resume"].endswith("checkpoint.pt")
    # a changed strategy (not a budget), another problem, a missing file: refused
    r = _solve(["heat", "--output", str(tmp_path / "x"), *budget, "--resume",
                str(tmp_path / "part" / "checkpoint.pt"), "--config", '{"lr": 0.1}'], 2)
    assert "changed: lr" in r.output
    r = _solve(["poisson", "--output", str(tmp_path / "y"), "--resume",
                str(tmp_path / "part" / "checkpoint.pt")], 2)
    assert "this run solves 'poisson'" in r.output
    assert "no such checkpoint" in _solve(["heat", "--resume", str(tmp_path / "nope.pt")],
                                          2).output


def test_ctrl_c_leaves_a_checkpoint_that_loads_and_resumes(tmp_path, monkeypatch):
    from fields.pinn.run import load_solution
    from fields.pinn.task import PinnTask

    step = PinnTask.train_step

    def interrupted(self, *args):
        if self.global_step == 5:
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(PinnTask, "train_step", interrupted)
    r = _solve(["heat", "--output", str(tmp_path / "a"), "--steps", "9", "--config", TINY], 130)
    assert "interrupted" in r.output and "checkpoint.pt" in r.output
    ckpt = tmp_path / "a" / "checkpoint.pt"
    assert torch.load(ckpt, weights_only=True)["train_state"]["step"] == 5
    sol, _ = load_solution(ckpt)
    assert 0 < sol.rel_l2() < 10
    monkeypatch.setattr(PinnTask, "train_step", step)
    _solve(["heat", "--output", str(tmp_path / "b"), "--steps", "9", "--config", TINY,
            "--resume", str(ckpt)])
    _solve(["heat", "--output", str(tmp_path / "c"), "--steps", "9", "--config", TINY])
    b, c = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in "bc")
    assert b["steps"] == c["steps"] == 9 and b["rel_l2"] == pytest.approx(c["rel_l2"], rel=1e-9)


def test_resume_refuses_time_windows(tmp_path):
    _solve(["heat", "--output", str(tmp_path / "w"), "--steps", "4", "--config",
            '{"n_collocation": 64, "n_condition": 16, "time_windows": 2}'])
    r = _solve(["heat", "--output", str(tmp_path / "r"), "--steps", "8", "--config",
                '{"n_collocation": 64, "n_condition": 16, "time_windows": 2}', "--resume",
                str(tmp_path / "w" / "checkpoint.pt")], 2)
    assert "time windows" in r.output and "cannot be resumed" in r.output


def test_eval_of_a_solve_checkpoint_matches_its_metrics(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from fields.cli import app
    from fields.pinn.run import load_solution

    _solve(["heat", "--output", str(tmp_path / "h"), "--steps", "12", "--config", TINY])
    ckpt = tmp_path / "h" / "checkpoint.pt"
    m = json.loads((tmp_path / "h" / "metrics.json").read_text())
    r = CliRunner().invoke(app, ["eval", str(ckpt)])
    assert r.exit_code == 0, r.output
    e = json.loads((tmp_path / "h" / "eval.json").read_text())
    assert e["kind"] == "pinn" and e["problem"] == "heat"
    assert e["rel_l2"] == pytest.approx(m["rel_l2"], rel=1e-12)
    # a built-in problem is stored by name: the checkpoint loads from any working directory,
    # and an older checkpoint's path to a moved built-in script still finds it
    assert torch.load(ckpt, weights_only=True)["script"] == "heat"
    monkeypatch.chdir(tmp_path)
    sol, _ = load_solution(ckpt)
    assert sol.rel_l2() == pytest.approx(m["rel_l2"], rel=1e-12)
    old = torch.load(ckpt, weights_only=True)
    old["script"] = "/old/checkout/scenes/pde/heat.py"
    torch.save(old, tmp_path / "old.pt")
    assert load_solution(tmp_path / "old.pt")[0].rel_l2() == pytest.approx(m["rel_l2"],
                                                                            rel=1e-12)


def test_one_lbfgs_iteration_per_step_follows_one_long_call():
    """`make_lbfgs` + `Objective`, stepped once per iteration as the training loop does,
    takes the same path as one call of many iterations, with no extra evaluations."""
    from fields.pinn.task import Objective

    def rosenbrock(x):
        return ((1 - x[:-1]) ** 2).sum() + 100 * ((x[1:] - x[:-1] ** 2) ** 2).sum()

    def run(per_step):
        x = torch.nn.Parameter(torch.linspace(-1.5, 1.2, 6, dtype=D64))
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=1 if per_step else 40, max_eval=400,
                                history_size=5, tolerance_grad=0.0, tolerance_change=0.0,
                                line_search_fn="strong_wolfe")
        count = [0]

        def closure():
            count[0] += 1
            opt.zero_grad()
            loss = rosenbrock(x)
            loss.backward()
            return loss

        if per_step:
            objective = Objective([x], closure)
            for _ in range(40):
                opt.step(objective)
        else:
            opt.step(closure)
        return x.detach().clone(), count[0]

    (a, na), (b, nb) = run(False), run(True)
    assert torch.equal(a, b) and na == nb and float(rosenbrock(a)) < 1e-3


def test_cli_solve_all_json(tmp_path):
    from typer.testing import CliRunner

    from fields.cli import app

    r = CliRunner().invoke(app, [
        "solve", "--all", "--json", "--output", str(tmp_path), "--adam-steps", "3",
        "--lbfgs-steps", "2", "--config",
        '{"n_collocation": 128, "n_condition": 32, "stage_adam_steps": 2, '
        '"stage_lbfgs_steps": 2}'])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout[r.stdout.index("["):])
    names = {row["problem"] for row in rows}
    assert {"burgers", "allen_cahn", "kovasznay", "multistage", "heat_inverse"} <= names
    for row in rows:
        assert row["rel_l2"] is not None and row["seconds"] >= 0 and row["strategy"]
        assert (tmp_path / row["problem"] / "solution.png").is_file()
    inv = next(row for row in rows if row["problem"] == "heat_inverse")
    assert "alpha" in inv["unknowns"]


# -- checkpoints and the viewer ------------------------------------------------------------------

SCRIPT = '''
import numpy as np
import torch
import fields.pinn as pinn


def residual(u, x, t):
    return pinn.grad(u, t) - 0.1 * pinn.grad(u, x, 2)


def build():
    box = pinn.Box(x=(0, 1), t=(0, 1))
    exact = lambda x, t: np.exp(-0.1 * np.pi**2 * t) * np.sin(np.pi * x)
    problem = pinn.Problem(name="tiny_heat", domain=box, residual=residual,
                           conditions=[pinn.Initial(lambda x: torch.sin(torch.pi * x)),
                                       pinn.Dirichlet(0.0, on="x")],
                           reference=pinn.Reference.from_function(box, exact, (21, 11)))
    return pinn.Case(problem, pinn.MLP(width=8, depth=2),
                     pinn.Strategy(adam_steps=40, lbfgs_steps=20, n_collocation=128,
                                   STRATEGY), target=1e-2)
'''


@pytest.mark.parametrize("extra", ["", "stages=2, stage_adam_steps=5, stage_lbfgs_steps=5",
                                   "time_windows=3", "INVERSE"])
def test_checkpoint_round_trip(tmp_path, extra):
    from fields.pinn.run import load_case, load_solution, run_case

    script = tmp_path / "tiny.py"
    text = SCRIPT.replace("STRATEGY", "" if extra == "INVERSE" else extra)
    if extra == "INVERSE":  # an unknown diffusivity, started at 0.5
        text = text.replace("def residual(u, x, t):\n    return pinn.grad(u, t) - 0.1 *",
                            "K = pinn.Unknown(0.5, name='k', positive=True)\n\n\n"
                            "def residual(u, x, t):\n    return pinn.grad(u, t) - K() *")
        text = text.replace("residual=residual,", "residual=residual, unknowns=[K],")
        assert "unknowns=[K]" in text
    script.write_text(text)
    case = load_case(str(script))
    m = run_case(case, tmp_path / "out", progress=False, pictures=False)
    sol, payload = load_solution(tmp_path / "out" / "checkpoint.pt")
    assert payload["kind"] == "pinn" and payload["problem"] == "tiny_heat"
    pred = np.load(tmp_path / "out" / "solution.npz")["prediction"]
    for u in case.problem.unknowns:
        assert sol.unknowns()[u.name] == pytest.approx(m["unknowns"][u.name], rel=1e-12)
    assert np.allclose(sol.on_reference_grid(), pred, atol=1e-12)
    assert abs(sol.rel_l2() - m["rel_l2"]) < 1e-12


def test_load_solution_errors(tmp_path):
    from fields.checkpoint import save_checkpoint
    from fields.pinn.run import load_solution

    save_checkpoint(tmp_path / "a.pt", torch.nn.Linear(1, 1), {"kind": "pinn",
                                                                "script": "/nope.py"})
    with pytest.raises(ValueError, match="field 'script'"):
        load_solution(tmp_path / "a.pt")
    save_checkpoint(tmp_path / "b.pt", torch.nn.Linear(1, 1), {"kind": "sdf"})
    with pytest.raises(ValueError, match="expected 'pinn'"):
        load_solution(tmp_path / "b.pt")


def test_pinn_view_renders_the_solution(tmp_path):
    from test_viewer import opencv_look_at

    from fields.pinn.run import load_case, run_case
    from fields.pinn.view import PinnView
    from fields.viewer.camera import ViewCamera
    from fields.viewer.views import load_view

    script = tmp_path / "tiny.py"
    script.write_text(SCRIPT.replace("STRATEGY", ""))
    run_case(load_case(str(script)), tmp_path / "out", progress=False, pictures=False)
    view = load_view(str(tmp_path / "out" / "checkpoint.pt"))
    assert isinstance(view, PinnView) and set(view.modes) >= {"solution", "error", "profile"}
    c = view.initial_camera()
    cam = ViewCamera(opencv_look_at(c["position"], c["look_at"], c["up"]), c["position"],
                     c["fov"], 640, 480).cameras(64, 48)
    for mode in view.modes:
        view.settings = {"t": 0.5}
        pic = view.render(cam, mode, lambda: False)
        assert pic.shape == (48, 64, 3) and np.isfinite(pic).all()
        assert 0 <= pic.min() and pic.max() <= 1
    # profile mode: the white curve is u(x, t_slider)
    view.settings = {"t": 0.25}
    pic = view.render(cam, "profile", lambda: False)
    assert (pic == 1.0).all(-1).sum() > 20
    # the centre pixel of the solution map shows u(x = 0.5, t = 0.5)
    view.settings = {}
    pic = view.render(cam, "solution", lambda: False)
    from fields.viewer.views import colormap

    u = float(view.solution(x=0.5, t=0.5)[0])
    want = colormap(np.array([u]), *view.ranges[0], "RdBu_r")[0]
    assert np.abs(pic[24, 32] - want).max() < 0.05


def test_time_windows_continue_the_solution():
    box = pinn.Box(x=(0, 1), t=(0, 1))
    problem = pinn.Problem(
        name="heat2", domain=box,
        residual=lambda u, x, t: pinn.grad(u, t) - 0.1 * pinn.grad(u, x, 2),
        conditions=[pinn.Initial(lambda x: torch.sin(torch.pi * x)),
                    pinn.Dirichlet(0.0, on="x")],
        reference=pinn.Reference.from_function(
            box, lambda x, t: np.exp(-0.1 * np.pi**2 * t) * np.sin(np.pi * x), (41, 21)))
    sol = pinn.solve(problem, pinn.MLP(width=16, depth=2),
                     pinn.Strategy(adam_steps=200, lbfgs_steps=300, n_collocation=256,
                                   n_condition=64, time_windows=2, lr=1e-2, max_seconds=60),
                     progress=False)
    assert len(sol.model.fields) == 2
    assert sol.rel_l2() < 2e-3
    x = np.linspace(0, 1, 11)
    below = sol.predict(np.stack([x, np.full(11, 0.5 - 1e-9)], 1))
    above = sol.predict(np.stack([x, np.full(11, 0.5)], 1))
    assert np.abs(below - above).max() < 2e-3
    # windows were trained in order, each from the previous one's values
    assert [h["window"] for h in sol.history if h["phase"] == "window"] == [1, 2]


def test_time_windows_carry_time_derivatives():
    """A second-order equation in time marches: the next window's initial condition on u_t is
    the previous window's u_t at the window edge (by autograd), and a wave run with two
    windows stays continuous in u and u_t across the edge."""
    from fields.pinn.solve import _carried_derivative, _window_problem

    box = pinn.Box(x=(0, 1), t=(0, 1))

    class Exact(torch.nn.Module):
        def forward(self, X):
            return torch.sin(torch.pi * X[:, :1]) * torch.cos(torch.pi * X[:, 1:])

    x = torch.linspace(0, 1, 7, dtype=D64).reshape(-1, 1)
    for order, want in ((1, -torch.pi * torch.sin(torch.pi * x) * math.sin(torch.pi * 0.3)),
                        (2, -torch.pi**2 * torch.sin(torch.pi * x) * math.cos(torch.pi * 0.3))):
        got = _carried_derivative(Exact(), box, 0.3, order, [0])(x)
        assert not got.requires_grad and torch.allclose(got, want, atol=1e-12)

    problem = pinn.Problem(
        name="wave2", domain=box,
        residual=lambda u, x, t: pinn.grad(u, t, 2) - pinn.grad(u, x, 2),
        conditions=[pinn.Initial(lambda x: torch.sin(torch.pi * x)),
                    pinn.Initial(0.0, derivative=1), pinn.Dirichlet(0.0, on="x")],
        reference=pinn.Reference.from_function(
            box, lambda x, t: np.sin(np.pi * x) * np.cos(np.pi * t), (41, 21)))
    s = pinn.Strategy(adam_steps=200, lbfgs_steps=200, n_collocation=256, n_condition=64,
                      time_windows=2, lr=1e-2, max_seconds=60)
    second = _window_problem(problem, 1, 0.5, 1.0, Exact(), s.sized(2))
    labels = [c.label() for c in second.conditions]
    assert "Initial(d1/dt)" in labels and second.conditions[labels.index("Initial(d1/dt)")].hard \
        is False
    sol = pinn.solve(problem, pinn.MLP(width=16, depth=2), s, progress=False)
    assert len(sol.model.fields) == 2 and sol.rel_l2() < 1e-2
    xs = torch.linspace(0.1, 0.9, 9, dtype=D64).reshape(-1, 1)
    ut = [_carried_derivative(f, box, 0.5, 1, [0])(xs) for f in sol.model.fields]
    want = -math.pi * torch.sin(math.pi * xs)
    assert float((ut[0] - want).abs().max()) < 0.05 and float((ut[1] - want).abs().max()) < 0.05


def test_pinn_view_masks_the_outside_of_a_non_box_domain():
    """A disk's solution map: the corners of its bounding box stay background, the centre
    shows the solution, and an output the reference leaves NaN keeps a finite colour range."""
    from test_viewer import opencv_look_at

    from fields.pinn.view import PinnView
    from fields.viewer.camera import ViewCamera

    disk = pinn.Disk((0, 0), 1.0)
    dom = pinn.Domain(disk)
    axes, pts = dom.grid([21, 21])
    exact = 1 - (pts ** 2).sum(1)
    ref = np.stack([np.where(dom.contains(pts), exact, np.nan), np.full(len(pts), np.nan)], -1)
    problem = pinn.Problem(name="disk", domain=disk, outputs=("u", "w"),
                           residual=lambda u, w, x, y: (pinn.laplacian(u, x, y) + 4, w),
                           conditions=[pinn.Dirichlet(0.0, output="u")],
                           reference=pinn.Reference(axes, ref.reshape(21, 21, 2)))
    sol = pinn.solve(problem, pinn.MLP(width=8, depth=1),
                     pinn.Strategy(adam_steps=20, lbfgs_steps=0), progress=False)
    view = PinnView(sol)
    assert all(np.isfinite(r).all() for r in view.ranges) and np.isfinite(view.err_max).all()
    c = view.initial_camera()
    cam = ViewCamera(opencv_look_at(c["position"], c["look_at"], c["up"]), c["position"],
                     c["fov"], 640, 480).cameras(64, 48)
    for mode in ("solution", "error", "reference"):
        pic = view.render(cam, mode, lambda: False)
        inside = (pic != np.float32(0.12)).any(-1)
        assert inside[24, 32] and not inside[0, 0] and not inside[47, 63]
        assert 0.6 < inside.sum() / (np.pi / 4 * inside[:, inside.any(0)].shape[1] *
                                     inside[inside.any(1)].shape[0]) < 1.4


def test_pinn_view_profile_of_a_space_only_problem():
    from fields.pinn.view import PinnView

    box = pinn.Box(x=(0, 1), y=(0, 2))
    problem = pinn.Problem(name="xy", domain=box, residual=lambda u, x, y: u - x * y,
                           reference=pinn.Reference.from_function(box, lambda x, y: x * y, 11))
    sol = pinn.solve(problem, pinn.MLP(width=8, depth=1),
                     pinn.Strategy(adam_steps=5, lbfgs_steps=0), progress=False)
    view = PinnView(sol)
    assert view.slider_axis == 1 and [c["name"] for c in view.controls()] == ["y"]
    X = view._points(torch.tensor([[0.5, 0.9]]), 1.5, profile=True)
    assert np.allclose(X, [[0.5, 1.5]])  # y from the slider, not from the screen row
    X = view._points(torch.tensor([[0.5, 0.9]]), 1.5, profile=False)
    assert np.allclose(X, [[0.5, 1.8]])  # the map: y from the screen row


# -- dense BFGS ------------------------------------------------------------------------------------


def _bfgs_run(f, x0, iterations, **kw):
    from fields.pinn.optim import BFGS

    x = torch.nn.Parameter(x0.clone())
    opt = BFGS([x], **kw)

    def closure():
        opt.zero_grad()
        loss = f(x)
        loss.backward()
        return loss

    for _ in range(iterations):
        opt.step(closure)
    return x.detach(), opt


def test_bfgs_minimises_rosenbrock_and_a_quadratic():
    def rosenbrock(x):
        return ((1 - x[:-1]) ** 2).sum() + 100 * ((x[1:] - x[:-1] ** 2) ** 2).sum()

    x, opt = _bfgs_run(rosenbrock, torch.linspace(-1.5, 1.2, 6, dtype=D64), 150)
    assert float(rosenbrock(x)) < 1e-14 and torch.allclose(x, torch.ones(6, dtype=D64))
    # a convex quadratic of condition 1e3: each update satisfies the secant condition
    # H y = s (y = A s), and the iterates reach the minimiser
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=D64))
    A = q @ torch.diag(torch.logspace(0, 3, 12, dtype=D64)) @ q.T
    b = torch.randn(12, generator=g, dtype=D64)
    from fields.pinn.optim import BFGS

    x = torch.nn.Parameter(torch.zeros(12, dtype=D64))
    opt = BFGS([x])

    def closure():
        opt.zero_grad()
        loss = 0.5 * x @ A @ x - b @ x
        loss.backward()
        return loss

    for _ in range(8):
        before = x.detach().clone()
        opt.step(closure)
        s_ = x.detach() - before
        assert torch.allclose(opt.state[x]["H"] @ (A @ s_), s_, rtol=0,
                              atol=1e-12 * float(s_.norm()))
    x, opt = _bfgs_run(lambda x: 0.5 * x @ A @ x - b @ x, torch.zeros(12, dtype=D64), 80)
    assert torch.allclose(x, torch.linalg.solve(A, b), rtol=0, atol=1e-8)


def test_bfgs_reaches_a_low_error_on_a_pinn():
    """The 1-D Poisson problem u'' = -pi^2 sin(pi x), u(0) = u(1) = 0, with the same network
    and the same number of quasi-Newton iterations: dense BFGS ends within a relative L2 error
    of 3e-4, as L-BFGS does. Which of the two ends lower depends on the machine (where this
    test was written, BFGS ended below 1e-4 and under half L-BFGS's error; on another machine
    of this kind, 2026-12-05, 9.7e-5 against 1.03e-4, and BFGS behind L-BFGS at 60 and 100
    iterations), so only the bound is tested;
    the quadratic test above checks BFGS's inverse Hessian itself."""
    box = pinn.Box(x=(0, 1))
    problem = pinn.Problem(
        domain=box, residual=lambda u, x: pinn.grad(u, x, 2) + torch.pi**2 * torch.sin(
            torch.pi * x), conditions=[pinn.Dirichlet(0.0, hard=False)],
        reference=pinn.Reference.from_function(box, lambda x: np.sin(np.pi * x), (101,)))
    rel = {}
    for qn in ("lbfgs", "bfgs"):
        sol = pinn.solve(problem, pinn.MLP(width=16, depth=2),
                         pinn.Strategy(adam_steps=0, lbfgs_steps=150, n_collocation=64,
                                       quasi_newton=qn), progress=False)
        rel[qn] = sol.rel_l2()
        assert sol.steps == 150
    assert rel["bfgs"] < 3e-4 and rel["lbfgs"] < 3e-4, rel


def test_bfgs_resumes_where_it_stopped(tmp_path):
    cfg = TINY[:-1] + ', "quasi_newton": "bfgs"}'
    budget = ["--adam-steps", "5", "--lbfgs-steps", "25", "--config", cfg]
    _solve(["heat", "--output", str(tmp_path / "whole"), *budget])
    _solve(["heat", "--output", str(tmp_path / "part"), "--steps", "17", *budget])
    _solve(["heat", "--output", str(tmp_path / "rest"), *budget, "--resume",
            str(tmp_path / "part" / "checkpoint.pt")])
    whole, rest = (json.loads((tmp_path / n / "metrics.json").read_text())
                   for n in ("whole", "rest"))
    assert rest["steps"] == whole["steps"] == 30 and "BFGS 25" in whole["strategy"]
    assert rest["rel_l2"] == pytest.approx(whole["rel_l2"], rel=1e-9, abs=0)
    with pytest.raises(ValueError, match="quasi_newton"):
        pinn.Strategy(quasi_newton="newton")
