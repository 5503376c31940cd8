"""The built-in problems (`fields/scenes/pde/*.py`, shipped in the package) and `fields solve`.

A problem script either defines ``build() -> Case`` (the problem, the network, the strategy and
the accuracy the problem should reach: the built-in problems), or is written as the README
shows: the problem at module level, then ``pinn.solve(problem, network, strategy)`` (and
optionally a module-level ``target = 1e-3``). `load_case` runs such a script up to its
`pinn.solve` call, which then stops it (`fields.pinn.solve.Captured`) and hands over what it was
asked to solve; `run_case` solves that with the command line's overrides (``--max-seconds``,
``--steps``, ``--config``, ...), exactly as for a built-in problem. The lines after
`pinn.solve` run only under ``python script.py``. `run_case` solves it and writes, atomically,
into the run
folder: ``config.json`` (the resolved strategy, the network, the problem and where it comes
from), ``checkpoint.pt`` (during training too: resumable, and loadable by `load_solution`),
``metrics.json`` (``steps``, ``seconds``, ``wall_seconds``, then ``rel_l2`` against the
reference, the target, per-output errors, recovered unknowns), ``history.json``,
``solution.png`` (solution, reference, absolute error), ``history.png`` (loss and error against
time) and ``solution.npz`` (the grid values). A checkpoint names a built-in problem by its name
(found in the installed package from any working directory), any other by its script's path.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from fields import distributed
from fields.pinn.networks import NetworkSpec
from fields.pinn.problem import Problem
from fields.pinn.solve import _CAPTURE, Captured, Solution, solve
from fields.pinn.strategy import Strategy

__all__ = ["Case", "builtin_names", "condition_report", "load_case", "load_solution", "main",
           "resolve_strategy",
           "run_case", "scenes_dir", "structure"]


@dataclass
class Case:
    """A problem with the network and strategy that solve it; `target` is the relative L2
    error it should reach; `extra_metrics` adds problem-specific numbers (e.g. the error of a
    recovered coefficient)."""

    problem: Problem
    network: NetworkSpec | nn.Module
    strategy: Strategy
    target: float | None = None
    extra_metrics: Callable[[Solution], dict[str, Any]] | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    script: Path | None = None  # set by load_case
    builtin: str | None = None  # the built-in problem's name (set by load_case)

    @property
    def source(self) -> str | None:
        """What rebuilds this case: the built-in problem's name (found in the installed
        package from any working directory), else the script's absolute path."""
        return self.builtin or (str(self.script) if self.script else None)


def scenes_dir() -> Path:
    """The folder of the built-in problem scripts: `fields/scenes/pde` of the installed
    package."""
    import fields.scenes.pde

    return Path(fields.scenes.pde.__file__).resolve().parent


def builtin_names() -> list[str]:
    """The names of the built-in problems (`fields solve NAME`), sorted."""
    d = scenes_dir()
    return sorted(p.stem for p in d.glob("*.py") if not p.stem.startswith("_")) if d.is_dir() \
        else []


def script_module(path: Path) -> tuple[ModuleType, Callable[[], None]]:
    """A problem script (a built-in one or the user's) as a module of its own, not yet run,
    and the call that runs it (what it defined before an exception stays in the module)."""
    spec = importlib.util.spec_from_file_location(f"fields_pde_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader
    return module, lambda: loader.exec_module(module)


def load_case(name: str) -> Case:
    """A built-in problem by name, or any script path defining ``build() -> Case``."""
    path = Path(name)
    builtin = None
    if path.suffix != ".py":
        builtin = name
        path = scenes_dir() / f"{name}.py"
        if not path.is_file():
            known = ", ".join(builtin_names()) or f"(none found in {scenes_dir()})"
            raise ValueError(f"unknown problem {name!r}; built-in problems: {known}; or give "
                             f"a script path ending in .py")
    if not path.is_file():
        raise ValueError(f"{path}: no such problem script")
    module, run = script_module(path)
    captured = None
    token = _CAPTURE.set(True)
    try:
        run()
    except Captured as c:
        captured = c
    except Exception as e:
        raise ValueError(f"{path}: the script failed to run ({type(e).__name__}: {e})") from e
    finally:
        _CAPTURE.reset(token)
    build = getattr(module, "build", None)
    if captured is not None:
        # the README's shape: the problem at module level, then pinn.solve(...)
        target = getattr(module, "target", None)
        if target is not None and not isinstance(target, (int, float)):
            raise ValueError(f"{path}: the module-level 'target' is {target!r}; expected the "
                             f"relative L2 error to reach (a number)")
        case = Case(captured.problem, captured.network, captured.strategy,
                    target=None if target is None else float(target))
    elif not callable(build):
        raise ValueError(f"{path}: neither calls pinn.solve(problem, ...) nor defines build() "
                         f"returning a fields.pinn.Case")
    else:
        token = _CAPTURE.set(True)
        try:
            case = build()
        except Captured as c:  # a build() that solves: take what it asked to solve
            case = Case(c.problem, c.network, c.strategy)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: build() failed: {e}") from e
        finally:
            _CAPTURE.reset(token)
    if not isinstance(case, Case):
        raise ValueError(f"{path}: build() returned {type(case).__name__}, expected "
                         f"fields.pinn.Case")
    _identify(case, path, builtin)
    return case


def _identify(case: Case, path: Path, builtin: str | None = None) -> None:
    """Records where `case` came from: its script, and its built-in name when the script is
    one of the package's problems."""
    case.script = path.resolve()
    if builtin is None and case.script.parent == scenes_dir():
        builtin = case.script.stem
    case.builtin = builtin


def _script_of(path: str | Path, source: Any) -> str:
    """The problem a checkpoint's field 'script' names: a built-in name, or a script path
    that exists here (an older checkpoint's path to a built-in script that has moved counts
    as the built-in of that name); ValueError naming the checkpoint otherwise."""
    if isinstance(source, str) and source:
        p = Path(source)
        if p.suffix != ".py" and source in builtin_names():
            return source
        if p.suffix == ".py" and p.is_file():
            return source
        if p.suffix == ".py" and p.parent.name == "pde" and p.stem in builtin_names():
            return p.stem
    raise ValueError(f"{path}: field 'script' ({source!r}) names no built-in problem and no "
                     f"problem script here; the problem is needed to rebuild the solution")


def structure(model: nn.Module) -> dict[str, Any]:
    """How many time windows and stages a trained model has (to rebuild it for loading)."""
    from fields.pinn.field import structure as field_structure

    return field_structure(model)


def load_solution(path: str | Path) -> tuple[Solution, dict[str, Any]]:
    """A solution saved by `run_case` or by the training loop on the way (its problem is built
    again, from the package's built-in problem or its script, to rebuild the network);
    returns it with the checkpoint's dict."""
    from fields.checkpoint import read_checkpoint
    from fields.pinn.solve import rebuild

    payload = read_checkpoint(path)
    if payload.get("kind") != "pinn":
        raise ValueError(f"{path}: field 'kind' is {payload.get('kind')!r}, expected 'pinn'")
    script = _script_of(path, payload.get("script"))
    task = payload.get("task") if isinstance(payload.get("task"), dict) else {}
    try:
        # loaded on the host, wherever it trained
        strategy = Strategy.from_dict({**dict(payload["strategy"]), "device": "cpu"})
        struct = dict(payload.get("structure") or task["structure"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: malformed PINN checkpoint ({e})") from e
    case = load_case(script)
    model = rebuild(case.problem, case.network, strategy, struct)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: field 'state_dict' does not match the problem's network "
                         f"({script}): {e}") from e
    model.eval()
    raw = task.get("unknowns_raw") or {}
    saved = payload.get("unknowns") or task.get("unknowns") or {}
    for u in case.problem.unknowns:
        with torch.no_grad():
            if u.name in raw:
                u.raw.copy_(raw[u.name])
            elif u.name in saved:
                v = float(saved[u.name])
                u.raw.fill_(math.log(v) if u.positive else v)
    sol = Solution(case.problem, model, strategy, str(payload.get("network", "")), [], 0.0, 0)
    return sol, payload


def resolve_strategy(case: Case, overrides: dict[str, Any] | None) -> Strategy:
    """The case's strategy with `overrides` (Strategy fields) applied; ValueError naming an
    unknown or invalid field."""
    if not overrides:
        return case.strategy
    return Strategy.from_dict({**case.strategy.to_dict(), **overrides})


def run_case(case: Case, output: str | Path | None, *, overrides: dict[str, Any] | None = None,
             progress: bool = True, pictures: bool = True, resume: str | Path | None = None,
             wall_start: float | None = None,
             checkpoint_every: float = 120.0) -> dict[str, Any]:
    """Solves `case` (strategy fields replaced by `overrides`; `resume`: continue from a
    checkpoint of the same problem) and writes the run folder `output` (None: nothing
    written): ``config.json`` first (the resolved strategy, network, problem), the
    checkpoint during training, then ``metrics.json`` (``steps``, ``seconds`` of training,
    ``wall_seconds`` since `wall_start` (default: this call), ``rel_l2``, ``target``,
    ``met_target``, ...), ``history.json``, ``solution.npz`` and the pictures. Returns the
    metrics. `checkpoint_every`: seconds between checkpoints (`fields.train.TrainConfig`)."""
    import time

    from fields.command import RunOptions, write_metrics, write_run_config
    from fields.io import atomic_write, write_text_atomic
    from fields.pinn.solve import planned_steps

    wall = time.perf_counter() if wall_start is None else wall_start
    problem = case.problem
    strategy = resolve_strategy(case, overrides).sized(problem.domain.dim)
    out = None if output is None else Path(output)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        options = RunOptions(str(out), strategy.max_seconds, planned_steps(problem, strategy),
                             strategy.seed, None, None if resume is None else str(resume),
                             checkpoint_every=checkpoint_every)
        write_run_config(out, "pinn", problem.name, options, strategy.to_dict(),
                         problem=problem.name, script=case.source,
                         network=_network_config(case.network), target=case.target)
    sol = solve(problem, case.network, strategy, progress=progress,
                checkpoint=None if out is None else out / "checkpoint.pt", resume=resume,
                checkpoint_extra={"script": case.source}, checkpoint_every=checkpoint_every)
    conditions = condition_report(sol)
    n_exact = sum(c["enforced"] == "exact" for c in conditions)
    metrics: dict[str, Any] = {
        "steps": sol.steps,
        "seconds": round(sol.seconds, 2),
        "wall_seconds": round(time.perf_counter() - wall, 2),
        "problem": problem.name,
        "rel_l2": None,
        "strategy": sol.strategy.describe((n_exact, len(conditions))),
        "conditions": conditions,
        "network": sol.network,
        "target": case.target,
    }
    if problem.reference is not None:
        per = sol.rel_l2_per_output()
        metrics["rel_l2"] = max(per.values())
        metrics["rel_l2_per_output"] = per
        if case.target is not None:
            metrics["met_target"] = bool(metrics["rel_l2"] <= case.target)
    if problem.unknowns:
        metrics["unknowns"] = sol.unknowns()
    if case.extra_metrics is not None:
        metrics.update(case.extra_metrics(sol))
    losses = [h["loss"] for h in sol.history if "loss" in h]
    metrics["final_loss"] = losses[-1] if losses else None
    rollbacks = [h for h in sol.history if h.get("phase") == "rollback"]
    if rollbacks:
        metrics["rollbacks"] = rollbacks
    warnings = [h["warning"] for h in sol.history if h.get("phase") == "warning"]
    if warnings:
        metrics["warnings"] = warnings
    metrics["strategy_config"] = strategy.to_dict()
    metrics = _finite(metrics)
    if out is None or not distributed.is_main():
        return metrics  # under torchrun, rank 0 writes the run folder
    metrics["wall_seconds"] = round(time.perf_counter() - wall, 2)
    write_metrics(out, metrics["steps"], metrics["seconds"], metrics["wall_seconds"], metrics)
    write_text_atomic(out / "history.json", json.dumps(_finite(sol.history)) + "\n")
    if problem.reference is not None:
        ref = problem.reference
        pred = sol.on_reference_grid()

        def save_npz(tmp: str) -> None:
            buf = io.BytesIO()
            np.savez_compressed(buf, prediction=pred, reference=ref.values,
                                **{f"axis_{n}": a for n, a in zip(problem.domain.names,
                                                                  ref.axes, strict=True)})
            Path(tmp).write_bytes(buf.getvalue())

        atomic_write(out / "solution.npz", save_npz)
        if pictures:
            _pictures(out, sol, pred, metrics)
    elif pictures:
        from fields.plots import write_history_figure

        write_history_figure(out / "history.png", sol.history)
    return metrics


def condition_report(sol: Solution, n: int = 1024, seed: int = 4242) -> list[dict[str, Any]]:
    """Each condition of the solved problem: its label, whether the output transform imposed
    it exactly (``"exact"``) or the loss did (``"soft"``), and the largest absolute residual
    at `n` fresh points of it (``max_error``: the boundary value error of a Dirichlet
    condition, the normal-derivative error of a Neumann one, ...)."""
    from fields.pinn.field import Evaluator
    from fields.pinn.hard import OutputTransform

    problem = sol.problem
    s = sol.strategy
    satisfied = set(OutputTransform(problem.domain, problem.outputs, problem.conditions,
                                    enabled=s.hard, explicit=problem.transform).satisfied)
    ev = Evaluator(problem, sol.model)
    dtype = sol.dtype
    out = []
    for i, c in enumerate(problem.conditions):
        pts = c.sample(problem.domain, c.n or n, "uniform", seed + i)
        pts_t = {k: torch.as_tensor(v, dtype=torch.int64 if v.dtype.kind == "i" else dtype,
                                    device=sol.device) for k, v in pts.items()}
        r = c.residual(ev, pts_t, c.columns(problem.outputs)).detach().cpu()
        err = float(r.abs().max()) if r.numel() else 0.0
        out.append({"condition": c.label(), "enforced": "exact" if i in satisfied else "soft",
                    "max_error": err})
    return out


def _network_config(network: NetworkSpec | nn.Module) -> Any:
    """The network of config.json: a spec's fields, or a module's class name."""
    import dataclasses

    if dataclasses.is_dataclass(network) and not isinstance(network, type):
        return {"type": type(network).__name__, **dataclasses.asdict(network)}
    return {"type": type(network).__name__}


def _pictures(out: Path, sol: Solution, pred: np.ndarray, metrics: dict[str, Any]) -> None:
    from fields.plots import write_history_figure, write_pde_figure

    problem = sol.problem
    ref = problem.reference
    names = problem.domain.names
    axes, p, r = list(ref.axes), pred, ref.values
    # blank outside the domain, as the reference (an output it does not compare stays shown)
    p = np.where(np.isnan(r).all(-1, keepdims=True), np.nan, p)
    if len(axes) > 2:  # a 3-D problem: the middle slice of the last axis
        mid = len(axes[-1]) // 2
        p, r, axes, names = p[..., mid, :], r[..., mid, :], axes[:2], names[:2]
    if len(axes) == 2 and problem.domain.time is None:
        # space only: x to the right, y up
        p, r = np.swapaxes(p, 0, 1), np.swapaxes(r, 0, 1)
        axes, names = axes[::-1], names[::-1]
    rel = "n/a" if metrics["rel_l2"] is None else f"{metrics['rel_l2']:.2e}"
    title = f"{problem.name}: relative L2 {rel} in {metrics['seconds']:.0f} s"
    write_pde_figure(out / "solution.png", axes, tuple(names), tuple(problem.outputs), p, r,
                     title)
    write_history_figure(out / "history.png", sol.history)


def _finite(obj: Any) -> Any:
    """JSON-safe: non-finite floats become None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def main(build: Callable[[], Case]) -> None:
    """Command line of a problem script: ``python -m fields.scenes.pde.NAME [OUTPUT]
    [--max-seconds S] [--steps N] [--seed N]`` (or ``python path/to/script.py ...``); the
    options mean what they mean in `fields solve`."""
    import sys

    from fields.command import DEFAULT_SEED, run_folder

    ap = argparse.ArgumentParser(description=(build.__module__ or "problem"))
    ap.add_argument("output", nargs="?", default=None,
                    help="output folder (default outputs/<problem>/pinn/<timestamp>)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="training-time budget (default: the problem's own)")
    ap.add_argument("--steps", type=int, default=None,
                    help="total optimisation steps, Adam and L-BFGS together (default: the "
                         "problem's own)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = ap.parse_args()
    over: dict[str, Any] = {"seed": args.seed}
    if args.max_seconds is not None:
        over["max_seconds"] = args.max_seconds
    if args.steps is not None:
        over["total_steps"] = args.steps
    case = build()
    script = getattr(sys.modules.get(build.__module__), "__file__", None)
    if script:
        _identify(case, Path(script))
    out = run_folder(args.output, case.problem.name, "pinn")
    m = run_case(case, out, overrides=over)
    print(json.dumps({k: m[k] for k in ("problem", "rel_l2", "seconds", "steps", "strategy")}))
