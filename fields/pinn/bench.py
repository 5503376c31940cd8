"""`fields bench pinn`: fields against DeepXDE on the same problems, side by side.

Each problem runs twice with the same network size (width, depth, tanh), the same points
(interior and per condition), the same optimiser schedule (Adam at the same learning rate,
then L-BFGS with the same history) and the same wall-time budget, in one process, one after
the other:

- fields: `fields.pinn.solve` with the problem's own strategy but for the budget (its
  conditions exact where the output transform allows, float64);
- DeepXDE (PyTorch backend, float64 for the same arithmetic), its conditions as loss terms
  (`DirichletBC`, `IC`, `PointSetBC`), its own Glorot-normal initialisation; a problem with
  its own output transform (the cavity's corner flows) gets that transform
  (`apply_output_transform`) and the same residual weights.

The relative L2 error on the problem's reference grid is probed about every `probe` seconds
(fields records it in its own loop, which the clock includes; DeepXDE's probe runs in a
callback whose time is taken off its clock). From the curves: the error at the end of the
budget (the last probe within it: DeepXDE checks the clock only between L-BFGS chunks and may
run past it), and the time to reach 1e-2 and 1e-3 (None: not reached). Problems: ``burgers``
(1-D viscous Burgers, `fields/scenes/pde/burgers.py`), ``poisson_lshape`` (-laplace u = 1 on
an L-shape, u = 0 on its boundary, a scikit-fem reference) and ``cavity`` (the lid-driven
cavity at Re = 100, `fields/scenes/pde/cavity.py`).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

import fields.pinn as pinn
from fields.pinn.run import Case, load_case

__all__ = ["PROBLEMS", "BenchRow", "bench_pinn", "deepxde_available", "lshape_case"]

PROBLEMS = ("burgers", "poisson_lshape", "cavity")
L_SHAPE = [(0, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2)]


@dataclass
class BenchRow:
    """One library on one problem: the error curve (seconds, rel L2) and what follows."""

    problem: str
    library: str
    seconds: float
    steps: int
    rel_l2: float | None
    to_1e2: float | None
    to_1e3: float | None
    curve: list[tuple[float, float]] = field(default_factory=list)
    note: str = ""

    def as_dict(self, curve: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not curve:
            d.pop("curve")
        return d


def deepxde_available() -> bool:
    """Whether DeepXDE can be imported (with its PyTorch backend)."""
    os.environ.setdefault("DDE_BACKEND", "pytorch")
    try:
        with _torch_defaults():
            import deepxde  # noqa: F401
    except Exception:  # any import failure means: not usable here
        return False
    return True


@contextlib.contextmanager
def _torch_defaults() -> Iterator[None]:
    """DeepXDE sets torch's default dtype (float32 on import, float64 by `set_default_float`)
    for the whole process: put it back after."""
    saved = torch.get_default_dtype()
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def lshape_case() -> Case:
    """-laplace(u) = 1 on the L-shape [0, 2]^2 minus [1, 2]^2, u = 0 on its boundary; a P2
    finite-element reference (spacing 0.01, cached)."""
    from fields.pinn import fem

    g = pinn.Polygon(L_SHAPE)
    dom = pinn.Domain(g)
    axes, pts = dom.grid([101, 101])

    def compute() -> np.ndarray:
        basis, u = fem.poisson(g, 1.0, 0.0, h=0.01)
        return fem.on_grid(basis, u, pts)

    values = fem.cached("poisson_lshape", {"h": 0.01, "n": 101}, compute)
    values = np.where(dom.contains(pts), values, np.nan)
    problem = pinn.Problem(name="poisson_lshape", domain=g,
                           residual=lambda u, x, y: pinn.laplacian(u, x, y) + 1.0,
                           conditions=[pinn.Dirichlet(0.0)],
                           reference=pinn.Reference(axes, values.reshape(101, 101)))
    return Case(problem, pinn.MLP(width=32, depth=4),
                pinn.Strategy(adam_steps=1000, lbfgs_steps=20000, n_collocation=2048))


def _case(name: str) -> Case:
    return lshape_case() if name == "poisson_lshape" else load_case(name)


def _milestones(curve: list[tuple[float, float]]) -> tuple[float | None, float | None]:
    def first(level: float) -> float | None:
        return next((t for t, e in curve if e <= level), None)

    return first(1e-2), first(1e-3)


def _row(problem: str, library: str, curve: list[tuple[float, float]], seconds: float,
         steps: int, budget: float, note: str = "") -> BenchRow:
    """The row of one run; its error is the last probe within the budget (a library that
    overshoots it, finishing an L-BFGS chunk, gets no credit for the extra time)."""
    curve = [(float(t), float(e)) for t, e in curve if e is not None and math.isfinite(e)]
    a, b = _milestones(curve)
    within = [e for t, e in curve if t <= budget * 1.001]
    rel = within[-1] if within else (curve[0][1] if curve else None)
    return BenchRow(problem, library, round(seconds, 2), steps, rel, a, b, curve, note)


def run_fields(case: Case, seconds: float) -> BenchRow:
    """fields on `case` for `seconds` of training."""
    curve: list[tuple[float, float]] = []

    def on(rec: dict[str, Any]) -> None:
        if "rel_l2" in rec and "seconds" in rec:
            curve.append((rec["seconds"], rec["rel_l2"]))

    s = pinn.Strategy.from_dict({**case.strategy.to_dict(), "max_seconds": seconds,
                                 "eval_every": 50})
    sol = pinn.solve(case.problem, case.network, s, progress=False, callback=on)
    curve.append((sol.seconds, sol.rel_l2()))
    from fields.pinn.hard import OutputTransform

    p = case.problem
    exact = len(OutputTransform(p.domain, p.outputs, p.conditions, enabled=s.hard,
                                explicit=p.transform).satisfied)
    return _row(p.name, "fields", curve, sol.seconds, sol.steps, seconds,
                s.describe((exact, len(p.conditions))) + ", " + case.network.describe())


def run_deepxde(case: Case, seconds: float, probe: float = 2.0) -> BenchRow:
    """DeepXDE on the same problem, network size, points and schedule for `seconds` (what it
    prints goes to stderr: stdout stays for results)."""
    with contextlib.redirect_stdout(sys.stderr), _torch_defaults():
        return _run_deepxde(case, seconds, probe)


def _run_deepxde(case: Case, seconds: float, probe: float) -> BenchRow:
    os.environ.setdefault("DDE_BACKEND", "pytorch")
    import deepxde as dde

    dde.config.set_default_float("float64")
    dde.config.set_random_seed(case.strategy.seed)
    problem = case.problem
    s = case.strategy.sized(problem.domain.dim)
    data, n_out = _deepxde_data(dde, case.problem.name, s)
    net_spec = case.network
    n_in = problem.domain.dim
    net = dde.nn.FNN([n_in] + [net_spec.width] * net_spec.depth + [n_out], "tanh",
                     "Glorot normal")
    if problem.transform is not None:  # the problem's own output transform, as fields uses it
        names = problem.domain.names
        transform = problem.transform
        net.apply_output_transform(lambda x, y: transform(
            {nm: x[:, i : i + 1] for i, nm in enumerate(names)}, y))
    model = dde.Model(data, net)
    ref = problem.reference
    pts = ref.points()
    vals = ref.values.reshape(len(pts), -1)
    ok = np.isfinite(vals)  # per output: NaN outside the domain, or not compared
    cols = ok.any(0)
    keep = ok[:, cols].any(1)
    pts, vals, ok = pts[keep], np.where(ok, vals, 0.0)[keep][:, cols], ok[keep][:, cols]
    den = np.linalg.norm(vals, axis=0)

    def rel_error(pred: np.ndarray) -> float:
        diff = np.where(ok, pred[:, cols] - vals, 0.0)
        return float((np.linalg.norm(diff, axis=0) / den).max())
    curve: list[tuple[float, float]] = []
    clock = {"start": time.perf_counter(), "off": 0.0, "last": -1e9}

    def elapsed() -> float:
        return time.perf_counter() - clock["start"] - clock["off"]

    class Budget(dde.callbacks.Callback):
        def on_epoch_end(self) -> None:
            now = elapsed()
            if now - clock["last"] >= probe or now >= seconds:
                t0 = time.perf_counter()
                err = rel_error(self.model.predict(pts))
                curve.append((now, err))
                clock["last"] = now
                clock["off"] += time.perf_counter() - t0
            if now >= seconds:
                self.model.stop_training = True

    steps = 0
    model.compile("adam", lr=s.lr)
    clock["start"] = time.perf_counter()
    if s.adam_steps:
        model.train(iterations=s.adam_steps, callbacks=[Budget()], display_every=100,
                    verbose=0)
        steps = model.train_state.step
    if elapsed() < seconds and s.lbfgs_steps:
        dde.optimizers.config.set_LBFGS_options(maxiter=s.lbfgs_steps, maxcor=s.history)
        model.compile("L-BFGS")
        model.train(callbacks=[Budget()], display_every=50, verbose=0)
        steps = model.train_state.step
    t_end = elapsed()
    curve.append((t_end, rel_error(model.predict(pts))))
    return _row(problem.name, "deepxde", curve, t_end, int(steps), seconds,
                f"DeepXDE {dde.__version__}, PyTorch backend, float64, "
                + ("the problem's output transform" if problem.transform is not None
                   else "soft conditions"))


def _scene_module(name: str) -> Any:
    """A built-in problem's script as a module (for its helper functions)."""
    from fields.pinn.run import scenes_dir, script_module

    module, run = script_module(scenes_dir() / f"{name}.py")
    run()
    return module


def _deepxde_data(dde: Any, name: str, s: pinn.Strategy) -> tuple[Any, int]:
    """The problem in DeepXDE's terms: its geometry, residual and conditions."""
    grad, hess = dde.grad.jacobian, dde.grad.hessian
    nd, nb = s.n_collocation, s.n_condition
    if name == "burgers":
        nu = 0.01 / math.pi
        geom = dde.geometry.GeometryXTime(dde.geometry.Interval(-1, 1),
                                          dde.geometry.TimeDomain(0, 1))

        def pde(x: Any, y: Any) -> Any:
            return (grad(y, x, i=0, j=1) + y * grad(y, x, i=0, j=0)
                    - nu * hess(y, x, i=0, j=0))

        bc = dde.icbc.DirichletBC(geom, lambda x: 0, lambda _, on_b: on_b)
        ic = dde.icbc.IC(geom, lambda x: -np.sin(np.pi * x[:, 0:1]), lambda _, on_i: on_i)
        return dde.data.TimePDE(geom, pde, [bc, ic], num_domain=nd, num_boundary=nb,
                                num_initial=nb, num_test=256), 1
    if name == "poisson_lshape":
        geom = dde.geometry.Polygon(L_SHAPE)

        def pde(x: Any, y: Any) -> Any:
            return hess(y, x, i=0, j=0) + hess(y, x, i=1, j=1) + 1

        bc = dde.icbc.DirichletBC(geom, lambda x: 0, lambda _, on_b: on_b)
        return dde.data.PDE(geom, pde, [bc], num_domain=nd, num_boundary=nb,
                            num_test=256), 1
    if name == "cavity":
        re = 100.0
        geom = dde.geometry.Rectangle([0, 0], [1, 1])
        weight = _scene_module("cavity").weight  # the corners' residual weight

        def pde(x: Any, y: Any) -> Any:
            u, v = y[:, 0:1], y[:, 1:2]
            u_x, u_y = grad(y, x, i=0, j=0), grad(y, x, i=0, j=1)
            v_x, v_y = grad(y, x, i=1, j=0), grad(y, x, i=1, j=1)
            p_x, p_y = grad(y, x, i=2, j=0), grad(y, x, i=2, j=1)
            lap_u = hess(y, x, component=0, i=0, j=0) + hess(y, x, component=0, i=1, j=1)
            lap_v = hess(y, x, component=1, i=0, j=0) + hess(y, x, component=1, i=1, j=1)
            w = weight(x[:, 0:1], x[:, 1:2])
            return [w * (u * u_x + v * u_y + p_x - lap_u / re),
                    w * (u * v_x + v * v_y + p_y - lap_v / re), w * (u_x + v_y)]

        def top(x: Any, on_b: bool) -> bool:
            return on_b and np.isclose(x[1], 1.0)

        def walls(x: Any, on_b: bool) -> bool:
            return on_b and not np.isclose(x[1], 1.0)

        bcs = [dde.icbc.DirichletBC(geom, lambda x: 1, top, component=0),
               dde.icbc.DirichletBC(geom, lambda x: 0, walls, component=0),
               dde.icbc.DirichletBC(geom, lambda x: 0, lambda _, on_b: on_b, component=1),
               dde.icbc.PointSetBC(np.array([[0.0, 0.0]]), np.array([[0.0]]), component=2)]
        return dde.data.PDE(geom, pde, bcs, num_domain=nd, num_boundary=nb, num_test=256), 3
    raise ValueError(f"fields bench pinn: unknown problem {name!r}; expected one of "
                     f"{', '.join(PROBLEMS)}")


def bench_pinn(problems: list[str], seconds: float, with_deepxde: bool | None = None,
               on_row: Callable[[BenchRow], None] | None = None) -> list[BenchRow]:
    """Every problem with fields, then with DeepXDE (when `with_deepxde`, default: when it
    is installed), `seconds` of training each."""
    bad = [p for p in problems if p not in PROBLEMS]
    if bad:
        raise ValueError(f"fields bench pinn: unknown problem(s) {bad}; expected some of "
                         f"{', '.join(PROBLEMS)}")
    if with_deepxde is None:
        with_deepxde = deepxde_available()
    elif with_deepxde and not deepxde_available():
        raise ValueError("fields bench pinn --deepxde: DeepXDE is not installed (pip install "
                         "deepxde; it runs on its PyTorch backend)")
    rows = []
    for name in problems:
        case = _case(name)
        runs = [run_fields] + ([run_deepxde] if with_deepxde else [])
        for run in runs:
            torch.manual_seed(case.strategy.seed)
            row = run(case, seconds)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows
