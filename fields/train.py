"""The training loop every field uses.

A field kind describes one training run as a `Task` (its model, optimiser, one training step,
an evaluation; optionally `state_dict` / `load_state_dict` for its own state, such as
generators); `train` runs it under step and time budgets with a progress bar, periodic
evaluation on held-out data, periodic and final checkpoints, `resume`, and the run's safety
nets:

- **Divergence guard.** A non-finite loss, a loss far above its running level
  (`TrainConfig.explode_factor` times the median of the last 100 steps, and above the first
  step's loss: noise at the end of a fit is not divergence), or a non-finite
  parameter (checked whenever a good state is kept) rolls the model, the optimiser and the
  task back to the last good state (kept in memory every `snapshot_every` training seconds and
  at each checkpoint), halves the learning rate (every optimiser step runs at the rate the
  task sets times `TrainState.lr_scale`) and goes on; after `max_retries` roll-backs the run
  stops with `Diverged`, the last good state written to the checkpoint. Checkpoints only ever
  hold finite parameters.
- **Faults.** Ctrl-C and SIGTERM write a checkpoint and stop (SIGTERM at the end of the step
  it arrives in; Ctrl-C at once, so an update may be half-applied and a resumed run can repeat
  one step), then raise `KeyboardInterrupt` (`Terminated` for SIGTERM). The first checkpoint
  is written early (after the first evaluation or `first_checkpoint` seconds, whichever comes
  first), then every `checkpoint_every` seconds, so a `kill -9` loses at most that much.
  Temporary files that a killed write left in the checkpoint's folder are removed at start.
- **Writes.** Before the first step, the checkpoint's folder is made, probed for writing and
  checked for room (`fields.io.preflight`); a write error later is a `fields.io.WriteError`
  naming the file and the errno.

- **Ranks.** Under torchrun (`fields.distributed`), every rank runs this loop on its share of
  each batch; the optimisers' gradients are averaged over the ranks before every step; the
  step's time, the loss the guard sees (the mean over ranks) and the stop flags are agreed
  every step, so every rank takes the same steps and the same roll-backs. Rank 0 alone
  evaluates, writes checkpoints, shows the progress bar and logs. When another rank fails,
  the collective fails here and the run stops with `RankFailed` (the last checkpoint stands).

Checkpoints are read and written by `fields.checkpoint`.
"""

from __future__ import annotations

import copy
import math
import os
import random
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from fields import distributed
from fields.checkpoint import read_checkpoint, save_checkpoint
from fields.io import clean_stale_temporaries, preflight


def seed_everything(seed: int) -> None:
    """Seeds Python's and torch's global generators (the engine draws from torch only)."""
    random.seed(seed)
    torch.manual_seed(seed)


class Diverged(RuntimeError):
    """Training diverged and the roll-backs did not help; the message says what happened and
    where the last good state is."""


class RankFailed(RuntimeError):
    """Another rank of a distributed run failed (its process ended or its connection broke);
    the message says so and where the last checkpoint is."""


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (handled like Ctrl-C: checkpoint, then stop)."""


class Task(Protocol):
    """One training run of a field kind, as `train` drives it.

    `module` holds every tensor to checkpoint (model and estimators); `optimizer` is saved
    and restored with it. `train_step(step, progress)` runs one step (progress in [0, 1] is
    how far through the budget the run is, for schedules) and returns scalars to show and log
    (``loss`` at least; ``psnr``, ``rays`` when it has them). `evaluate(final)` measures on
    held-out data (cheaply when not final) and returns scalars.

    Optional: ``done`` (a bool attribute; when it turns True after a step, the run ends
    early: converged, or a kind's own stopping rule), ``state_dict()`` /
    ``load_state_dict(state)`` for state besides the module and optimiser (generators, a
    second optimiser, a phase), saved in checkpoints and restored on resume and roll-back;
    ``prepare(state)``, called with that state before the optimiser's is loaded (a task whose
    optimiser changes from phase to phase makes the right one there); ``objective_version``
    (an int the task changes when its loss changes meaning: new points, weights or stages; the
    divergence guard then forgets the loss's running level).
    """

    module: nn.Module
    optimizer: torch.optim.Optimizer

    def train_step(self, step: int, progress: float) -> dict[str, float]: ...

    def evaluate(self, final: bool) -> dict[str, float]: ...


@dataclass
class TrainConfig:
    """Budgets, bookkeeping and safety nets of a run.

    Attributes:
        steps: step budget.
        max_seconds: training-time budget (evaluation and checkpointing not counted).
        eval_every: seconds of training between evaluations on held-out data (0: only at the
            end).
        checkpoint_every: seconds (wall) between checkpoints (0: only at the end and on an
            interrupt).
        first_checkpoint: seconds (wall) to the first checkpoint (written earlier when the
            first evaluation comes first); only with `checkpoint_every` > 0.
        seed: seeds every generator before the task is built (see `seed_everything`).
        guard: the divergence guard (see the module docstring).
        max_retries: roll-backs before the run stops with `Diverged`.
        lr_backoff: the learning-rate factor of each roll-back.
        explode_factor: a loss this many times the median of the last 100 is divergence.
        snapshot_every: training seconds between kept good states.
        output_bytes: the kind's other outputs (renders, meshes), for the free-space check.
    """

    steps: int = 20_000
    max_seconds: float = 600.0
    eval_every: float = 60.0
    checkpoint_every: float = 120.0
    first_checkpoint: float = 30.0
    seed: int = 0
    guard: bool = True
    max_retries: int = 3
    lr_backoff: float = 0.5
    explode_factor: float = 1e4
    snapshot_every: float = 10.0
    output_bytes: int = 16 << 20


@dataclass
class TrainState:
    """Where a run is: steps taken, training seconds, evaluations, the last step's scalars,
    whether it was interrupted, the divergence guard's roll-backs and learning-rate scale."""

    step: int = 0
    seconds: float = 0.0  # training time
    history: list[dict[str, float]] = field(default_factory=list)  # evaluations
    interrupted: bool = False
    last: dict[str, float] = field(default_factory=dict)  # the last step's scalars
    rollbacks: list[dict[str, Any]] = field(default_factory=list)
    lr_scale: float = 1.0
    # the loss where the current objective started (the divergence guard's ceiling: noise far
    # below it is not divergence); kept in checkpoints, so that a resumed run has it too
    loss_ceiling: float | None = None
    warnings: list[str] = field(default_factory=list)  # for metrics.json
    eval_seconds: float = 0.0  # wall time of the periodic evaluations in this process

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seconds": self.seconds, "history": self.history,
                "rollbacks": self.rollbacks, "lr_scale": self.lr_scale,
                "loss_ceiling": self.loss_ceiling}


def save_training_checkpoint(
    path: str | os.PathLike, task: Task, state: TrainState, extra: Mapping[str, Any] | None = None
) -> None:
    """A checkpoint that `train(..., resume=path)` continues from."""
    save_checkpoint(
        path,
        task.module,
        extra={
            "optimizer": task.optimizer.state_dict(),
            "train_state": state.as_dict(),
            "rng": {"torch": torch.get_rng_state()},
            **({"task": task.state_dict()} if hasattr(task, "state_dict") else {}),
            **(extra or {}),
        },
    )


def _restore(task: Task, state: TrainState, payload: Mapping[str, Any],
             source: str) -> None:
    """Puts a checkpoint's (or a kept snapshot's) model, optimiser, task state, step, time,
    history and generator back."""
    if "task" in payload and hasattr(task, "prepare"):
        task.prepare(payload["task"])
    try:
        task.module.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{source}: field 'state_dict' does not match the model: {e}") from e
    if "optimizer" in payload:
        try:
            task.optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError) as e:
            raise ValueError(f"{source}: field 'optimizer' does not match this run's "
                             f"optimiser ({e})") from e
    ts = payload.get("train_state", {})
    state.step = int(ts.get("step", 0))
    state.seconds = float(ts.get("seconds", 0.0))
    state.history = list(ts.get("history", []))
    state.rollbacks = list(ts.get("rollbacks", []))
    state.lr_scale = float(ts.get("lr_scale", 1.0))
    ceiling = ts.get("loss_ceiling")
    state.loss_ceiling = float(ceiling) if ceiling is not None else None
    rng = payload.get("rng", {})
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "task" in payload and hasattr(task, "load_state_dict"):
        task.load_state_dict(payload["task"])


def _finite_state(module: nn.Module) -> str | None:
    """The name of the first floating-point parameter or buffer with a non-finite entry, or
    None when all are finite."""
    for name, t in module.state_dict().items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


_UNSET = object()


class _Guard:
    """The divergence guard's memory: the last good state and the loss's running level.

    A state is kept as good only when its parameters are finite and its loss is within
    `KEEP_FACTOR` of the lowest recent one or below the objective's first loss (a run on its
    way to diverging is not kept)."""

    KEEP_FACTOR = 10.0

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.losses: deque[float] = deque(maxlen=100)
        self.version: object = _UNSET  # the objective's version; unset before the first step
        self.snapshot: dict[str, Any] | None = None
        self.snapshot_at = -math.inf  # training seconds of the last snapshot
        self.snapshot_losses: list[float] = []  # the running level when it was kept
        self.first: list[float] = []  # the first 20 losses of this objective
        self.from_start = False  # whether they are the run's first (not a resumed run's)
        self.count = 0  # steps of this objective

    def problem(self, task: Task, state: TrainState, loss: float) -> str | None:
        """Why this step's loss is divergence, or None."""
        version = getattr(task, "objective_version", None)
        if version != self.version:
            # a new objective: a new running level and ceiling (but a resumed run's first
            # step keeps the ceiling its checkpoint had)
            resumed = self.version is _UNSET and state.loss_ceiling is not None
            self.version = version
            self.losses.clear()
            self.first, self.count = [], 0
            self.from_start = state.step <= 1  # this objective began with the run
            if not resumed:
                state.loss_ceiling = None
        if not math.isfinite(loss):
            return f"the loss became {loss}"
        if state.loss_ceiling is None:
            state.loss_ceiling = loss
        if len(self.losses) >= 5:
            # far above its running level, and above where this objective started (a jump
            # from 1e-16 to 1e-12 at the end of a fit is noise, not divergence)
            level = sorted(self.losses)[len(self.losses) // 2]
            if level > 0 and loss > self.config.explode_factor * level and (
                    loss > state.loss_ceiling):
                return (f"the loss jumped to {loss:.4g}, {loss / level:.3g} times its running "
                        f"level {level:.4g}")
        self.losses.append(loss)
        self.count += 1
        if len(self.first) < 20:
            self.first.append(loss)
        return None

    def stalled(self) -> str | None:
        """A warning when, after 100 steps or more, the loss of the last 20 steps is not below
        that of the first 20 (a learning rate so high that nothing is learnt), else None. Only
        for an objective that began with the run (a resumed, converged run need not fall)."""
        if self.count < 100 or len(self.losses) < 20 or not self.from_start:
            return None
        first = sum(self.first) / len(self.first)
        last = sum(list(self.losses)[-20:]) / 20
        if last < first:
            return None
        return (f"the loss did not decrease in {self.count} steps (first 20 steps {first:.4g}, "
                f"last 20 {last:.4g}): the learning rate may be too high, or the data "
                f"unlearnable")

    def keep(self, task: Task, state: TrainState) -> str | None:
        """Keeps the current state as the last good one (in memory); the name of a non-finite
        parameter instead when there is one (then nothing is kept). A state whose loss is far
        above the recent lowest is not kept, nor is it an error."""
        self.snapshot_at = state.seconds  # kept or not, the next try is `snapshot_every` on
        bad = _finite_state(task.module)
        if bad is not None:
            return f"parameter {bad!r} became non-finite"
        ceiling = state.loss_ceiling if state.loss_ceiling is not None else math.inf
        if self.losses and self.losses[-1] > max(self.KEEP_FACTOR * min(self.losses), ceiling):
            return None
        self.snapshot = copy.deepcopy({
            "state_dict": task.module.state_dict(),
            "optimizer": task.optimizer.state_dict(),
            "train_state": state.as_dict(),
            "rng": {"torch": torch.get_rng_state()},
            **({"task": task.state_dict()} if hasattr(task, "state_dict") else {}),
        })
        self.snapshot_at = state.seconds
        self.snapshot_losses = list(self.losses)
        return None

    def roll_back(self, task: Task, state: TrainState, why: str) -> dict[str, Any]:
        """Restores the last good state with the learning rate lowered; the record of it."""
        assert self.snapshot is not None
        failed_at = state.step
        rollbacks = list(state.rollbacks)
        scale = state.lr_scale * self.config.lr_backoff
        try:
            _restore(task, state, copy.deepcopy(self.snapshot), "the last good state")
        except ValueError as e:  # e.g. a stage added since: the structure changed
            raise Diverged(f"training diverged ({why}) at step {failed_at} and cannot be "
                           f"rolled back: {e}") from e
        record = {"step": failed_at, "reason": why, "back_to_step": state.step,
                  "lr_scale": scale}
        state.rollbacks = [*rollbacks, record]
        state.lr_scale = scale
        self.losses = deque(self.snapshot_losses, maxlen=self.losses.maxlen)
        self.snapshot["train_state"] = state.as_dict()
        return record


@contextmanager
def _scaled_learning_rates(state: TrainState) -> Iterator[None]:
    """While training, every optimiser step runs at its own learning rate times
    ``state.lr_scale`` (set back after the step, so tasks that set their rate each step and
    those that never do are treated alike)."""
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    saved: dict[int, list[Any]] = {}
    owner = threading.get_ident()  # optimisers stepped by other threads are not this run's

    def pre(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if state.lr_scale != 1.0 and threading.get_ident() == owner:
            saved[id(opt)] = [g.get("lr") for g in opt.param_groups]
            for g in opt.param_groups:
                if isinstance(g.get("lr"), (int, float)):
                    g["lr"] = g["lr"] * state.lr_scale

    def post(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        lrs = saved.pop(id(opt), None)
        if lrs is not None:
            for g, lr in zip(opt.param_groups, lrs, strict=False):
                g["lr"] = lr

    handles = [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _sigterm_stops(flag: list[bool]) -> Iterator[None]:
    """SIGTERM sets `flag` (the loop stops after the step); only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        flag[0] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _agree(dt: float, scalars: dict[str, float], stop: bool, done: bool,
           due: bool) -> tuple[float, dict[str, float], bool, bool, bool]:
    """What every rank must see alike after a step: the slowest rank's step time (the budget
    is spent alike), the mean of the ranks' losses (what the divergence guard judges; ranks
    with equal shares have the global batch's loss), whether any rank was asked to stop or is
    done, and whether rank 0's checkpoint clock is due."""
    loss = float(scalars.get("loss", 0.0))
    total = distributed.all_sum([loss])
    flags = distributed.all_max([dt, float(stop), float(done),
                                 float(due and distributed.is_main())])
    scalars = {**scalars, "loss": float(total[0]) / distributed.world_size()}
    return (float(flags[0]), scalars, bool(flags[1]), bool(flags[2]), bool(flags[3]))


@contextmanager
def _rank_failures(checkpoint: str | os.PathLike | None) -> Iterator[None]:
    """Turns a failed collective (another rank ended or its connection broke) into
    `RankFailed`, naming the last checkpoint when there is one."""
    if not distributed.active():
        yield
        return
    try:
        yield
    except (RuntimeError, ConnectionError) as e:
        if isinstance(e, (Diverged, RankFailed)) or not _is_comm_error(e):
            raise
        where = (f"; the last checkpoint is {checkpoint}"
                 if checkpoint is not None and Path(checkpoint).is_file() else "")
        raise RankFailed(f"rank {distributed.rank()} of {distributed.world_size()}: another "
                         f"rank failed or lost its connection ({str(e).splitlines()[0]}); "
                         f"stopping{where}") from e


def _is_comm_error(e: BaseException) -> bool:
    backend_error = getattr(torch.distributed, "DistBackendError", ())
    text = str(e).lower()
    return isinstance(e, (ConnectionError,) + ((backend_error,) if backend_error else ())) or \
        any(w in text for w in ("gloo", "nccl", "connection", "peer", "timed out"))


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _checkpoint_bytes(task: Task) -> int:
    """About how large a checkpoint of `task` will be: the module's tensors and two Adam-like
    moments of each parameter, plus what the task says its optimisers keep beyond that
    (`optimizer_bytes`, e.g. a dense inverse Hessian)."""
    tensors = sum(t.numel() * t.element_size() for t in task.module.state_dict().values()
                  if torch.is_tensor(t))
    params = sum(p.numel() * p.element_size() for p in task.module.parameters())
    return tensors + 2 * params + int(getattr(task, "optimizer_bytes", 0)) + (1 << 20)


def train(
    task: Task,
    config: TrainConfig,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    checkpoint_extra: Mapping[str, Any] | None = None,
    on_step: Callable[[TrainState], None] | None = None,
    on_eval: Callable[[TrainState, dict[str, float]], None] | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] | None = _stderr_line,
) -> TrainState:
    """Runs `task` until `config.steps` or `config.max_seconds` of training is reached.

    Evaluates every `config.eval_every` training seconds (the final, thorough evaluation,
    ``task.evaluate(final=True)``, is the caller's, after `train` returns); writes `checkpoint`
    (atomically) early, every `config.checkpoint_every` seconds and at the end, and also when
    the run is interrupted by Ctrl-C or SIGTERM (then re-raises KeyboardInterrupt, with
    ``state.interrupted``). `resume` continues from such a checkpoint: model, optimiser, step,
    training time, history, learning-rate scale; after a torchrun restart, `checkpoint`
    itself when it exists. Divergence is rolled back (see the module
    docstring); `Diverged` when that does not help. `log` gets one-line notes (the output
    check, roll-backs); None: silent.
    """
    main = distributed.is_main()
    say = (log or (lambda text: None)) if main else (lambda text: None)
    state = TrainState()
    if resume is None and checkpoint is not None and distributed.restart_count() > 0 and \
            Path(checkpoint).is_file():
        resume = checkpoint  # torchrun restarted the workers: go on from the last checkpoint
        say(f"restart {distributed.restart_count()}: resuming from {checkpoint}")
    if resume is not None:
        _restore(task, state, read_checkpoint(resume), str(resume))
    extra = dict(checkpoint_extra or {})
    if checkpoint is not None and main:
        folder = Path(checkpoint).parent
        removed = clean_stale_temporaries(folder)
        if removed:
            say(f"removed {removed} temporary file(s) left by an interrupted write in {folder}")
        say(preflight(folder, 2 * _checkpoint_bytes(task) + config.output_bytes,
                      "the checkpoint (twice, while it is replaced) and the outputs"))
    guard = _Guard(config) if config.guard else None

    def write_checkpoint() -> None:
        if checkpoint is not None and main:
            save_training_checkpoint(checkpoint, task, state, extra)

    def evaluate(final: bool) -> None:
        if not main:  # rank 0 evaluates; the others go on to the next step's collectives
            return
        bar.evaluating()
        t0 = time.perf_counter()
        task.module.eval()
        with torch.no_grad():
            scores = task.evaluate(final)
        task.module.train()
        took = time.perf_counter() - t0
        state.eval_seconds += took
        record = {"step": state.step, "seconds": round(state.seconds, 3), **scores,
                  "eval_seconds": round(took, 3)}
        state.history.append(record)
        if on_eval is not None:
            on_eval(state, record)

    def diverged(why: str) -> None:
        """Rolls back, or raises `Diverged` when the retries are spent."""
        assert guard is not None
        if len(state.rollbacks) >= config.max_retries or guard.snapshot is None:
            at, rollbacks = state.step, list(state.rollbacks)
            if guard.snapshot is not None:
                _restore(task, state, copy.deepcopy(guard.snapshot), "the last good state")
                state.rollbacks = rollbacks
                write_checkpoint()
            where = (f"; the last good state (step {state.step}) is in {checkpoint}"
                     if checkpoint is not None and guard.snapshot is not None else "")
            raise Diverged(
                f"training diverged: {why} at step {at}, after {len(rollbacks)} "
                f"roll-back(s) to the last good state, each with the learning rate times "
                f"{config.lr_backoff:g}{where}. Lower the learning rate (--config "
                f"'{{\"lr\": ...}}').")
        rec = guard.roll_back(task, state, why)
        say(f"diverged at step {rec['step']} ({why}): back to step {rec['back_to_step']}, "
            f"learning rate times {rec['lr_scale']:g}")

    progress_bar = _progress(show_progress and main, config)
    next_eval = (
        (math.floor(state.seconds / config.eval_every) + 1) * config.eval_every
        if config.eval_every > 0
        else math.inf
    )
    start = time.perf_counter()
    first = min(config.first_checkpoint, config.checkpoint_every)
    next_ckpt = start + first if config.checkpoint_every > 0 else math.inf
    stop = [False]
    wrote = False  # a checkpoint was written by this run
    ranks = distributed.active()
    ckpt_due = done_any = False
    try:
        with progress_bar as bar, _sigterm_stops(stop), _scaled_learning_rates(state), \
                _rank_failures(checkpoint), \
                distributed.averaged_gradients():
            if guard is not None:
                why = guard.keep(task, state)
                if why is not None:
                    raise Diverged(f"training cannot start: {why}" + (
                        f" in {resume}" if resume is not None else ""))
            while True:
                while state.step < config.steps and state.seconds < config.max_seconds:
                    frac = max(state.step / config.steps, state.seconds / config.max_seconds)
                    t0 = time.perf_counter()
                    scalars = task.train_step(state.step, min(frac, 1.0))
                    dt = time.perf_counter() - t0
                    if ranks:
                        # every rank: the slowest rank's time, the mean loss, any stop
                        dt, scalars, stop[0], done_any, ckpt_due = _agree(
                            dt, scalars, stop[0], bool(getattr(task, "done", False)),
                            time.perf_counter() >= next_ckpt)
                    state.seconds += dt
                    state.step += 1
                    state.last = {**scalars, "step_seconds": dt}
                    if guard is not None:
                        why = guard.problem(task, state, float(scalars.get("loss", 0.0)))
                        if why is not None:
                            diverged(why)
                            continue
                    bar.update(state)
                    if on_step is not None:
                        on_step(state)
                    if stop[0]:
                        raise Terminated
                    if (done_any if ranks else getattr(task, "done", False)):
                        break
                    evaluated = False
                    if state.seconds >= next_eval:
                        evaluate(final=False)
                        next_eval += config.eval_every
                        bar.note(state)
                        evaluated = True
                    due = (ckpt_due if ranks else time.perf_counter() >= next_ckpt) or (
                        evaluated and not wrote and config.checkpoint_every > 0)
                    if guard is not None and (due or state.seconds - guard.snapshot_at
                                              >= config.snapshot_every):
                        why = guard.keep(task, state)
                        if why is not None:
                            diverged(why)
                            continue
                    if due:
                        write_checkpoint()
                        wrote = True
                        next_ckpt = time.perf_counter() + config.checkpoint_every
                # the end: the final state must be good too
                why = guard.keep(task, state) if guard is not None else None
                if why is None:
                    break
                diverged(why)  # rolled back: train on (or Diverged when retries are spent)
            stalled = guard.stalled() if guard is not None else None
            if stalled is not None:
                state.warnings.append(stalled)
                say(f"warning: {stalled}")
    except KeyboardInterrupt:
        state.interrupted = True
        if guard is not None and guard.snapshot is not None and (
                _finite_state(task.module) is not None):
            _restore(task, state, copy.deepcopy(guard.snapshot), "the last good state")
        write_checkpoint()
        raise
    write_checkpoint()
    return state


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, state: TrainState) -> None:
        pass

    def note(self, state: TrainState) -> None:
        pass

    def evaluating(self) -> None:
        pass


class _RichProgress(_NoProgress):
    """A progress bar over the budget that ends first, with loss, PSNR and rays/s."""

    def __init__(self, config: TrainConfig) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.config = config
        self.progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
        )
        self.task = self.progress.add_task("training", total=1.0, status="")
        self.rays_ema = 0.0
        self.eval_text = ""

    def __enter__(self) -> _RichProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def update(self, state: TrainState) -> None:
        c = self.config
        frac = min(1.0, max(state.step / c.steps, state.seconds / c.max_seconds))
        last = state.last
        parts = [f"step {state.step}", f"loss {last.get('loss', float('nan')):.4g}"]
        if "psnr" in last:
            parts.append(f"PSNR {last['psnr']:.2f}")
        if "rays" in last and last.get("step_seconds", 0) > 0:
            rate = last["rays"] / last["step_seconds"]
            self.rays_ema = rate if self.rays_ema == 0 else 0.9 * self.rays_ema + 0.1 * rate
            parts.append(f"{self.rays_ema / 1e3:.1f}k rays/s")
        if state.lr_scale != 1.0:
            parts.append(f"lr x{state.lr_scale:g}")
        if self.eval_text:
            parts.append(self.eval_text)
        self.progress.update(self.task, completed=frac, status="  ".join(parts))

    def note(self, state: TrainState) -> None:
        rec = state.history[-1]
        if "psnr" in rec:
            self.eval_text = f"[held-out {rec['psnr']:.2f} dB @ {rec['seconds']:.0f}s]"

    def evaluating(self) -> None:
        """Says so on the bar while a periodic evaluation runs (training is paused)."""
        self.progress.update(self.task, status="evaluating on held-out data...")
        self.progress.refresh()


def _progress(show: bool, config: TrainConfig) -> _NoProgress:
    return _RichProgress(config) if show else _NoProgress()
