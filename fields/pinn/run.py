"""The built-in problems (`scenes/pde/*.py`) and `fields solve`.

A problem script defines ``build() -> Case``: the problem, the network, the strategy and the
accuracy the problem should reach. `run_case` solves it and writes, atomically, into the output
folder: ``metrics.json`` (``rel_l2`` against the reference, ``seconds``, ``steps``, the strategy,
per-output errors, recovered unknowns), ``solution.png`` (solution, reference, absolute error),
``history.png`` (loss and error against time), ``solution.npz`` (the grid values) and
``checkpoint.pt``.
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
from typing import Any

import numpy as np
import torch
from torch import nn

from fields.pinn.networks import NetworkSpec
from fields.pinn.problem import Problem
from fields.pinn.solve import Solution, solve
from fields.pinn.strategy import Strategy

__all__ = ["Case", "builtin_names", "load_case", "load_solution", "main", "run_case",
           "scenes_dir", "structure"]


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


def scenes_dir() -> Path:
    """`scenes/pde` of this checkout (the package is installed editable from it)."""
    return Path(__file__).resolve().parents[2] / "scenes" / "pde"


def builtin_names() -> list[str]:
    d = scenes_dir()
    return sorted(p.stem for p in d.glob("*.py") if not p.stem.startswith("_")) if d.is_dir() \
        else []


def load_case(name: str) -> Case:
    """A built-in problem by name, or any script path defining ``build() -> Case``."""
    path = Path(name)
    if path.suffix != ".py":
        path = scenes_dir() / f"{name}.py"
        if not path.is_file():
            known = ", ".join(builtin_names()) or f"(none found in {scenes_dir()})"
            raise ValueError(f"unknown problem {name!r}; built-in problems: {known}; or give "
                             f"a script path ending in .py")
    if not path.is_file():
        raise ValueError(f"{path}: no such problem script")
    spec = importlib.util.spec_from_file_location(f"fields_pde_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ValueError(f"{path}: the script failed to run ({type(e).__name__}: {e})") from e
    build = getattr(module, "build", None)
    if not callable(build):
        raise ValueError(f"{path}: defines no build() returning a fields.pinn.Case")
    try:
        case = build()
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: build() failed: {e}") from e
    if not isinstance(case, Case):
        raise ValueError(f"{path}: build() returned {type(case).__name__}, expected "
                         f"fields.pinn.Case")
    case.script = path.resolve()
    return case


def structure(model: nn.Module) -> dict[str, Any]:
    """How many time windows and stages a trained model has (to rebuild it for loading)."""
    from fields.pinn.solve import Windowed

    if isinstance(model, Windowed):
        return {"windows": len(model.edges) - 1,
                "stages": [len(f.networks) for f in model.fields]}
    return {"windows": 1, "stages": [len(model.networks)]}


def load_solution(path: str | Path) -> tuple[Solution, dict[str, Any]]:
    """A solution saved by `run_case` (its problem script is run again to rebuild the problem
    and the network); returns it with the checkpoint's dict."""
    from fields.pinn.solve import rebuild
    from fields.train import read_checkpoint

    payload = read_checkpoint(path)
    if payload.get("kind") != "pinn":
        raise ValueError(f"{path}: field 'kind' is {payload.get('kind')!r}, expected 'pinn'")
    script = payload.get("script")
    if not script or not Path(script).is_file():
        raise ValueError(f"{path}: field 'script' ({script!r}) names no problem script here; "
                         f"the problem is needed to rebuild the solution")
    try:
        strategy = Strategy.from_dict(dict(payload["strategy"]))
        struct = dict(payload["structure"])
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
    saved = payload.get("unknowns") or {}
    for u in case.problem.unknowns:
        if u.name in saved:
            v = float(saved[u.name])
            with torch.no_grad():
                u.raw.fill_(math.log(v) if u.positive else v)
    sol = Solution(case.problem, model, strategy, str(payload.get("network", "")), [], 0.0, 0)
    return sol, payload


def _override(strategy: Strategy, overrides: dict[str, Any] | None) -> Strategy:
    if not overrides:
        return strategy
    return Strategy.from_dict({**strategy.to_dict(), **overrides})


def run_case(case: Case, output: str | Path | None, *, overrides: dict[str, Any] | None = None,
             progress: bool = True, pictures: bool = True) -> dict[str, Any]:
    """Solves `case` (strategy fields replaced by `overrides`) and writes the outputs into
    `output` (None: nothing written); returns the metrics."""
    from fields.io import atomic_write, write_text_atomic

    strategy = _override(case.strategy, overrides)
    problem = case.problem
    sol = solve(problem, case.network, strategy, progress=progress)
    metrics: dict[str, Any] = {
        "problem": problem.name,
        "rel_l2": None,
        "seconds": round(sol.seconds, 2),
        "steps": sol.steps,
        "strategy": strategy.describe(),
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
    metrics["strategy_config"] = strategy.to_dict()
    metrics = _finite(metrics)
    if output is None:
        return metrics
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_text_atomic(out / "history.json", json.dumps(_finite(sol.history)) + "\n")

    from fields.train import save_checkpoint

    save_checkpoint(out / "checkpoint.pt", sol.model, {
        "kind": "pinn", "script": str(case.script) if case.script else None,
        "problem": problem.name, "outputs": list(problem.outputs),
        "domain": {n: list(problem.domain.bounds(n)) for n in problem.domain.names},
        "strategy": strategy.to_dict(), "network": sol.network,
        "structure": structure(sol.model), "unknowns": sol.unknowns(),
        "rel_l2": metrics["rel_l2"]})
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


def _pictures(out: Path, sol: Solution, pred: np.ndarray, metrics: dict[str, Any]) -> None:
    from fields.plots import write_history_figure, write_pde_figure

    problem = sol.problem
    ref = problem.reference
    names = problem.domain.names
    axes, p, r = list(ref.axes), pred, ref.values
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
    """Command line of a problem script: ``python scenes/pde/NAME.py [OUTPUT] [--max-seconds S]
    [--steps N]``."""
    ap = argparse.ArgumentParser(description=(build.__module__ or "problem"))
    ap.add_argument("output", nargs="?", default=None, help="output folder")
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None, help="L-BFGS steps")
    args = ap.parse_args()
    over: dict[str, Any] = {}
    if args.max_seconds is not None:
        over["max_seconds"] = args.max_seconds
    if args.steps is not None:
        over["lbfgs_steps"] = args.steps
    case = build()
    m = run_case(case, args.output or f"outputs/pde/{case.problem.name}", overrides=over)
    print(json.dumps({k: m[k] for k in ("problem", "rel_l2", "seconds", "steps", "strategy")}))
