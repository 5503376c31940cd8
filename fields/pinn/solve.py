"""`solve(problem, network, strategy)`: trains a PINN and returns a `Solution`.

The loss is ``sum_k lambda_k * w_k * mean(r_k^2)`` over the PDE residual(s) at the collocation
points and every condition that is not imposed exactly. Training: Adam (with optional
residual-based resampling, gradient-norm weights and causal time weights), then full-batch
L-BFGS, then optionally further stages (multi-stage training), all within
``strategy.max_seconds``. The best parameters seen by L-BFGS are kept (it can diverge).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fields.pinn.conditions import Data, Initial, Periodic
from fields.pinn.diff import CoordinateScope
from fields.pinn.geometry import Box
from fields.pinn.hard import OutputTransform
from fields.pinn.networks import MLP, Embedding, NetworkSpec
from fields.pinn.problem import Problem
from fields.pinn.strategy import Strategy

__all__ = ["Field", "Solution", "solve"]


class Field(nn.Module):
    """Embedding -> network(s) -> output transform. Multi-stage: ``raw = N_1 + e_2 N_2 + ...``
    with the earlier stages frozen."""

    def __init__(self, embedding: Embedding, network: nn.Module,
                 transform: OutputTransform) -> None:
        super().__init__()
        self.embedding = embedding
        self.networks = nn.ModuleList([network])
        self.register_buffer("scales", torch.ones(1, dtype=embedding.lo.dtype))
        self.transform = transform

    def add_stage(self, network: nn.Module, scale: float) -> None:
        for p in self.networks.parameters():
            p.requires_grad_(False)
        self.networks.append(network)
        self.scales = torch.cat([self.scales, self.scales.new_tensor([scale])])

    def raw(self, X: torch.Tensor) -> torch.Tensor:
        h = self.embedding(X)
        out = self.networks[0](h)
        for k in range(1, len(self.networks)):
            out = out + self.scales[k] * self.networks[k](h)
        return out

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.transform(X, self.raw(X))


class Evaluator:
    """Evaluates a field and the problem's residuals at points."""

    def __init__(self, problem: Problem, model: Field) -> None:
        self.problem = problem
        self.box = problem.domain
        self.model = model

    def values(self, X: torch.Tensor) -> torch.Tensor:
        return self.model(X)

    def with_coords(self, X: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        coords = [X[:, i : i + 1].detach().clone().requires_grad_(True)
                  for i in range(X.shape[1])]
        return coords, self.model(torch.cat(coords, 1))

    def pde(self, X: torch.Tensor) -> list[torch.Tensor]:
        coords, U = self.with_coords(X)
        outs = [U[:, j : j + 1] for j in range(U.shape[1])]
        with CoordinateScope(coords):
            r = self.problem.residual(*outs, *coords)
        rs = list(r) if isinstance(r, (tuple, list)) else [r]
        out = []
        for k, e in enumerate(rs):
            if not isinstance(e, torch.Tensor) or e.numel() != X.shape[0]:
                got = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
                raise ValueError(f"Problem {self.problem.name!r}: residual equation {k} gave "
                                 f"{got}; expected a tensor of {X.shape[0]} values (N, 1)")
            out.append(e.reshape(-1, 1))
        return out


class Solution:
    """A trained field: call it with coordinates, compare it with the reference."""

    def __init__(self, problem: Problem, model: nn.Module, strategy: Strategy, network: str,
                 history: list[dict[str, float]], seconds: float, steps: int) -> None:
        self.problem = problem
        self.model = model
        self.strategy = strategy
        self.network = network
        self.history = history
        self.seconds = seconds
        self.steps = steps

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.buffers()).dtype

    def predict(self, X: np.ndarray | torch.Tensor, chunk: int = 65536) -> np.ndarray:
        """Outputs (N, n_outputs) at points (N, dim)."""
        X = torch.as_tensor(np.asarray(X, dtype=np.float64), dtype=self.dtype)
        with torch.no_grad():
            out = [self.model(X[i : i + chunk]) for i in range(0, len(X), chunk)]
        return torch.cat(out).double().numpy() if out else np.zeros((0, len(self.problem.outputs)))

    def __call__(self, **coords: Any) -> np.ndarray:
        names = self.problem.domain.names
        missing = [n for n in names if n not in coords]
        if missing:
            raise ValueError(f"Solution: give every coordinate ({', '.join(names)}); missing "
                             f"{', '.join(missing)}")
        arrs = np.broadcast_arrays(*[np.asarray(coords[n], dtype=np.float64) for n in names])
        X = np.stack([a.reshape(-1) for a in arrs], 1)
        return self.predict(X).reshape(*arrs[0].shape, -1)

    def on_reference_grid(self) -> np.ndarray:
        ref = self.problem.reference
        if ref is None:
            raise ValueError(f"Problem {self.problem.name!r} has no reference")
        return self.predict(ref.points()).reshape(ref.values.shape)

    def rel_l2_per_output(self) -> dict[str, float]:
        pred = self.on_reference_grid()
        ref = self.problem.reference.values
        out = {}
        for j, name in enumerate(self.problem.outputs):
            den = float(np.linalg.norm(ref[..., j]))
            num = float(np.linalg.norm(pred[..., j] - ref[..., j]))
            out[name] = num / den if den > 0 else num
        return out

    def rel_l2(self) -> float:
        """``|u - u_ref|_2 / |u_ref|_2`` on the reference grid (the largest over outputs)."""
        return max(self.rel_l2_per_output().values())

    def unknowns(self) -> dict[str, float]:
        return {u.name: u.item() for u in self.problem.unknowns}


# -- training --------------------------------------------------------------------------------


class _Terms:
    """Points and loss terms of one training state."""

    def __init__(self, problem: Problem, model: Field, strategy: Strategy, dtype: torch.dtype,
                 seed: int) -> None:
        self.problem = problem
        self.box = problem.domain
        self.s = strategy
        self.dtype = dtype
        self.ev = Evaluator(problem, model)
        self.X = self.box.tensor(self.box.sample(strategy.n_collocation, strategy.sampler, seed),
                                 dtype)
        self.soft = [(i, c) for i, c in enumerate(problem.conditions)
                     if i not in model.transform.satisfied]
        self.cond_pts: list[dict[str, torch.Tensor]] = []
        self.cond_cols: list[list[int]] = []
        for i, c in self.soft:
            pts = c.sample(self.box, c.n or strategy.n_condition, strategy.sampler,
                           seed + 1000 * (i + 1))
            self.cond_pts.append({k: torch.as_tensor(v, dtype=torch.int64 if v.dtype.kind == "i"
                                                     else dtype) for k, v in pts.items()})
            self.cond_cols.append(c.columns(problem.outputs))
        self.names = ["pde"] + [c.label() for _, c in self.soft]
        self.lam = torch.ones(len(self.names), dtype=torch.float64)
        self.fixed = torch.tensor([1.0] + [c.weight for _, c in self.soft], dtype=torch.float64)
        self.causal_eps = strategy.causal if self.box.time is not None else 0.0
        self.causal_w: torch.Tensor | None = None
        self.causal_frozen = False
        self.scale = 1.0  # a constant factor of the objective (later stages)

    def pde_terms(self, X: torch.Tensor, causal: bool) -> torch.Tensor:
        rs = self.ev.pde(X)
        sq = sum(r * r for r in rs).reshape(-1)
        if not (causal and self.causal_eps > 0):
            return sq.mean()
        ti = self.box.index(self.box.time)
        t0, t1 = self.box.bounds(self.box.time)
        m = self.s.causal_chunks
        idx = ((X[:, ti] - t0) / (t1 - t0) * m).long().clamp(0, m - 1)
        sums = torch.zeros(m, dtype=sq.dtype).index_add(0, idx, sq)
        counts = torch.bincount(idx, minlength=m).to(sq.dtype).clamp_min(1.0)
        losses = sums / counts
        if self.causal_frozen and self.causal_w is not None:
            w = self.causal_w  # fixed within an L-BFGS chunk: one objective per line search
        else:
            with torch.no_grad():
                cum = torch.cat([losses.new_zeros(1), torch.cumsum(losses, 0)[:-1]])
                w = torch.exp(-self.causal_eps * cum)
            self.causal_w = w
        return (w * losses).mean()

    def term_losses(self, causal: bool = True) -> list[torch.Tensor]:
        out = [self.pde_terms(self.X, causal)]
        for (_, c), pts, cols in zip(self.soft, self.cond_pts, self.cond_cols, strict=True):
            r = c.residual(self.ev, pts, cols)
            out.append((r * r).mean())
        return out

    def total(self, losses: Sequence[torch.Tensor]) -> torch.Tensor:
        w = (self.lam * self.fixed).tolist()
        return self.scale * sum(wk * lk for wk, lk in zip(w, losses, strict=True))

    def plain(self, losses: Sequence[torch.Tensor]) -> float:
        """The loss with the conditions' own weights only (no adaptive or stage weights):
        comparable across phases and stages."""
        return float(sum(w * float(lk.detach()) for w, lk in zip(self.fixed.tolist(), losses,
                                                                 strict=True)))

    def term_residuals(self) -> list[tuple[torch.Tensor, int]]:
        """Each term's residuals (the PDE's, then each soft condition's), flattened, with the
        graph kept, and the count its loss averages over: ``(r_k (m_k,), n_k)`` such that
        ``(r_k ** 2).sum() / n_k`` is term k's loss without causal weights (the PDE's
        equations are summed per point)."""
        out = [(torch.cat(self.ev.pde(self.X), 1).reshape(-1), len(self.X))]
        for (_, c), pts, cols in zip(self.soft, self.cond_pts, self.cond_cols, strict=True):
            r = c.residual(self.ev, pts, cols).reshape(-1)
            out.append((r, max(1, r.numel())))
        return out

    def residual_vector(self) -> torch.Tensor:
        """Every residual, each scaled by sqrt(weight / count), in one vector (no causal
        weights): its squared norm is the loss."""
        w = (self.lam * self.fixed).tolist()
        parts = [r * math.sqrt(wk / n) for wk, (r, n) in zip(w, self.term_residuals(),
                                                             strict=True)]
        return torch.cat(parts).detach()

    def residual_norm(self, X: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        out = []
        for i in range(0, len(X), chunk):
            rs = self.ev.pde(X[i : i + chunk])
            out.append(torch.sqrt(sum(r.detach() ** 2 for r in rs)).reshape(-1))
        return torch.cat(out)


def _params(model: Field, problem: Problem) -> list[nn.Parameter]:
    ps = [p for p in model.parameters() if p.requires_grad]
    for u in problem.unknowns:
        ps += list(u.parameters())
    return ps


def _squared_norm(grads: Sequence[torch.Tensor | None]) -> float:
    return sum(float((g.double() ** 2).sum()) for g in grads if g is not None)


def _update_gradnorm(terms: _Terms, params: list[nn.Parameter]) -> None:
    """Learning-rate annealing: lambda_k = sum_j |grad L_j| / |grad L_k|."""
    norms = []
    for lk in terms.term_losses():
        g = torch.autograd.grad(lk, params, retain_graph=True, allow_unused=True)
        norms.append(math.sqrt(_squared_norm(g)))
    _blend_weights(terms, torch.tensor(norms, dtype=torch.float64))


def ntk_traces(terms: _Terms, params: list[nn.Parameter], probes: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Each term's mean NTK diagonal, ``tr(K_kk) / n_k = mean_i |d r_k(x_i) / d theta|^2``.

    (For a system, the squared gradients of a point's equations are summed.) Estimated
    without per-point gradients by Hutchinson's identity ``tr(J J^T) =
    E_v |J^T v|^2`` over Rademacher vectors v (`probes` of them, one backward pass each):
    ``J^T v`` is the gradient of ``v . r_k``. Returns (n_terms,) float64.
    """
    out = []
    for r, n in terms.term_residuals():
        total = 0.0
        for _ in range(probes):
            v = torch.randint(0, 2, r.shape, generator=generator).to(r.device, r.dtype) * 2 - 1
            g = torch.autograd.grad((v * r).sum(), params, retain_graph=True, allow_unused=True)
            total += _squared_norm(g)
        out.append(total / (probes * n))
    return torch.tensor(out, dtype=torch.float64)


def _update_ntk(terms: _Terms, params: list[nn.Parameter], step: int) -> None:
    """NTK weights (Wang, Yu & Perdikaris 2022): lambda_k = sum_j tr(K_jj) / tr(K_kk), each
    trace per point, so that every term converges at the same rate under gradient descent."""
    g = torch.Generator().manual_seed(terms.s.seed + 31 * step + 7)
    _blend_weights(terms, ntk_traces(terms, params, terms.s.ntk_probes, g))


def _blend_weights(terms: _Terms, sizes: torch.Tensor) -> None:
    """lambda_k = sum(sizes) / sizes_k, blended into the running weights by
    `weight_momentum`."""
    sizes = sizes.clamp_min(1e-30)
    a = terms.s.weight_momentum
    terms.lam = a * terms.lam + (1 - a) * sizes.sum() / sizes


def _resample(terms: _Terms, step: int) -> None:
    s = terms.s
    box = terms.box
    pool = box.tensor(box.sample(s.n_collocation * s.resample_pool, "uniform",
                                 s.seed + 17 + step), terms.dtype)
    r = terms.residual_norm(pool)
    if s.resample == "rad":
        p = r ** s.rad_k
        p = p / p.mean().clamp_min(1e-300) + s.rad_c
        g = torch.Generator().manual_seed(s.seed + step)
        idx = torch.multinomial(p.double(), s.n_collocation, replacement=False, generator=g)
        terms.X = pool[idx]
    else:  # rar: add the worst points
        idx = torch.topk(r, min(s.rar_add, len(r))).indices
        terms.X = torch.cat([terms.X, pool[idx]])


def _rel_l2_fn(problem: Problem, model: nn.Module, dtype: torch.dtype,
               t_max: float | None = None) -> Callable[[], float] | None:
    """The relative L2 error on the reference grid (up to time `t_max` if given)."""
    ref = problem.reference
    if ref is None:
        return None
    pts_np = ref.points()
    vals_np = ref.values.reshape(len(pts_np), -1)
    if t_max is not None:
        keep = pts_np[:, problem.domain.index(problem.domain.time)] <= t_max + 1e-12
        pts_np, vals_np = pts_np[keep], vals_np[keep]
    pts = torch.as_tensor(pts_np, dtype=dtype)
    vals = torch.as_tensor(vals_np, dtype=torch.float64)
    den = torch.linalg.vector_norm(vals, dim=0).clamp_min(1e-300)

    def rel() -> float:
        with torch.no_grad():
            pred = torch.cat([model(pts[i : i + 65536]) for i in range(0, len(pts), 65536)])
        return float((torch.linalg.vector_norm(pred.double() - vals, dim=0) / den).max())

    return rel


class _Progress:
    def __init__(self, enabled: bool, total: int, name: str) -> None:
        self.enabled = enabled
        self.bar = None
        self.name = name
        self.last_line = -1e9
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            # on stderr: stdout stays clean for results (`fields solve --json`)
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("{task.fields[info]}"), transient=False,
                                console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task(name, total=total, info="")

    def update(self, advance: int, description: str, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=advance, description=description, info=info)
            if info and not self.bar.console.is_terminal:
                # no live display (a log file): a plain line at most every 20 s
                now = time.perf_counter()
                if now - self.last_line > 20:
                    self.last_line = now
                    done = int(self.bar.tasks[0].completed)
                    print(f"{self.name}: {description} step {done}  {info}", flush=True,
                          file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _clock(start: float, budget: float) -> Callable[[], bool]:
    return lambda: time.perf_counter() - start > budget


def _train_phase(terms: _Terms, model: Field, problem: Problem, adam_steps: int,
                 lbfgs_steps: int, lr: float, start: float, history: list[dict[str, float]],
                 rel: Callable[[], float] | None, progress: _Progress, stage: int,
                 step0: int, callback: Callable[[dict[str, float]], None] | None) -> int:
    s = terms.s
    over = _clock(start, s.max_seconds)
    params = _params(model, problem)
    step = step0
    label = f"stage {stage} " if s.stages > 1 else ""

    def record(phase: str, loss: float) -> None:
        rec = {"step": step, "phase": phase, "stage": stage, "loss": loss,
               "seconds": time.perf_counter() - start}
        if rel is not None:
            rec["rel_l2"] = rel()
        for u in problem.unknowns:
            rec[u.name] = u.item()
        history.append(rec)
        info = f"loss {loss:.3e}" + (f"  rel L2 {rec['rel_l2']:.2e}" if "rel_l2" in rec else "")
        for u in problem.unknowns:
            info += f"  {u.name} {rec[u.name]:.5g}"
        progress.update(0, f"{label}{phase}", info)
        if callback is not None:
            callback(rec)

    if adam_steps > 0:
        opt = torch.optim.Adam(params, lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: s.lr_decay ** (k / 1000.0))
        for k in range(adam_steps):
            if over():
                break
            if s.resample and k > 0 and k % s.resample_every == 0:
                _resample(terms, step)
            if s.weighting != "fixed" and k % s.weight_every == 0:
                if s.weighting == "gradnorm":
                    _update_gradnorm(terms, params)
                else:
                    _update_ntk(terms, params, step)
            opt.zero_grad(set_to_none=True)
            losses = terms.term_losses()
            loss = terms.total(losses)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            progress.update(1, f"{label}Adam", "")
            if k % s.eval_every == 0 or k == adam_steps - 1:
                if not math.isfinite(float(loss.detach())):
                    raise FloatingPointError(f"Problem {problem.name!r}: the loss became "
                                             f"{float(loss)} at Adam step {k}; lower the "
                                             f"learning rate")
                record("Adam", terms.plain(losses))

    if lbfgs_steps > 0 and not over():
        opt = _lbfgs(params, s)
        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            loss = terms.total(terms.term_losses())
            loss.backward()
            return loss

        def evaluate() -> tuple[float, float]:
            """(the L-BFGS objective without causal weights, the plain loss) now."""
            losses = terms.term_losses(causal=False)
            return float(terms.total(losses).detach()), terms.plain(losses)

        best: tuple[float, list[torch.Tensor] | None] = (math.inf, None)
        done = 0
        since = 0
        current = math.inf
        while done < lbfgs_steps and not over():
            if s.resample and since >= s.resample_every:
                # new points: the curvature pairs belong to the old loss, so start afresh
                _resample(terms, step)
                opt = _lbfgs(params, s)
                best = (math.inf, None)
                since = 0
            st = opt.state[opt._params[0]] if opt.state else {}
            n_before, e_before = st.get("n_iter", 0), st.get("func_evals", 0)
            max_iter = min(s.eval_every, lbfgs_steps - done)
            opt.param_groups[0]["max_iter"] = max_iter
            opt.param_groups[0]["max_eval"] = 4 * max_iter
            if terms.causal_eps > 0:  # new causal weights for this chunk, then fixed
                terms.causal_frozen = False
                terms.term_losses()
                terms.causal_frozen = True
            opt.step(closure)
            st = opt.state[opt._params[0]]
            iters, evals = st.get("n_iter", 0) - n_before, st.get("func_evals", 0) - e_before
            it = max(1, iters)
            done += it
            since += it
            step += it
            progress.update(it, f"{label}L-BFGS", "")
            current, plain = evaluate()
            if not math.isfinite(current):
                break
            if current < best[0]:
                best = (current, [p.detach().clone() for p in params])
            record("L-BFGS", plain)
            if iters < max_iter and evals < 4 * max_iter:
                # L-BFGS gave up before its budget: converged, or no descent direction left
                if not s.resample:
                    break
                since = s.resample_every  # stalled on these points: draw new ones
        terms.causal_frozen = False
        if best[1] is not None and not (current <= best[0]):
            with torch.no_grad():
                for p, b in zip(params, best[1], strict=True):
                    p.copy_(b)
    return step


def _lbfgs(params: list[nn.Parameter], s: Strategy) -> torch.optim.LBFGS:
    return torch.optim.LBFGS(params, lr=1.0, max_iter=s.eval_every,
                             max_eval=4 * s.eval_every, history_size=s.history,
                             tolerance_grad=0.0, tolerance_change=0.0,
                             line_search_fn="strong_wolfe")


def _dominant_frequency(values: np.ndarray, axes: Sequence[np.ndarray]) -> float:
    """The largest over axes of the frequency (cycles per unit) carrying the most power."""
    best = 0.0
    for a, ax in enumerate(axes):
        v = np.moveaxis(values, a, -1)
        spec = np.abs(np.fft.rfft(v - v.mean(-1, keepdims=True), axis=-1)) ** 2
        spec = spec.reshape(-1, spec.shape[-1]).sum(0)
        freqs = np.fft.rfftfreq(len(ax), d=float(ax[1] - ax[0]))
        if len(spec) > 1:
            best = max(best, float(freqs[1:][np.argmax(spec[1:])]))
    return best


def _add_stage(terms: _Terms, model: Field, problem: Problem, base: MLP, dtype: torch.dtype,
               seed: int) -> tuple[float, float]:
    """Adds a stage: estimates the dominant frequency of the residual and the scale of the
    remaining error; returns (scale, frequency)."""
    box = problem.domain
    n = 256 if box.dim == 1 else (64 if box.dim == 2 else 16)
    axes, pts = box.grid(n)
    X = box.tensor(pts, dtype)
    r = terms.ev.pde(X)[0].detach().double().numpy().reshape([len(a) for a in axes])
    f = _dominant_frequency(r, axes)
    # the first layer sees coordinates scaled to [-1, 1]: f cycles per unit -> f L / 2 per unit
    span = float(max(box.hi - box.lo))
    kappa = 2 * math.pi * max(f, 0.5 / span) * span / 2
    spec = MLP(width=base.width, depth=base.depth, activation="tanh", first_scale=kappa)
    net = spec.build(model.embedding.out_features, len(problem.outputs), dtype, seed)
    # the remaining error's scale: |R(u)| / |J v| with J v = (R(u + h v) - R(u)) / h, v the
    # new stage at initialisation, so that the new stage's output is O(1) when it has fitted
    # every loss term starts this stage at one: a boundary misfit of 1e-6 matters as much as
    # a residual of 1e-3 when the aim is 1e-8 (the weights so far would let it be ignored)
    losses = torch.tensor([float(v.detach()) for v in terms.term_losses(causal=False)],
                          dtype=torch.float64)
    terms.lam = 1.0 / (terms.fixed * losses).clamp_min(1e-300)
    r0 = terms.residual_vector()
    h = 1e-3
    model.add_stage(net, h)
    jv = (terms.residual_vector() - r0) / h
    n0, nj = float(torch.linalg.vector_norm(r0)), float(torch.linalg.vector_norm(jv))
    scale = float(min(max(n0 / max(nj, 1e-300), 1e-14), 1.0))
    model.scales[-1] = scale
    terms.scale = 1.0 / len(losses)
    return scale, f


def _build(problem: Problem, spec: NetworkSpec | nn.Module, s: Strategy,
           dtype: torch.dtype) -> tuple[Field, str]:
    box = problem.domain
    transform = OutputTransform(box, problem.outputs, problem.conditions, enabled=s.hard,
                                explicit=problem.transform)
    periodic = {name: s.periodic_harmonics for name in transform.periodic}
    emb = Embedding(box, periodic, s.fourier_features, s.fourier_sigma, s.seed, dtype)
    if isinstance(spec, NetworkSpec):
        net = spec.build(emb.out_features, len(problem.outputs), dtype, s.seed)
        desc = spec.describe()
    elif isinstance(spec, nn.Module):
        net = copy.deepcopy(spec).to(dtype) if s.time_windows > 1 else spec.to(dtype)
        desc = type(spec).__name__
    else:
        raise TypeError(f"solve: network must be a pinn network spec (pinn.MLP, ...) or an "
                        f"nn.Module, got {type(spec).__name__}")
    model = Field(emb, net, transform)
    _check_hard(problem, model, transform, dtype)
    return model, desc


def _fit(problem: Problem, model: Field, spec: NetworkSpec | nn.Module, s: Strategy,
         dtype: torch.dtype, start: float, history: list[dict[str, float]],
         rel: Callable[[], float] | None, bar: _Progress, step: int,
         callback: Callable[[dict[str, float]], None] | None) -> int:
    terms = _Terms(problem, model, s, dtype, s.seed)
    step = _train_phase(terms, model, problem, s.adam_steps, s.lbfgs_steps, s.lr, start,
                        history, rel, bar, 1, step, callback)
    base = spec if isinstance(spec, MLP) else MLP()
    for k in range(2, s.stages + 1):
        if time.perf_counter() - start > s.max_seconds:
            break
        scale, f = _add_stage(terms, model, problem, base, dtype, s.seed + k)
        history.append({"step": step, "phase": "stage", "stage": k, "scale": scale,
                        "frequency": f, "seconds": time.perf_counter() - start})
        step = _train_phase(terms, model, problem, s.stage_adam_steps, s.stage_lbfgs_steps,
                            s.lr, start, history, rel, bar, k, step, callback)
    return step


def solve(problem: Problem, network: NetworkSpec | nn.Module | None = None,
          strategy: Strategy | None = None, *, steps: int | None = None,
          progress: bool = True,
          callback: Callable[[dict[str, float]], None] | None = None) -> Solution:
    """Trains a PINN for `problem`; `steps` (if given) overrides the L-BFGS step count."""
    s = strategy or Strategy()
    if steps is not None:
        s = Strategy.from_dict({**s.to_dict(), "lbfgs_steps": int(steps)})
    dtype = s.torch_dtype
    torch.manual_seed(s.seed)
    spec = network if network is not None else MLP()
    for u in problem.unknowns:
        u.to(dtype)
    history: list[dict[str, float]] = []
    per_window = s.adam_steps + s.lbfgs_steps + (s.stages - 1) * (s.stage_adam_steps
                                                                   + s.stage_lbfgs_steps)
    windows = s.time_windows if problem.domain.time is not None else 1
    bar = _Progress(progress, per_window * windows, problem.name)
    start = time.perf_counter()
    try:
        if windows > 1:
            model, desc, step = _solve_windows(problem, spec, s, dtype, start, history, bar,
                                               callback)
        else:
            model, desc = _build(problem, spec, s, dtype)
            rel = _rel_l2_fn(problem, model, dtype)
            step = _fit(problem, model, spec, s, dtype, start, history, rel, bar, 0, callback)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    return Solution(problem, model, s, desc, history, seconds, step)


class Windowed(nn.Module):
    """A solution made of time windows: `fields[k]` holds on ``[edges[k], edges[k+1]]``."""

    def __init__(self, edges: Sequence[float], t_index: int) -> None:
        super().__init__()
        self.fields = nn.ModuleList()
        self.edges = [float(e) for e in edges]
        self.t_index = t_index

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        if len(self.fields) == 1:
            return self.fields[0](X)
        inner = torch.as_tensor(self.edges[1 : len(self.fields)], dtype=X.dtype)
        idx = torch.bucketize(X[:, self.t_index].detach().contiguous(), inner, right=True)
        parts, where = [], []
        for k, f in enumerate(self.fields):
            rows = (idx == k).nonzero().squeeze(1)
            if len(rows):
                parts.append(f(X[rows]))
                where.append(rows)
        order = torch.argsort(torch.cat(where))
        out = torch.cat(parts)[order]
        return out


def _window_problem(problem: Problem, k: int, t0: float, t1: float,
                    previous: nn.Module | None, s: Strategy) -> Problem:
    box = problem.domain
    bounds = {n: (t0, t1) if n == box.time else box.bounds(n) for n in box.names}
    sub = Box(time=box.time, **bounds)
    conds = []
    for c in problem.conditions:
        if isinstance(c, Initial):
            if c.derivative != 0:
                raise ValueError(f"Problem {problem.name!r}: time windows carry initial values "
                                 f"from one window to the next, not {c.label()}")
            if k == 0:
                conds.append(c)
                continue
            # the previous window's values at t0, as observations (soft)
            pts = sub.sample_slice(box.time, t0, c.n or s.n_condition, s.sampler,
                                   s.seed + 31 * k)
            X = torch.as_tensor(pts, dtype=s.torch_dtype)
            with torch.no_grad():
                vals = previous(X)[:, c.columns(problem.outputs)].double().numpy()
            conds.append(Data(points={n: pts[:, i] for i, n in enumerate(box.names)},
                              values=vals, output=c.output, weight=c.weight))
        elif isinstance(c, Data):
            ti = box.index(box.time)
            cols = [np.asarray(c.points[n], dtype=np.float64).reshape(-1) for n in box.names]
            keep = (cols[ti] >= t0) & ((cols[ti] < t1) | (t1 >= box.bounds(box.time)[1]))
            if keep.any():
                vals = np.asarray(c.values, dtype=np.float64).reshape(len(cols[0]), -1)[keep]
                conds.append(dataclasses.replace(
                    c, points={n: col[keep] for n, col in zip(box.names, cols, strict=True)},
                    values=vals))
        else:
            conds.append(c)
    return Problem(domain=sub, residual=problem.residual, conditions=conds,
                   outputs=problem.outputs, unknowns=problem.unknowns, transform=None,
                   reference=None, name=f"{problem.name}[{k}]")


def _solve_windows(problem: Problem, spec: NetworkSpec | nn.Module, s: Strategy,
                   dtype: torch.dtype, start: float, history: list[dict[str, float]],
                   bar: _Progress, callback: Callable[[dict[str, float]], None] | None
                   ) -> tuple[Windowed, str, int]:
    """Time marching: one network per time window, each starting from the previous one's
    values at its initial time (Krishnapriyan et al. 2021's sequence-to-sequence training;
    Wight & Zhao 2020's time-adaptive PINNs)."""
    box = problem.domain
    if problem.transform is not None:
        raise ValueError(f"Problem {problem.name!r}: an explicit transform cannot be combined "
                         f"with time windows")
    t0, t1 = box.bounds(box.time)
    K = s.time_windows
    edges = [t0 + (t1 - t0) * k / K for k in range(K + 1)]
    whole = Windowed(edges, box.index(box.time))
    step = 0
    desc = ""
    for k in range(K):
        remaining = s.max_seconds - (time.perf_counter() - start)
        if remaining <= 0:
            break
        sub = _window_problem(problem, k, edges[k], edges[k + 1],
                              whole if k > 0 else None, s)
        # each window gets an equal share of what is left
        budget = (time.perf_counter() - start) + remaining / (K - k)
        sk = Strategy.from_dict({**s.to_dict(), "max_seconds": budget, "seed": s.seed + k})
        model, desc = _build(sub, spec, sk, dtype)
        whole.fields.append(model)
        rel = _rel_l2_fn(problem, whole, dtype, t_max=edges[k + 1])
        step = _fit(sub, model, spec, sk, dtype, start, history, rel, bar, step, callback)
        for p in model.parameters():
            p.requires_grad_(False)
        history.append({"step": step, "phase": "window", "window": k + 1,
                        "seconds": time.perf_counter() - start})
    return whole, f"{desc}, {K} time windows", step


def rebuild(problem: Problem, spec: NetworkSpec | nn.Module, s: Strategy,
            struct: dict[str, Any]) -> nn.Module:
    """An untrained model with the structure (windows, stages) of a trained one, for
    `load_state_dict`."""
    dtype = s.torch_dtype
    base = spec if isinstance(spec, MLP) else MLP()

    def with_stages(p: Problem, n: int) -> Field:
        model, _ = _build(p, spec, s, dtype)
        for _ in range(n - 1):
            net = MLP(width=base.width, depth=base.depth, activation="tanh",
                      first_scale=1.0).build(model.embedding.out_features, len(p.outputs),
                                             dtype, 0)
            model.add_stage(net, 1.0)
        return model

    stages = [int(n) for n in struct.get("stages", [1])]
    windows = int(struct.get("windows", 1))
    if windows <= 1:
        return with_stages(problem, stages[0])
    box = problem.domain
    t0, t1 = box.bounds(box.time)
    edges = [t0 + (t1 - t0) * k / windows for k in range(windows + 1)]
    whole = Windowed(edges, box.index(box.time))

    def zeros(X: torch.Tensor) -> torch.Tensor:
        return X.new_zeros(len(X), len(problem.outputs))

    for k, n in enumerate(stages):
        sub = _window_problem(problem, k, edges[k], edges[k + 1], zeros, s)
        whole.fields.append(with_stages(sub, n))
    return whole


def _check_hard(problem: Problem, model: Field, transform: OutputTransform,
                dtype: torch.dtype) -> None:
    """The conditions the transform claims must hold at initialisation, to rounding."""
    if not transform.satisfied:
        return
    ev = Evaluator(problem, model)
    for i in transform.satisfied:
        c = problem.conditions[i]
        if isinstance(c, Periodic):
            # the embedding makes every derivative periodic, but an exact initial condition
            # whose derivative is not periodic (Allen-Cahn's x^2 cos(pi x)) keeps its own
            # derivative jump: only the values are guaranteed
            c = dataclasses.replace(c, derivatives=0)
        pts = c.sample(problem.domain, 64, "uniform", 12345 + i)
        pts_t = {k: torch.as_tensor(v, dtype=torch.int64 if v.dtype.kind == "i" else dtype)
                 for k, v in pts.items()}
        r = c.residual(ev, pts_t, c.columns(problem.outputs)).detach()
        tol = 1e-6 if dtype == torch.float64 else 1e-3
        if float(r.abs().max()) > tol:
            raise ValueError(f"Problem {problem.name!r}: {c.label()} is imposed by the output "
                             f"transform but does not hold (max deviation "
                             f"{float(r.abs().max()):.2e}); check that the initial and "
                             f"boundary values agree at the corners, or the transform")
