"""One PINN training run as a `fields.train.Task`: the loop is `fields.train.train`, the PINN
supplies its step.

A run is a list of `Phase`s (`plan`): Adam, then full-batch L-BFGS, then for each further stage
(multi-stage training) Adam and L-BFGS again. Each `PinnTask.train_step` is one Adam step or
one L-BFGS iteration (with its line search) of the current phase; when a phase has used its
budget, or L-BFGS has stalled, the next phase begins (a new stage is added when the next step
runs, so that a run stopped by its time budget never ends on an untrained stage); `done` turns
True after the last phase. Every `eval_every` steps of a phase the task records the loss and
the relative L2 error (`history`). An L-BFGS phase keeps the best parameters it has seen and
restores them at its end (L-BFGS can diverge); `finish` does the same when the loop stops in
the middle of one. The phase, the points, the weights, the second optimiser and the best state
are the task's `state_dict`, so a run resumes where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fields import distributed
from fields.pinn.field import Field, structure
from fields.pinn.networks import MLP, NetworkSpec
from fields.pinn.problem import Problem
from fields.pinn.strategy import Strategy
from fields.pinn.terms import (
    Terms,
    add_stage,
    resample,
    trainable_params,
    update_gradnorm,
    update_ntk,
)

__all__ = ["Objective", "Phase", "PinnTask", "make_lbfgs", "plan"]


@dataclass
class Phase:
    """One optimiser's share of a run: `kind` ``"adam"`` or ``"lbfgs"``, the `stage` it
    trains (1: the first network) and its step budget."""

    kind: str
    stage: int
    steps: int


def plan(s: Strategy, total: int | None = None) -> list[Phase]:
    """The phases of a run: Adam (`adam_steps`), L-BFGS (`lbfgs_steps`), then per further
    stage Adam (`stage_adam_steps`) and L-BFGS (`stage_lbfgs_steps`).

    With a `total` (every optimisation step counted), phases keep their own budgets in order
    until the total is spent (so Adam keeps min(adam_steps, total) and L-BFGS gets the rest);
    a total beyond the sum of the budgets goes to the last L-BFGS phase (to the last phase
    with steps when L-BFGS is off)."""
    phases = [Phase("adam", 1, int(s.adam_steps)), Phase("lbfgs", 1, int(s.lbfgs_steps))]
    for k in range(2, s.stages + 1):
        phases += [Phase("adam", k, int(s.stage_adam_steps)),
                   Phase("lbfgs", k, int(s.stage_lbfgs_steps))]
    if total is None:
        return phases
    own = [p.steps for p in phases]
    left = int(total)
    for p in phases:
        p.steps = min(p.steps, left)
        left -= p.steps
    if left > 0:
        with_steps = [i for i, n in enumerate(own) if n > 0]
        lbfgs = [i for i in with_steps if phases[i].kind == "lbfgs"]
        phases[(lbfgs or with_steps or [0])[-1]].steps += left
    return phases


def make_lbfgs(params: list[nn.Parameter], s: Strategy) -> torch.optim.Optimizer:
    """Full-batch L-BFGS doing one iteration per `step` call (strong Wolfe line search, `s.history`
    curvature pairs); called again and again it follows the same path as one call of many
    iterations (its memory is in its state), when the closure is an `Objective`. With
    `s.quasi_newton` ``"bfgs"``: dense BFGS (`fields.pinn.optim.BFGS`), likewise."""
    if s.quasi_newton == "bfgs":
        from fields.pinn.optim import BFGS

        return BFGS(params)
    return torch.optim.LBFGS(params, lr=1.0, max_iter=1, max_eval=4 * s.eval_every,
                             history_size=s.history, tolerance_grad=0.0, tolerance_change=0.0,
                             line_search_fn="strong_wolfe")


class Objective:
    """The L-BFGS closure ``fn`` (zeroes the gradients, returns the loss after its backward
    pass), remembering its last evaluations: L-BFGS called once per iteration starts each call
    by evaluating the point its last line search accepted, and gets it here without a second
    forward and backward pass. `forget` when the objective changes (new points, weights)."""

    def __init__(self, params: list[nn.Parameter], fn: Callable[[], torch.Tensor],
                 keep: int = 32) -> None:
        self.params = params
        self.fn = fn
        self.keep = keep
        self.seen: list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]] = []
        self.evaluations = 0  # forward and backward passes done

    def _flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def __call__(self) -> torch.Tensor:
        x = self._flat()
        for key, loss, grads in self.seen:
            if torch.equal(key, x):
                for p, g in zip(self.params, grads, strict=True):
                    p.grad = None if g is None else g.clone()
                self.seen.clear()
                return loss
        loss = self.fn()
        self.evaluations += 1
        grads = [None if p.grad is None else p.grad.detach().clone() for p in self.params]
        self.seen.append((x, loss.detach(), grads))
        del self.seen[: -self.keep]
        return loss

    def forget(self) -> None:
        """Drops the remembered evaluations (the objective has changed)."""
        self.seen.clear()


class PinnTask:
    """Trains `field` on `problem` under `strategy` as `fields.train.train` drives it.

    `module` is what checkpoints hold (the field, or the whole `Windowed` solution of a
    time-marching run); `optimizer` is the current phase's. `total` caps the optimisation
    steps (see `plan`); `steps` is the run's step count. `step0` is the global step the run
    starts at (time windows count on), `rel` measures the relative L2 error for the history,
    `clock` gives the seconds shown in the history, `on_record` sees every history record.
    """

    def __init__(self, problem: Problem, field: Field, spec: NetworkSpec | nn.Module,
                 strategy: Strategy, dtype: torch.dtype, *, module: nn.Module | None = None,
                 total: int | None = None, step0: int = 0,
                 rel: Callable[[], float] | None = None,
                 history: list[dict[str, Any]] | None = None,
                 clock: Callable[[], float] | None = None,
                 on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.problem = problem
        self.field = field
        self.base = spec if isinstance(spec, MLP) else MLP()
        self.s = strategy
        self.dtype = dtype
        self.module = module if module is not None else field
        self.terms = Terms(problem, field, strategy, dtype, strategy.seed)
        self.phases = plan(strategy, total)
        self.steps = sum(p.steps for p in self.phases)
        self.rel = rel
        self.history = history if history is not None else []
        self.clock = clock or (lambda: 0.0)
        self.on_record = on_record
        self.global_step = step0
        self.stages = len(field.networks)
        self.index = 0  # the current phase
        self.k = 0  # steps done in it
        self.entered = False  # whether the current phase has begun
        self.done = False
        # changes whenever the loss changes meaning (points, weights, stages): the training
        # loop's divergence guard then forgets the loss's running level
        self.objective_version = 0
        # L-BFGS bookkeeping: iterations in this evaluation chunk, since the last resampling,
        # the best (objective, parameters) and the objective at the last chunk's end
        self.chunk = 0
        self.since = 0
        self.best: tuple[float, list[torch.Tensor] | None] = (math.inf, None)
        self.current = math.inf
        self.params = trainable_params(field, problem)
        self.optimizer: torch.optim.Optimizer = torch.optim.Adam(self.params, lr=strategy.lr)
        self.optimizer_phase = -1  # the phase `optimizer` belongs to (-1: none begun)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.objective: Objective | None = None
        self._skip_empty()

    # -- phases ----------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """The current phase."""
        return self.phases[self.index]

    @property
    def label(self) -> str:
        """What the run is doing, for a progress bar: ``[stage k ]Adam|L-BFGS``."""
        if self.done:
            return "done"
        p = self.phase
        return (f"stage {p.stage} " if self.s.stages > 1 else "") + (
            "Adam" if p.kind == "adam" else "L-BFGS")

    def _skip_empty(self) -> None:
        """Moves past phases without steps; `done` after the last; begins the next phase now
        unless it needs a new stage (added when its first step runs)."""
        while self.index < len(self.phases) and self.phases[self.index].steps <= 0:
            self.index += 1
        if self.index >= len(self.phases):
            self.done = True
        elif self.phase.stage <= self.stages:
            self._enter()

    def _enter(self) -> None:
        """Begins the current phase: adds its stage if new, makes its optimiser."""
        p = self.phase
        s = self.s
        while p.stage > self.stages:
            self.stages += 1
            scale, f = add_stage(self.terms, self.field, self.problem, self.base, self.dtype,
                                 s.seed + self.stages)
            self.objective_version += 1
            self.history.append({"step": self.global_step, "phase": "stage",
                                 "stage": self.stages, "scale": scale, "frequency": f,
                                 "seconds": self.clock()})
        self.params = trainable_params(self.field, self.problem)
        self._make_optimizer(p.kind)
        self.optimizer_phase = self.index
        self.entered = True
        self.k = 0
        self.chunk = 0
        self.since = 0
        self.best = (math.inf, None)
        self.current = math.inf

    def _make_optimizer(self, kind: str) -> None:
        s = self.s
        if kind == "adam":
            self.optimizer = torch.optim.Adam(self.params, lr=s.lr)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda k: s.lr_decay ** (k / 1000.0))
            self.objective = None
        else:
            self.optimizer = make_lbfgs(self.params, s)
            self.scheduler = None
            self.objective = Objective(self.params, self._closure)

    def _closure(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.terms.total(self.terms.term_losses())
        loss.backward()
        return loss

    def _end_phase(self) -> None:
        if self.phase.kind == "lbfgs":
            self._restore_best()
        self.index += 1
        self.entered = False
        self._skip_empty()

    def _restore_best(self) -> bool:
        """Puts back the best parameters of this L-BFGS phase if the current ones are worse;
        then L-BFGS starts afresh (its memory belongs to the other point)."""
        self.terms.causal_frozen = False
        if self.best[1] is None or self.current <= self.best[0]:
            return False
        with torch.no_grad():
            for p, b in zip(self.params, self.best[1], strict=True):
                p.copy_(b)
        self.current = self.best[0]
        self.optimizer = make_lbfgs(self.params, self.s)
        self.objective = Objective(self.params, self._closure)
        return True

    # -- the loop's interface ----------------------------------------------------------------

    def train_step(self, step: int, progress: float) -> dict[str, float]:
        """One Adam step or one L-BFGS iteration of the current phase; returns ``loss``."""
        if self.done:
            return {"loss": math.nan}
        if not self.entered:
            self._enter()
        if self.phase.kind == "adam":
            return self._adam_step()
        return self._lbfgs_step()

    def _adam_step(self) -> dict[str, float]:
        s, terms, k = self.s, self.terms, self.k
        if s.resample and k > 0 and k % s.resample_every == 0:
            resample(terms, self.global_step)
            self.objective_version += 1
        if s.weighting != "fixed" and k % s.weight_every == 0:
            self.objective_version += 1
            if s.weighting == "gradnorm":
                update_gradnorm(terms, self.params)
            else:
                update_ntk(terms, self.params, self.global_step)
        self.optimizer.zero_grad(set_to_none=True)
        ranks = distributed.active()  # torchrun: the PDE term over this rank's share
        losses = terms.term_losses(shard=ranks)
        loss = terms.total(losses)
        loss.backward()
        self.optimizer.step()  # gradients averaged over the ranks first
        assert self.scheduler is not None
        self.scheduler.step()
        self.global_step += 1
        self.k += 1
        value = float(loss.detach())
        if k % s.eval_every == 0 or self.k == self.phase.steps:
            plain = terms.plain(losses)
            if ranks:  # the ranks' mean: the whole set's (every rank records alike)
                plain = float(distributed.all_sum([plain])[0]) / distributed.world_size()
            if math.isfinite(plain):
                # a non-finite loss is the training loop's divergence guard's to handle
                self._record("Adam", plain)
        if self.k >= self.phase.steps:
            self._end_phase()
        return {"loss": value}

    def _lbfgs_step(self) -> dict[str, float]:
        s, terms = self.s, self.terms
        assert self.objective is not None
        if self.chunk == 0:
            if s.resample and self.since >= s.resample_every:
                # new points: L-BFGS's last curvature pair straddles the old loss and the new
                # one, so it starts afresh; dense BFGS measures each pair within one
                # iteration and keeps its inverse Hessian (the loss changes little)
                resample(terms, self.global_step)
                self.objective_version += 1
                if s.quasi_newton != "bfgs":
                    self.optimizer = make_lbfgs(self.params, s)
                self.objective = Objective(self.params, self._closure)
                self.best = (math.inf, None)
                self.since = 0
            if terms.causal_eps > 0:  # new causal weights for this chunk, then fixed
                self.objective_version += 1
                terms.causal_frozen = False
                terms.term_losses()
                terms.causal_frozen = True
                self.objective.forget()
        before = torch.cat([p.detach().reshape(-1) for p in self.params])
        loss = self.optimizer.step(self.objective)
        # torchrun: L-BFGS runs whole on every rank (its line search needs the full
        # objective); rank 0's result is kept everywhere, so ranks cannot drift apart
        distributed.broadcast_tensors(self.params)
        moved = not torch.equal(before, torch.cat([p.detach().reshape(-1) for p in self.params]))
        self.global_step += 1
        self.k += 1
        self.chunk += 1
        self.since += 1
        if self.chunk >= s.eval_every or self.k >= self.phase.steps or not moved:
            if self._chunk_end(stalled=not moved) or self.k >= self.phase.steps:
                self._end_phase()
        return {"loss": float(loss.detach())}

    def _chunk_end(self, stalled: bool) -> bool:
        """Measures the objective (without causal weights) after a chunk of L-BFGS
        iterations, keeps the best parameters, records; True when the phase must end (a
        non-finite objective, or L-BFGS stalled with no resampling to unstick it)."""
        self.chunk = 0
        losses = self.terms.term_losses(causal=False)
        current = float(self.terms.total(losses).detach())
        plain = self.terms.plain(losses)
        self.current = current
        if not math.isfinite(current):
            return True
        if current < self.best[0]:
            self.best = (current, [p.detach().clone() for p in self.params])
        self._record("L-BFGS", plain)
        if stalled:
            # L-BFGS gave up: converged, or no descent direction left
            if not self.s.resample:
                return True
            self.since = self.s.resample_every  # stalled on these points: draw new ones
        return False

    def finish(self) -> None:
        """Ends the run where the loop stopped it (a budget, Ctrl-C): an L-BFGS phase measures
        its last chunk and keeps its best parameters."""
        if not self.done and self.entered and self.phase.kind == "lbfgs":
            if self.chunk > 0:
                self._chunk_end(stalled=False)
            self._restore_best()
        self.terms.causal_frozen = False

    def _record(self, phase: str, loss: float) -> None:
        rec: dict[str, Any] = {"step": self.global_step, "phase": phase,
                               "stage": self.phase.stage, "loss": loss,
                               "seconds": self.clock()}
        if self.rel is not None:
            rec["rel_l2"] = self.rel()
        for u in self.problem.unknowns:
            rec[u.name] = u.item()
        self.history.append(rec)
        if self.on_record is not None:
            self.on_record(rec)

    def evaluate(self, final: bool) -> dict[str, float]:
        """The relative L2 error against the reference (when the problem has one) and the
        loss, now."""
        out: dict[str, float] = {}
        if self.rel is not None:
            out["rel_l2"] = self.rel()
        with torch.enable_grad():
            out["loss"] = self.terms.plain(self.terms.term_losses(causal=False))
        return out

    # -- state -------------------------------------------------------------------------------

    @property
    def optimizer_bytes(self) -> int:
        """What a checkpoint holds beyond two moments per parameter: dense BFGS's inverse
        Hessian (n x n in float64) when a BFGS phase is planned."""
        if self.s.quasi_newton != "bfgs" or not any(p.kind == "lbfgs" and p.steps
                                                    for p in self.phases):
            return 0
        n = sum(p.numel() for p in self.params)
        return 8 * n * n

    def state_dict(self) -> dict[str, Any]:
        """The phase, the points and weights, the scheduler, the L-BFGS bookkeeping, the
        unknowns and the history (the optimiser itself is saved by the loop), with the
        model's structure so that the checkpoint can be rebuilt."""
        return {
            "index": self.index, "k": self.k, "entered": self.entered, "done": self.done,
            "optimizer_phase": self.optimizer_phase, "stages": self.stages,
            "global_step": self.global_step, "chunk": self.chunk, "since": self.since,
            "best_value": self.best[0], "best": self.best[1], "current": self.current,
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "terms": self.terms.state_dict(),
            "unknowns": {u.name: u.item() for u in self.problem.unknowns},
            "unknowns_raw": {u.name: u.raw.detach().clone() for u in self.problem.unknowns},
            "structure": structure(self.module),
            "history": list(self.history),
        }

    def prepare(self, state: dict[str, Any]) -> None:
        """Before `fields.train.train(resume=...)`: makes the optimiser of the phase the
        checkpoint's optimiser belongs to, so that the loop can load its state (the field
        must already have the checkpoint's stages: `fields.pinn.solve.rebuild`)."""
        self.stages = len(self.field.networks)
        if int(state["stages"]) != self.stages:
            raise ValueError(f"the checkpoint's field has {state['stages']} stages, the "
                             f"rebuilt one {self.stages}")
        self.params = trainable_params(self.field, self.problem)
        phase = int(state["optimizer_phase"])
        self._make_optimizer(self.phases[phase].kind if phase >= 0 else "adam")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores `state_dict` (after `prepare` and the loop's loading of the optimiser)."""
        self.index, self.k = int(state["index"]), int(state["k"])
        self.entered, self.done = bool(state["entered"]), bool(state["done"])
        self.optimizer_phase = int(state["optimizer_phase"])
        self.global_step = int(state["global_step"])
        self.chunk, self.since = int(state["chunk"]), int(state["since"])
        self.best = (float(state["best_value"]), state["best"])
        self.current = float(state["current"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.terms.load_state_dict(state["terms"])
        with torch.no_grad():
            for u in self.problem.unknowns:
                if u.name in state["unknowns_raw"]:
                    u.raw.copy_(state["unknowns_raw"][u.name])
        self.history[:] = list(state["history"])
        last = self.optimizer_phase
        if 0 <= last != self.index and self.k < self.phases[last].steps:
            # the phase that ended last has a larger budget now: it goes on
            self.index, self.entered, self.done = last, True, False
        if self.index >= len(self.phases):
            self.done = True
        if self.done:
            return
        if not self.entered:
            self._skip_empty()  # the next phase had not begun: it begins now
        elif self.optimizer_phase != self.index:
            raise ValueError("the checkpoint's optimiser is not its current phase's")
        elif self.k >= self.phase.steps:
            self._end_phase()  # a smaller budget than the checkpoint's run had
