"""The loss of a PINN and what reshapes it during training.

`Terms` holds the collocation and condition points and the loss terms
``sum_k lambda_k * w_k * mean(r_k^2)`` (the PDE residual(s) at the collocation points and every
condition not imposed exactly); the adaptive weights (`update_gradnorm`, `update_ntk`),
residual-based resampling (`resample`) and multi-stage training (`add_stage`) act on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fields import distributed
from fields.pinn.field import Evaluator, Field
from fields.pinn.networks import MLP
from fields.pinn.problem import Problem
from fields.pinn.strategy import Strategy

__all__ = ["Terms", "add_stage", "ntk_traces", "resample", "trainable_params",
           "update_gradnorm", "update_ntk"]


class Terms:
    """Points and loss terms of one training state: collocation points `X` (N, dim), each
    soft condition's points, the adaptive weights `lam` (n_terms,) float64, the fixed weights
    `fixed` (n_terms,), the causal time weights and the objective's scale (later stages)."""

    def __init__(self, problem: Problem, model: Field, strategy: Strategy, dtype: torch.dtype,
                 seed: int) -> None:
        self.problem = problem
        self.box = problem.domain
        strategy = strategy.sized(self.box.dim)
        self.s = strategy
        self.dtype = dtype
        self.device = strategy.torch_device
        self.ev = Evaluator(problem, model)
        self.X = self.box.tensor(self.box.sample(strategy.n_collocation, strategy.sampler, seed),
                                 dtype).to(self.device)
        self.soft = [(i, c) for i, c in enumerate(problem.conditions)
                     if i not in model.transform.satisfied]
        self.cond_pts: list[dict[str, torch.Tensor]] = []
        self.cond_cols: list[list[int]] = []
        for i, c in self.soft:
            pts = c.sample(self.box, c.n or strategy.n_condition, strategy.sampler,
                           seed + 1000 * (i + 1))
            self.cond_pts.append({k: torch.as_tensor(v, dtype=torch.int64 if v.dtype.kind == "i"
                                                     else dtype, device=self.device)
                                  for k, v in pts.items()})
            self.cond_cols.append(c.columns(problem.outputs))
        self.names = ["pde"] + [c.label() for _, c in self.soft]
        self.lam = torch.ones(len(self.names), dtype=torch.float64)
        self.fixed = torch.tensor([1.0] + [c.weight for _, c in self.soft], dtype=torch.float64)
        self.causal_eps = strategy.causal if self.box.time is not None else 0.0
        self.causal_w: torch.Tensor | None = None
        self.causal_frozen = False
        self.scale = 1.0  # a constant factor of the objective (later stages)

    def pde_terms(self, X: torch.Tensor, causal: bool, shard: bool = False) -> torch.Tensor:
        """The PDE's loss term at X (N, dim): the mean squared residual, causally weighted
        over time slices when `causal` and the strategy asks for it.

        `shard` (torchrun, `fields.distributed`): this rank evaluates its share of X and
        returns world size x (its share's sum / N), so that the ranks' mean of the term (and
        of its gradient) is the whole set's mean; the causal weights come from the whole
        set's slice losses (all-reduced)."""
        n_all = X.shape[0]
        ranks = distributed.world_size() if shard else 1
        if shard:
            X = distributed.shard(X)
        rs = self.ev.pde(X)
        sq = sum(r * r for r in rs).reshape(-1)
        if not (causal and self.causal_eps > 0):
            return sq.sum() * (ranks / n_all) if shard else sq.mean()
        ti = self.box.index(self.box.time)
        t0, t1 = self.box.bounds(self.box.time)
        m = self.s.causal_chunks
        idx = ((X[:, ti] - t0) / (t1 - t0) * m).long().clamp(0, m - 1)
        sums = torch.zeros(m, dtype=sq.dtype, device=sq.device).index_add(0, idx, sq)
        counts = torch.bincount(idx, minlength=m).to(sq.dtype)
        if shard:
            counts = distributed.all_sum(counts.cpu()).to(sq.dtype).to(sq.device)
        counts = counts.clamp_min(1.0)
        losses = sums / counts * ranks
        whole = losses.detach() if not shard else \
            distributed.all_sum(sums.detach().cpu()).to(sq.dtype).to(sq.device) / counts
        if self.causal_frozen and self.causal_w is not None:
            w = self.causal_w  # fixed within an L-BFGS chunk: one objective per line search
        else:
            with torch.no_grad():
                cum = torch.cat([whole.new_zeros(1), torch.cumsum(whole, 0)[:-1]])
                w = torch.exp(-self.causal_eps * cum)
            self.causal_w = w
        return (w * losses).mean()

    def term_losses(self, causal: bool = True, shard: bool = False) -> list[torch.Tensor]:
        """Every term's loss (the PDE's, then each soft condition's), with the graph. `shard`:
        the PDE term over this rank's share of the collocation points (`pde_terms`); the
        conditions' few points are evaluated whole on every rank."""
        out = [self.pde_terms(self.X, causal, shard)]
        for (_, c), pts, cols in zip(self.soft, self.cond_pts, self.cond_cols, strict=True):
            r = c.residual(self.ev, pts, cols)
            out.append((r * r).mean())
        return out

    def total(self, losses: Sequence[torch.Tensor]) -> torch.Tensor:
        """The objective: the terms weighted by ``lam * fixed``, times the stage scale."""
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

    def state_dict(self) -> dict[str, Any]:
        """What training changes (points, weights, scale), for a checkpoint; the condition
        points are drawn again from the seed."""
        return {"X": self.X.detach().clone(), "lam": self.lam.clone(),
                "causal_w": None if self.causal_w is None else self.causal_w.clone(),
                "scale": self.scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores `state_dict`."""
        self.X = state["X"].to(self.dtype)
        self.lam = state["lam"].to(torch.float64)
        self.causal_w = state["causal_w"]
        self.scale = float(state["scale"])

    def residual_norm(self, X: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """``|r(x)|`` (N,) at points X (N, dim), in chunks, without a graph."""
        out = []
        for i in range(0, len(X), chunk):
            rs = self.ev.pde(X[i : i + chunk])
            out.append(torch.sqrt(sum(r.detach() ** 2 for r in rs)).reshape(-1))
        return torch.cat(out)


def trainable_params(model: Field, problem: Problem) -> list[nn.Parameter]:
    """What the optimisers move: the field's unfrozen parameters, then the problem's unknowns."""
    ps = [p for p in model.parameters() if p.requires_grad]
    for u in problem.unknowns:
        ps += list(u.parameters())
    return ps


def _squared_norm(grads: Sequence[torch.Tensor | None]) -> float:
    return sum(float((g.double() ** 2).sum()) for g in grads if g is not None)


def update_gradnorm(terms: Terms, params: list[nn.Parameter]) -> None:
    """Gradient-norm weights. Learning-rate annealing: lambda_k = sum_j |grad L_j| / |grad L_k|."""
    norms = []
    for lk in terms.term_losses():
        g = torch.autograd.grad(lk, params, retain_graph=True, allow_unused=True)
        norms.append(math.sqrt(_squared_norm(g)))
    _blend_weights(terms, torch.tensor(norms, dtype=torch.float64))


def ntk_traces(terms: Terms, params: list[nn.Parameter], probes: int,
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


def update_ntk(terms: Terms, params: list[nn.Parameter], step: int) -> None:
    """NTK weights (Wang, Yu & Perdikaris 2022): lambda_k = sum_j tr(K_jj) / tr(K_kk), each
    trace per point, so that every term converges at the same rate under gradient descent."""
    g = torch.Generator().manual_seed(terms.s.seed + 31 * step + 7)
    _blend_weights(terms, ntk_traces(terms, params, terms.s.ntk_probes, g))


def _blend_weights(terms: Terms, sizes: torch.Tensor) -> None:
    """lambda_k = sum(sizes) / sizes_k, blended into the running weights by
    `weight_momentum`."""
    sizes = sizes.clamp_min(1e-30)
    a = terms.s.weight_momentum
    terms.lam = a * terms.lam + (1 - a) * sizes.sum() / sizes


def resample(terms: Terms, step: int) -> None:
    """New collocation points `terms.X`: RAD redraws them from a random pool with probability
    ``|r|^rad_k / mean + rad_c``; RAR adds the pool's `rar_add` worst points."""
    s = terms.s
    box = terms.box
    pool = box.tensor(box.sample(s.n_collocation * s.resample_pool, "uniform",
                                 s.seed + 17 + step), terms.dtype).to(terms.device)
    r = terms.residual_norm(pool)
    if s.resample == "rad":
        p = r ** s.rad_k
        p = p / p.mean().clamp_min(1e-300) + s.rad_c
        g = torch.Generator().manual_seed(s.seed + step)
        idx = torch.multinomial(p.double().cpu(), s.n_collocation, replacement=False,
                                generator=g)
        terms.X = pool[idx.to(pool.device)]
    else:  # rar: add the worst points
        idx = torch.topk(r, min(s.rar_add, len(r))).indices
        terms.X = torch.cat([terms.X, pool[idx]])


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


def add_stage(terms: Terms, model: Field, problem: Problem, base: MLP, dtype: torch.dtype,
              seed: int) -> tuple[float, float]:
    """Adds a stage: estimates the dominant frequency of the residual and the scale of the
    remaining error; returns (scale, frequency)."""
    box = problem.domain
    n = 256 if box.dim == 1 else (64 if box.dim == 2 else 16)
    axes, pts = box.grid(n)
    X = box.tensor(pts, dtype).to(terms.device)
    r = terms.ev.pde(X)[0].detach().double().cpu().numpy().reshape([len(a) for a in axes])
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

