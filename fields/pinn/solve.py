"""`solve(problem, network, strategy)`: trains a PINN and returns a `Solution`.

The loss is ``sum_k lambda_k * w_k * mean(r_k^2)`` over the PDE residual(s) at the collocation
points and every condition that is not imposed exactly (`fields.pinn.terms`). Training runs on
the one training loop, `fields.train.train`, with a `fields.pinn.task.PinnTask` supplying the
steps: Adam (with optional residual-based resampling, gradient-norm or NTK weights and causal
time weights), then full-batch L-BFGS, then optionally further stages (multi-stage training),
within ``strategy.max_seconds`` of training and ``strategy.total_steps`` steps. The best
parameters seen by L-BFGS are kept (it can diverge). Time marching (`time_windows` > 1) runs
the loop once per window. With `checkpoint`, the run is checkpointed (every 120 s, at the end,
on Ctrl-C) and `resume` continues one.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fields import distributed
from fields.pinn.conditions import Data, Initial, Periodic, PointSet
from fields.pinn.field import Evaluator, Field, Windowed, structure
from fields.pinn.hard import OutputTransform
from fields.pinn.networks import MLP, Embedding, NetworkSpec
from fields.pinn.problem import Problem
from fields.pinn.strategy import Strategy
from fields.pinn.task import PinnTask, plan

__all__ = ["Captured", "Evaluator", "Field", "Solution", "Windowed", "default_network", "rebuild",
           "solve"]


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
        """The model's floating-point type."""
        return next(self.model.buffers()).dtype

    @property
    def device(self) -> torch.device:
        """Where the model is."""
        return next(self.model.buffers()).device

    def predict(self, X: np.ndarray | torch.Tensor, chunk: int = 65536) -> np.ndarray:
        """Outputs (N, n_outputs) at points (N, dim), on the host."""
        X = torch.as_tensor(np.asarray(X, dtype=np.float64), dtype=self.dtype,
                            device=self.device)
        with torch.no_grad():
            out = [self.model(X[i : i + chunk]) for i in range(0, len(X), chunk)]
        if not out:
            return np.zeros((0, len(self.problem.outputs)))
        return torch.cat(out).double().cpu().numpy()

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
        """The solution on the reference's grid: ``(*len(axes), n_outputs)``."""
        ref = self.problem.reference
        if ref is None:
            raise ValueError(f"Problem {self.problem.name!r} has no reference")
        return self.predict(ref.points()).reshape(ref.values.shape)

    def rel_l2_per_output(self) -> dict[str, float]:
        """``|u - u_ref|_2 / |u_ref|_2`` of each output on the reference grid (where the
        reference is a number: an output the reference leaves NaN is not compared)."""
        pred = self.on_reference_grid()
        ref = self.problem.reference.values
        out = {}
        for j, name in enumerate(self.problem.outputs):
            ok = np.isfinite(ref[..., j])  # NaN: outside the domain, or not compared
            if not ok.any():
                continue
            den = float(np.linalg.norm(ref[..., j][ok]))
            num = float(np.linalg.norm(pred[..., j][ok] - ref[..., j][ok]))
            out[name] = num / den if den > 0 else num
        return out

    def rel_l2(self) -> float:
        """``|u - u_ref|_2 / |u_ref|_2`` on the reference grid (the largest over outputs)."""
        return max(self.rel_l2_per_output().values())

    def unknowns(self) -> dict[str, float]:
        """The recovered unknowns of an inverse problem, by name."""
        return {u.name: u.item() for u in self.problem.unknowns}


def _rel_l2_fn(problem: Problem, model: nn.Module, dtype: torch.dtype,
               t_max: float | None = None) -> Callable[[], float] | None:
    """The relative L2 error on the reference grid (up to time `t_max` if given)."""
    ref = problem.reference
    if ref is None:
        return None
    pts_np = ref.points()
    vals_np = ref.values.reshape(len(pts_np), -1)
    ok = np.isfinite(vals_np)  # per output: NaN outside the domain, or not compared
    compared = ok.any(0)
    keep = ok[:, compared].any(1)
    pts_np, vals_np, ok = pts_np[keep], vals_np[keep][:, compared], ok[keep][:, compared]
    cols = torch.as_tensor(np.flatnonzero(compared))
    if t_max is not None:
        keep = pts_np[:, problem.domain.index(problem.domain.time)] <= t_max + 1e-12
        pts_np, vals_np, ok = pts_np[keep], vals_np[keep], ok[keep]
    device = next(model.buffers()).device
    pts = torch.as_tensor(pts_np, dtype=dtype, device=device)
    mask = torch.as_tensor(ok, device=device)
    vals = torch.as_tensor(np.where(ok, vals_np, 0.0), dtype=torch.float64, device=device)
    den = torch.linalg.vector_norm(vals, dim=0).clamp_min(1e-300)
    cols = cols.to(device)

    def rel() -> float:
        with torch.no_grad():
            pred = torch.cat([model(pts[i : i + 65536]) for i in range(0, len(pts), 65536)])
        diff = torch.where(mask, pred.double()[:, cols] - vals, 0.0)
        return float((torch.linalg.vector_norm(diff, dim=0) / den).max())

    return rel


class _Progress:
    """A progress bar on stderr (stdout stays clean for `fields solve --json`); without a
    terminal, a plain line at most every 20 s."""

    def __init__(self, enabled: bool, total: int, name: str) -> None:
        enabled = enabled and distributed.is_main()  # under torchrun, rank 0's bar only
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

    def say(self, text: str) -> None:
        """A plain line above the bar (on stderr; rank 0's only under torchrun)."""
        if not distributed.is_main():
            return
        if self.bar is not None:
            from rich.markup import escape

            self.bar.console.print(escape(text), highlight=False, soft_wrap=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


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
    model = Field(emb, net, transform).to(s.torch_device)
    _check_hard(problem, model, transform, dtype)
    return model, desc


def _describe(spec: NetworkSpec | nn.Module) -> str:
    """The network's summary for metrics and checkpoints."""
    return spec.describe() if isinstance(spec, NetworkSpec) else type(spec).__name__


def _window_total(total: int | None, windows: int, k: int) -> int | None:
    """Window k's share of a total step budget (equal shares, the first ones one more)."""
    if total is None:
        return None
    return total // windows + (1 if k < total % windows else 0)


def planned_steps(problem: Problem, s: Strategy) -> int:
    """The optimisation steps a run of `s` takes at most (every window, stage and phase)."""
    windows = s.time_windows if problem.domain.time is not None else 1
    return sum(p.steps for k in range(windows)
               for p in plan(s, _window_total(s.total_steps, windows, k)))


# fields of a Strategy that a resumed run may change: the budgets
_BUDGETS = ("adam_steps", "lbfgs_steps", "stage_adam_steps", "stage_lbfgs_steps", "total_steps",
            "max_seconds", "device")


def _resume_payload(path: str | Path, problem: Problem, s: Strategy) -> dict[str, Any]:
    """The checkpoint to continue, checked against this run: the same problem, the same
    strategy but for its budgets, no time windows. ValueError naming the file otherwise."""
    from fields.checkpoint import read_checkpoint

    payload = read_checkpoint(path)
    if payload.get("kind") != "pinn":
        raise ValueError(f"{path}: field 'kind' is {payload.get('kind')!r}, expected 'pinn'")
    if not isinstance(payload.get("task"), dict) or "optimizer" not in payload:
        raise ValueError(f"{path}: holds no training state (fields 'task', 'optimizer'); it "
                         f"cannot be resumed")
    if payload.get("problem") != problem.name:
        raise ValueError(f"{path}: field 'problem' is {payload.get('problem')!r}, but this "
                         f"run solves {problem.name!r}")
    try:
        saved = Strategy.from_dict(dict(payload["strategy"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: field 'strategy' is missing or malformed ({e})") from e
    if problem.domain.time is not None and max(s.time_windows, saved.time_windows) > 1:
        raise ValueError(f"{path}: a run with time windows (time_windows = "
                         f"{saved.time_windows}) cannot be resumed; run it again without "
                         f"--resume")
    changed = [f"{f.name} ({getattr(saved, f.name)!r} -> {getattr(s, f.name)!r})"
               for f in dataclasses.fields(Strategy) if f.name not in _BUDGETS
               and getattr(saved, f.name) != getattr(s, f.name)]
    if changed:
        raise ValueError(f"{path}: resuming keeps the checkpoint's strategy but for its budgets "
                         f"({', '.join(_BUDGETS)}); changed: {', '.join(changed)}")
    return payload


def _train(task: PinnTask, seconds: float, bar: _Progress, checkpoint: str | Path | None,
           resume: str | Path | None, extra: dict[str, Any],
           checkpoint_every: float = 120.0) -> float:
    """Runs `task` on the training loop for at most `seconds` of training, then `finish`es it
    and writes the final checkpoint; returns the training seconds (resumed ones included)."""
    from fields.train import TrainConfig, save_training_checkpoint, train

    config = TrainConfig(steps=max(task.steps, 1), max_seconds=max(seconds, 1e-9), eval_every=0,
                         checkpoint_every=checkpoint_every if checkpoint is not None else 0.0,
                         seed=task.s.seed)
    if task.done and resume is None:
        return 0.0
    state = train(task, config, checkpoint=checkpoint, resume=resume, checkpoint_extra=extra,
                  on_step=lambda st: bar.update(1, task.label, ""), show_progress=False,
                  log=bar.say)
    seen = {(r["step"], r["back_to_step"]) for r in task.history if r.get("phase") == "rollback"}
    task.history.extend({"phase": "rollback", **r} for r in state.rollbacks
                        if (r["step"], r["back_to_step"]) not in seen)
    task.history.extend({"phase": "warning", "step": state.step, "warning": w}
                        for w in state.warnings)
    task.finish()
    if checkpoint is not None and distributed.is_main():
        save_training_checkpoint(checkpoint, task, state, {
            **extra, "structure": structure(task.module),
            "unknowns": {u.name: u.item() for u in task.problem.unknowns}})
    return state.seconds


def solve(problem: Problem, network: NetworkSpec | nn.Module | None = None,
          strategy: Strategy | None = None, *, steps: int | None = None,
          progress: bool = True,
          callback: Callable[[dict[str, float]], None] | None = None,
          checkpoint: str | Path | None = None, resume: str | Path | None = None,
          checkpoint_extra: dict[str, Any] | None = None,
          checkpoint_every: float = 120.0) -> Solution:
    """Trains a PINN for `problem`; `steps` (if given) overrides the L-BFGS step count
    (`strategy.total_steps` caps all of them). `callback` sees every history record.

    `checkpoint`: a file to checkpoint the run to (after 30 s, then every `checkpoint_every`
    s of wall time, at the end, on Ctrl-C or SIGTERM), with `checkpoint_extra` (e.g. how to
    rebuild the problem); `resume`: such a checkpoint to continue (same problem and strategy
    but for the budgets; not with time windows)."""
    s = strategy or Strategy()
    if steps is not None:
        s = Strategy.from_dict({**s.to_dict(), "lbfgs_steps": int(steps)})
    capture = _CAPTURE.get()
    if capture is not None:  # `fields solve script.py`: the command line solves it
        raise Captured(problem, network if network is not None
                       else default_network(problem.domain.dim), s)
    s = s.sized(problem.domain.dim)
    dtype = s.torch_dtype
    spec = network if network is not None else default_network(problem.domain.dim)
    _check_device(s)
    for u in problem.unknowns:
        u.to(device=s.torch_device, dtype=dtype)
    payload = _resume_payload(resume, problem, s) if resume is not None else None
    torch.manual_seed(s.seed)
    history: list[dict[str, Any]] = []
    windows = s.time_windows if problem.domain.time is not None else 1
    desc = _describe(spec) + (f", {windows} time windows" if windows > 1 else "")
    extra = {"kind": "pinn", **(checkpoint_extra or {}), "problem": problem.name,
             "outputs": list(problem.outputs),
             "domain": {n: list(problem.domain.bounds(n)) for n in problem.domain.names},
             "strategy": s.to_dict(), "network": desc}
    resumed = float(payload.get("train_state", {}).get("seconds", 0.0)) if payload else 0.0
    start = time.perf_counter() - resumed
    bar = _Progress(progress, planned_steps(problem, s), problem.name)

    def clock() -> float:
        return time.perf_counter() - start

    def on_record(rec: dict[str, Any]) -> None:
        label = (f"stage {rec['stage']} " if s.stages > 1 else "") + rec["phase"]
        info = f"loss {rec['loss']:.3e}" + (f"  rel L2 {rec['rel_l2']:.2e}" if "rel_l2" in rec
                                            else "")
        for u in problem.unknowns:
            info += f"  {u.name} {rec[u.name]:.5g}"
        bar.update(0, label, info)
        if callback is not None:
            callback(rec)

    try:
        with _NoTF32() if s.device != "cpu" else contextlib.nullcontext():
            if windows > 1:
                model, step, seconds = _solve_windows(problem, spec, s, dtype, history, bar, clock,
                                                      on_record, checkpoint, extra,
                                                      checkpoint_every)
            else:
                if payload is not None:
                    model = rebuild(problem, spec, s, _saved_structure(payload, resume))
                else:
                    model, _ = _build(problem, spec, s, dtype)
                task = PinnTask(problem, model, spec, s, dtype, total=s.total_steps,
                                rel=_rel_l2_fn(problem, model, dtype), history=history, clock=clock,
                                on_record=on_record)
                if payload is not None:
                    bar.update(int(payload["task"].get("global_step", 0)), task.label, "")
                    task.prepare(payload["task"])
                seconds = _train(task, s.max_seconds, bar, checkpoint, resume, extra,
                                 checkpoint_every)
                step = task.global_step
    finally:
        bar.close()
    return Solution(problem, model, s, desc, history, seconds, step)


def _check_device(s: Strategy) -> None:
    """A clear error when the strategy's device is not usable here."""
    from fields.command import check_device

    try:
        check_device(s.device)
    except ValueError as e:
        raise ValueError(f"Strategy.device = {s.device!r}: {e}") from e


class _NoTF32:
    """TF32 off while a PINN trains on a GPU (its float32 matmuls keep their 24-bit
    mantissa: a PDE residual of 1e-4 needs it); the previous settings come back after."""

    def __enter__(self) -> None:
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc: object) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def default_network(dim: int) -> MLP:
    """The network `solve` uses when given none: 3 x 20 tanh for a 1-D problem (time
    included), 4 x 32 for 2-D, 4 x 48 beyond."""
    if dim <= 1:
        return MLP(width=20, depth=3)
    return MLP() if dim == 2 else MLP(width=48, depth=4)


# `fields solve script.py` runs a script written as the README shows (the problem at module
# level, then `pinn.solve(...)`) with this set: `solve` then stops the script by raising
# `Captured` with what it was given, and the command line solves that with its overrides
_CAPTURE: contextvars.ContextVar[bool | None] = contextvars.ContextVar("fields_pinn_capture",
                                                                       default=None)


class Captured(Exception):
    """Raised by `solve` while a script is loaded by `fields solve`: the problem, network
    and strategy the script asked to solve."""

    def __init__(self, problem: Problem, network: NetworkSpec | nn.Module,
                 strategy: Strategy) -> None:
        super().__init__(problem.name)
        self.problem, self.network, self.strategy = problem, network, strategy


def _saved_structure(payload: dict[str, Any], path: str | Path | None) -> dict[str, Any]:
    struct = payload.get("structure") or payload.get("task", {}).get("structure")
    if not isinstance(struct, dict):
        raise ValueError(f"{path}: field 'structure' is missing or malformed")
    return struct


def _window_problem(problem: Problem, k: int, t0: float, t1: float,
                    previous: nn.Module | None, s: Strategy) -> Problem:
    box = problem.domain
    sub = box.with_time(t0, t1)
    conds = []
    for c in problem.conditions:
        if isinstance(c, Initial):
            if k == 0:
                conds.append(c)
                continue
            if c.derivative != 0:
                # the previous window's time derivative at t0 (a second-order equation in
                # time, e.g. the wave equation, needs u_t carried as well as u), soft; taken
                # from that window's own field: the whole solution will hold this window too
                last = previous.fields[-1] if isinstance(previous, Windowed) else previous
                conds.append(Initial(_carried_derivative(last, box, t0, c.derivative,
                                                         c.columns(problem.outputs)),
                                     derivative=c.derivative, output=c.output,
                                     weight=c.weight, n=c.n, hard=False))
                continue
            # the previous window's values at t0, as observations (soft)
            pts = sub.sample_slice(box.time, t0, c.n or s.n_condition, s.sampler,
                                   s.seed + 31 * k)
            X = torch.as_tensor(pts, dtype=s.torch_dtype, device=s.torch_device)
            with torch.no_grad():
                vals = previous(X)[:, c.columns(problem.outputs)].double().cpu().numpy()
            conds.append(Data(points={n: pts[:, i] for i, n in enumerate(box.names)},
                              values=vals, output=c.output, weight=c.weight))
        elif isinstance(c, Data):
            if isinstance(c, PointSet):
                c = c.resolved(box)
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


def _carried_derivative(previous: nn.Module, box: Any, t0: float, order: int,
                        cols: list[int]) -> Callable[..., torch.Tensor]:
    """The value function of an initial condition on d^order u / dt^order at `t0`: the
    previous windows' (`previous`) derivative there, by autograd, as a constant target."""
    from fields.pinn.diff import grad

    ti = box.index(box.time)

    def value(*spatial: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            t = torch.full_like(spatial[0], t0).requires_grad_(True)
            cols_in = [c.detach() for c in spatial]
            cols_in.insert(ti, t)
            U = previous(torch.cat(cols_in, 1))
            out = [grad(U[:, c : c + 1], t, order) for c in cols]
        return torch.cat(out, 1).detach()

    return value


def _solve_windows(problem: Problem, spec: NetworkSpec | nn.Module, s: Strategy,
                   dtype: torch.dtype, history: list[dict[str, Any]], bar: _Progress,
                   clock: Callable[[], float],
                   on_record: Callable[[dict[str, Any]], None],
                   checkpoint: str | Path | None, extra: dict[str, Any],
                   checkpoint_every: float = 120.0) -> tuple[Windowed, int, float]:
    """Time marching: one network per time window, each starting from the previous one's
    values at its initial time (Krishnapriyan et al. 2021's sequence-to-sequence training;
    Wight & Zhao 2020's time-adaptive PINNs); the training loop runs once per window, each
    window getting an equal share of the time left and of `total_steps`. Returns the
    solution, the steps and the training seconds."""
    box = problem.domain
    if problem.transform is not None:
        raise ValueError(f"Problem {problem.name!r}: an explicit transform cannot be combined "
                         f"with time windows")
    t0, t1 = box.bounds(box.time)
    K = s.time_windows
    edges = [t0 + (t1 - t0) * k / K for k in range(K + 1)]
    whole = Windowed(edges, box.index(box.time))
    step = 0
    spent = 0.0
    for k in range(K):
        remaining = s.max_seconds - spent
        share = _window_total(s.total_steps, K, k)
        if remaining <= 0 or share == 0:
            break
        sub = _window_problem(problem, k, edges[k], edges[k + 1],
                              whole if k > 0 else None, s)
        # each window gets an equal share of what is left
        sk = Strategy.from_dict({**s.to_dict(), "max_seconds": remaining / (K - k),
                                 "seed": s.seed + k, "total_steps": share})
        model, _ = _build(sub, spec, sk, dtype)
        whole.fields.append(model)
        task = PinnTask(sub, model, spec, sk, dtype, module=whole, total=share, step0=step,
                        rel=_rel_l2_fn(problem, whole, dtype, t_max=edges[k + 1]),
                        history=history, clock=clock, on_record=on_record)
        spent += _train(task, sk.max_seconds, bar, checkpoint, None, extra, checkpoint_every)
        step = task.global_step
        for p in model.parameters():
            p.requires_grad_(False)
        history.append({"step": step, "phase": "window", "window": k + 1,
                        "seconds": clock()})
    return whole, step, spent


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
        device = next(model.buffers()).device
        pts_t = {k: torch.as_tensor(v, dtype=torch.int64 if v.dtype.kind == "i" else dtype,
                                    device=device) for k, v in pts.items()}
        r = c.residual(ev, pts_t, c.columns(problem.outputs)).detach()
        tol = 1e-6 if dtype == torch.float64 else 1e-3
        if float(r.abs().max()) > tol:
            raise ValueError(f"Problem {problem.name!r}: {c.label()} is imposed by the output "
                             f"transform but does not hold (max deviation "
                             f"{float(r.abs().max()):.2e}); check that the initial and "
                             f"boundary values agree at the corners, or the transform")
