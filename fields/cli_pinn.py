"""`fields solve`: the built-in PDE problems (scenes/pde) or any problem script (registered by
`fields.cli`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer, console: Console,
             error: Callable[[Exception], typer.Exit]) -> None:
    @app.command("solve")
    def solve_cmd(
        names: Annotated[list[str] | None, typer.Argument(
            help="built-in problems (see --list) or script paths (.py) defining build()")
        ] = None,
        output: Annotated[str | None, typer.Option(
            help="output folder (default outputs/pde/<name>/<time>; with several problems, "
                 "one sub-folder each)")] = None,
        all_: Annotated[bool, typer.Option("--all", help="solve every built-in problem")] = False,
        json_: Annotated[bool, typer.Option("--json", help="print the results as JSON")] = False,
        list_: Annotated[bool, typer.Option("--list", help="list the built-in problems")] = False,
        max_seconds: Annotated[float | None, typer.Option(
            help="training-time budget per problem (default: the problem's own)")] = None,
        steps: Annotated[int | None, typer.Option(help="L-BFGS steps (default: the "
                                                       "problem's own)")] = None,
        adam_steps: Annotated[int | None, typer.Option(help="Adam steps")] = None,
        strategy: Annotated[str | None, typer.Option(
            help="JSON overrides of Strategy fields, e.g. '{\"n_collocation\": 2048}'")] = None,
        threads: Annotated[int, typer.Option(help="torch threads (0: leave as is)")] = 0,
    ) -> None:
        """Solve a PDE with a PINN: writes metrics.json (rel_l2 against the reference,
        seconds, steps, strategy), solution.png (solution | reference | error), history.png,
        solution.npz and checkpoint.pt."""
        from fields.pinn.run import builtin_names, load_case, run_case

        if threads > 0:
            torch.set_num_threads(threads)
        if list_:
            for n in builtin_names():
                console.print(n)
            return
        if all_ == bool(names):
            raise error(ValueError("give problem NAMES or --all (see --list)"))
        over: dict[str, Any] = {}
        try:
            if strategy:
                extra = json.loads(strategy)
                if not isinstance(extra, dict):
                    raise ValueError("--strategy must be a JSON object")
                over.update(extra)
        except json.JSONDecodeError as e:
            raise error(ValueError(f"--strategy is not valid JSON: {e}")) from e
        except ValueError as e:
            raise error(e) from e
        if max_seconds is not None:
            if not max_seconds > 0:
                raise error(ValueError("--max-seconds must be > 0"))
            over["max_seconds"] = max_seconds
        if steps is not None:
            over["lbfgs_steps"] = steps
        if adam_steps is not None:
            over["adam_steps"] = adam_steps
        many = all_ or len(names) > 1
        names = builtin_names() if all_ else list(names)
        stamp = time.strftime("%Y-%m-%d_%H%M%S")
        rows = []
        for n in names:
            try:
                case = load_case(n)
                label = case.problem.name
                if output is None:
                    out = Path("outputs/pde") / label / stamp
                else:
                    out = Path(output) / label if many else Path(output)
                if not json_:
                    console.print(f"[bold]{label}[/bold]: {case.problem.domain}, "
                                  f"output -> {out}")
                m = run_case(case, out, overrides=over)
            except (ValueError, OSError, TypeError, FloatingPointError) as e:
                raise error(e) from e
            m["output"] = str(out)
            rows.append(m)
            if not json_:
                _print_one(console, m)
        if json_:
            keys = ("problem", "rel_l2", "target", "met_target", "seconds", "steps",
                    "strategy", "network", "unknowns", "alpha_rel_error", "output")
            print(json.dumps([{k: m[k] for k in keys if k in m} for m in rows], indent=2))
        elif len(rows) > 1:
            _print_table(console, rows)


def _print_one(console: Console, m: dict[str, Any]) -> None:
    rel = "n/a" if m.get("rel_l2") is None else f"{m['rel_l2']:.2e}"
    line = f"  rel L2 {rel} in {m['seconds']:.0f} s, {m['steps']} steps ({m['strategy']})"
    if m.get("target") is not None and m.get("met_target") is not None:
        line += f"; target {m['target']:.0e}: " + ("met" if m["met_target"] else "NOT met")
    for k, v in (m.get("unknowns") or {}).items():
        line += f"; {k} = {v:.6g}"
    console.print(line)
    console.print(f"  wrote {m['output']}/metrics.json, solution.png, history.png")


def _print_table(console: Console, rows: list[dict[str, Any]]) -> None:
    t = Table(title="PINN problems")
    for c in ("problem", "rel L2", "target", "seconds", "steps", "strategy", "network"):
        t.add_column(c)
    for m in rows:
        rel = "n/a" if m.get("rel_l2") is None else f"{m['rel_l2']:.2e}"
        tgt = "" if m.get("target") is None else f"{m['target']:.0e}" + (
            " ok" if m.get("met_target") else " missed")
        t.add_row(m["problem"], rel, tgt, f"{m['seconds']:.0f}", str(m["steps"]),
                  m["strategy"], m["network"])
    console.print(t)
