"""The training loop every field uses.

A field kind describes one training run as a `Task` (its model, optimiser, one training step,
an evaluation; optionally `state_dict` / `load_state_dict` for its own state, such as
generators); `train` runs it under step and time budgets with a progress bar, periodic
evaluation on held-out data, periodic and final checkpoints, `resume`, and Ctrl-C handling
(a checkpoint is written, then the interrupt propagates; an interrupt in the middle of a step
may leave that step's update in the weights, so a resumed run can repeat one step).

Checkpoints are read and written by `fields.checkpoint`.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from fields.checkpoint import load_checkpoint, save_checkpoint


def seed_everything(seed: int) -> None:
    """Seeds Python's and torch's global generators (the engine draws from torch only)."""
    random.seed(seed)
    torch.manual_seed(seed)


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
    second optimiser, a phase), saved in checkpoints and restored on resume.
    """

    module: nn.Module
    optimizer: torch.optim.Optimizer

    def train_step(self, step: int, progress: float) -> dict[str, float]: ...

    def evaluate(self, final: bool) -> dict[str, float]: ...


@dataclass
class TrainConfig:
    """Budgets and bookkeeping of a run.

    Attributes:
        steps: step budget.
        max_seconds: training-time budget (evaluation and checkpointing not counted).
        eval_every: seconds of training between evaluations on held-out data (0: only at the
            end).
        checkpoint_every: seconds (wall) between checkpoints (0: only at the end).
        seed: seeds every generator before the task is built (see `seed_everything`).
    """

    steps: int = 20_000
    max_seconds: float = 600.0
    eval_every: float = 60.0
    checkpoint_every: float = 120.0
    seed: int = 0


@dataclass
class TrainState:
    """Where a run is: steps taken, training seconds, evaluations, the last step's scalars,
    and whether it was interrupted."""

    step: int = 0
    seconds: float = 0.0  # training time
    history: list[dict[str, float]] = field(default_factory=list)  # evaluations
    interrupted: bool = False
    last: dict[str, float] = field(default_factory=dict)  # the last step's scalars

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seconds": self.seconds, "history": self.history}


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


def train(
    task: Task,
    config: TrainConfig,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    checkpoint_extra: Mapping[str, Any] | None = None,
    on_step: Callable[[TrainState], None] | None = None,
    on_eval: Callable[[TrainState, dict[str, float]], None] | None = None,
    show_progress: bool = True,
) -> TrainState:
    """Runs `task` until `config.steps` or `config.max_seconds` of training is reached.

    Evaluates every `config.eval_every` training seconds (the final, thorough evaluation,
    ``task.evaluate(final=True)``, is the caller's, after `train` returns); writes `checkpoint`
    (atomically) every `config.checkpoint_every` seconds and at the end, and also when the run
    is interrupted by Ctrl-C (then re-raises KeyboardInterrupt, with ``state.interrupted``).
    `resume` continues from such a checkpoint: model, optimiser, step, training time, history.
    """
    state = TrainState()
    if resume is not None:
        payload = load_checkpoint(resume, task.module)
        if "optimizer" in payload:
            task.optimizer.load_state_dict(payload["optimizer"])
        ts = payload.get("train_state", {})
        state.step = int(ts.get("step", 0))
        state.seconds = float(ts.get("seconds", 0.0))
        state.history = list(ts.get("history", []))
        rng = payload.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "task" in payload and hasattr(task, "load_state_dict"):
            task.load_state_dict(payload["task"])
    extra = dict(checkpoint_extra or {})

    def write_checkpoint() -> None:
        if checkpoint is not None:
            save_training_checkpoint(checkpoint, task, state, extra)

    def evaluate(final: bool) -> None:
        task.module.eval()
        with torch.no_grad():
            scores = task.evaluate(final)
        task.module.train()
        record = {"step": state.step, "seconds": round(state.seconds, 3), **scores}
        state.history.append(record)
        if on_eval is not None:
            on_eval(state, record)

    progress_bar = _progress(show_progress, config)
    next_eval = (
        (math.floor(state.seconds / config.eval_every) + 1) * config.eval_every
        if config.eval_every > 0
        else math.inf
    )
    last_ckpt = time.perf_counter()
    try:
        with progress_bar as bar:
            while state.step < config.steps and state.seconds < config.max_seconds:
                frac = max(state.step / config.steps, state.seconds / config.max_seconds)
                t0 = time.perf_counter()
                scalars = task.train_step(state.step, min(frac, 1.0))
                dt = time.perf_counter() - t0
                state.seconds += dt
                state.step += 1
                state.last = {**scalars, "step_seconds": dt}
                bar.update(state)
                if on_step is not None:
                    on_step(state)
                if getattr(task, "done", False):
                    break
                if state.seconds >= next_eval:
                    evaluate(final=False)
                    next_eval += config.eval_every
                    bar.note(state)
                if (
                    config.checkpoint_every > 0
                    and time.perf_counter() - last_ckpt >= config.checkpoint_every
                ):
                    write_checkpoint()
                    last_ckpt = time.perf_counter()
    except KeyboardInterrupt:
        state.interrupted = True
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
        if self.eval_text:
            parts.append(self.eval_text)
        self.progress.update(self.task, completed=frac, status="  ".join(parts))

    def note(self, state: TrainState) -> None:
        rec = state.history[-1]
        if "psnr" in rec:
            self.eval_text = f"[held-out {rec['psnr']:.2f} dB @ {rec['seconds']:.0f}s]"


def _progress(show: bool, config: TrainConfig) -> _NoProgress:
    return _RichProgress(config) if show else _NoProgress()
