"""`fields solve`: the built-in PDE problems (`fields/scenes/pde`) or any problem script
(registered by `fields.pinn.kind`), with the grammar every `fields fit` shares
(`fields.command`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fields import distributed
from fields.command import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_SEED,
    CheckpointEveryOpt,
    ConfigOpt,
    JobsOpt,
    OutputOpt,
    OverwriteOpt,
    RayOpt,
    ResumeOpt,
    SeedOpt,
    ThreadsOpt,
    alias,
    check_checkpoint_kind,
    check_device,
    console,
    error,
    guarded,
    hidden,
    parse_config,
    prepare_run_folder,
    report_batch,
    run_folder,
    say,
    set_threads,
)


def register(app: typer.Typer, fit_app: typer.Typer, bench_app: typer.Typer) -> None:
    """Adds `fields solve` and `fields bench pinn`."""
    app.command("solve")(solve_cmd)
    bench_app.command("pinn")(bench_pinn_cmd)


def bench_pinn_cmd(
    problems: Annotated[list[str] | None, typer.Option(
        "--problem", help="problems to run (repeatable; default: burgers, poisson_lshape, "
                          "cavity)")] = None,
    seconds: Annotated[float, typer.Option(
        help="training seconds per library and problem")] = 120.0,
    deepxde: Annotated[bool | None, typer.Option(
        "--deepxde/--no-deepxde", help="run DeepXDE too (default: when it is installed)")]
        = None,
    out: Annotated[str, typer.Option(help="folder for bench.json and error_vs_time.png")] =
        "outputs/bench-pinn",
    threads: ThreadsOpt = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """fields against DeepXDE (PyTorch backend, when installed) on the same problems with
    the same network size, points, schedule and time budget: relative L2 at the end, time to
    1e-2 and to 1e-3; writes bench.json and error_vs_time.png into OUT."""
    from fields.io import write_json
    from fields.pinn.bench import PROBLEMS, BenchRow, bench_pinn
    from fields.plots import write_error_time_figure

    set_threads(threads)
    rows: list[BenchRow] = []

    def fmt(v: float | None) -> str:
        return "not reached" if v is None else f"{v:.1f} s"

    def on_row(row: BenchRow) -> None:
        rows.append(row)
        if as_json:
            print(json.dumps(row.as_dict(curve=False)), flush=True)
        else:
            rel = "n/a" if row.rel_l2 is None else f"{row.rel_l2:.2e}"
            say(f"{row.problem} / {row.library}: rel L2 {rel} after {row.seconds:.0f} s "
                f"({row.steps} steps); time to 1e-2: {fmt(row.to_1e2)}, to 1e-3: "
                f"{fmt(row.to_1e3)}")

    with guarded():
        if not seconds > 0:
            raise ValueError(f"--seconds must be positive, got {seconds}")
        bench_pinn(list(problems or PROBLEMS), seconds, deepxde, on_row)
        folder = Path(out)
        write_json(folder / "bench.json", {"seconds": seconds, "threads":
                                           __import__("torch").get_num_threads(),
                                           "rows": [r.as_dict() for r in rows]})
        write_error_time_figure(folder / "error_vs_time.png",
                                {f"{r.problem} / {r.library}": r.curve for r in rows})
    if not as_json:
        t = Table(title=f"fields bench pinn ({seconds:g} s each)")
        for c in ("problem", "library", "rel L2", "time to 1e-2", "time to 1e-3", "steps"):
            t.add_column(c)
        for r in rows:
            t.add_row(r.problem, r.library, "n/a" if r.rel_l2 is None else f"{r.rel_l2:.2e}",
                      fmt(r.to_1e2), fmt(r.to_1e3), str(r.steps))
        console.print(t)
        say(f"wrote {Path(out) / 'bench.json'}, {Path(out) / 'error_vs_time.png'}")


def solve_cmd(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(
        help="built-in problems (see --list) or script paths (.py) defining build()")] = None,
    output: OutputOpt = None,
    max_seconds: Annotated[float | None, typer.Option(
        "--max-seconds", help="training-time budget per problem (default: the problem's "
                              "own)")] = None,
    steps: Annotated[int | None, typer.Option(
        "--steps", help="total optimisation steps per problem: Adam steps and L-BFGS "
                        "iterations together, every stage (time windows share them). The "
                        "problem's phases keep their own budgets in order until the total is "
                        "spent: Adam keeps min(its steps, N), L-BFGS gets the rest, and a "
                        "total beyond the problem's own goes to its last L-BFGS phase "
                        "(default: the problem's own)")] = None,
    seed: SeedOpt = DEFAULT_SEED,
    config: ConfigOpt = None,
    resume: ResumeOpt = None,
    threads: ThreadsOpt = 0,
    overwrite: OverwriteOpt = False,
    checkpoint_every: CheckpointEveryOpt = DEFAULT_CHECKPOINT_EVERY,
    adam_steps: Annotated[int | None, typer.Option(
        help="Adam steps of the first stage (shorthand for --config "
             "'{\"adam_steps\": N}')")] = None,
    lbfgs_steps: Annotated[int | None, typer.Option(
        help="L-BFGS iterations of the first stage (shorthand for --config "
             "'{\"lbfgs_steps\": N}')")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="where the field trains: cpu, cuda or cuda:N (default: the "
                         "problem's own, cpu); on a GPU float32 with TF32 off unless "
                         "--config sets dtype")] = None,
    all_: Annotated[bool, typer.Option("--all", help="solve every built-in problem")] = False,
    json_: Annotated[bool, typer.Option("--json", help="print the results as JSON")] = False,
    list_: Annotated[bool, typer.Option("--list", help="list the built-in problems")] = False,
    strategy: Annotated[str | None, hidden("--strategy")] = None,
    sweep: Annotated[str | None, typer.Option(
        "--sweep", help="a parameter sweep: a JSON object (inline or a .json file) of Strategy "
                        "fields to lists of values, e.g. '{\"lr\": [1e-3, 3e-3]}'; every "
                        "combination is its own job (a batch: manifest.jsonl, resumable)")] = None,
    jobs: JobsOpt = 0,
    ray: RayOpt = None,
) -> None:
    """Solve a PDE with a PINN. --config overrides fields of the problem's Strategy
    (fields.pinn.Strategy: n_collocation, lr, weighting, ...). Writes config.json,
    checkpoint.pt, metrics.json (steps, seconds, wall_seconds, rel_l2 against the reference,
    target, ...), history.json, solution.png (solution | reference | error), history.png and
    solution.npz into outputs/<problem>/pinn/<timestamp> (--output DIR: DIR, or DIR/<problem>
    with several problems)."""
    from fields.pinn.run import builtin_names, load_case, run_case

    set_threads(threads)
    if list_:
        for n in builtin_names():
            say(n)
        return
    config = alias(config, strategy, "--strategy", "--config")
    if sweep is not None:
        with guarded():
            _sweep(ctx, names or [], sweep, config, output, jobs, ray, resume)
        return
    if jobs or ray is not None:
        raise error("--jobs and --ray go with --sweep")
    with guarded():
        if all_ == bool(names):
            raise ValueError("give problem NAMES or --all (see --list)")
        if steps is not None and steps < 1:
            raise ValueError(f"--steps must be >= 1, got {steps}")
        if max_seconds is not None and not (0 < max_seconds < float("inf")):
            raise ValueError(f"--max-seconds must be a positive number, got {max_seconds}")
        if not (checkpoint_every >= 0 and checkpoint_every < float("inf")):
            raise ValueError(f"--checkpoint-every must be a number of seconds >= 0, got "
                             f"{checkpoint_every}")
        over: dict[str, Any] = parse_config(config, "Strategy")
        over["seed"] = seed
        if device is not None:
            check_device(device)
            over["device"] = device
        for key, value in (("max_seconds", max_seconds), ("total_steps", steps),
                           ("adam_steps", adam_steps), ("lbfgs_steps", lbfgs_steps)):
            if value is not None:
                over[key] = value
        names = builtin_names() if all_ else list(names or [])
        many = len(names) > 1
        if resume is not None:
            if many:
                raise ValueError("--resume continues one run: give one problem")
            if not Path(resume).is_file():
                raise ValueError(f"--resume {resume}: no such checkpoint")
            check_checkpoint_kind(resume, "pinn", "solve")
            if output is None:  # the run goes on in its folder
                output = str(Path(resume).parent)
    stamp = distributed.broadcast_object(time.strftime("%Y-%m-%d_%H%M%S"))  # rank 0's
    rows = []
    for n in names:
        wall = time.perf_counter()
        with guarded():
            case = load_case(n)
            label = case.problem.name
            if output is None:
                out = run_folder(None, label, "pinn")
                if not out.name.startswith("torchrun-"):  # a torchrun id names it for restarts
                    out = out.with_name(stamp)
            else:
                out = Path(output) / label if many else Path(output)
            prepare_run_folder(out, resume, overwrite)
        if not json_:
            say(f"{label}: {case.problem.domain}, output -> {out}")
        with guarded(out):
            try:
                m = run_case(case, out, overrides=over, resume=resume, wall_start=wall,
                             checkpoint_every=checkpoint_every)
            except FloatingPointError as e:
                raise error(e, code=1) from e
        m["output"] = str(out)
        rows.append(m)
        if not json_:
            _print_one(console, m)
    if json_ and distributed.is_main():
        keys = ("problem", "rel_l2", "target", "met_target", "seconds", "wall_seconds",
                "steps", "strategy", "network", "conditions", "unknowns", "alpha_rel_error",
                "output")
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
    say(line)
    for c in m.get("conditions") or []:
        err = "n/a" if c.get("max_error") is None else f"{c['max_error']:.2e}"
        say(f"  {c['condition']}: {c['enforced']}, max error {err}")
    say(f"  wrote {m['output']}/config.json, metrics.json, checkpoint.pt, solution.png, "
        f"history.png")


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


def _sweep(ctx: typer.Context, names: list[str], sweep: str, config: str | None,
           output: str | None, jobs: int, ray: str | None, resume: str | None) -> None:
    """`fields solve PROBLEM --sweep JSON`: one job per combination of the sweep's values
    (`fields.batch`), each `fields solve PROBLEM --config <the combination over --config>`."""
    import itertools

    from fields.batch import Job, forwarded_args, run_batch

    if len(names) != 1 or resume is not None:
        raise ValueError("--sweep runs one problem (give one name, no --resume: a rerun of "
                         "the sweep skips the combinations already done)")
    grid = parse_config(sweep, "Strategy")
    if not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError(f"--sweep {sweep}: expected a JSON object of Strategy fields to "
                         "non-empty lists of values, e.g. {\"lr\": [0.001, 0.003]}")
    base = parse_config(config, "Strategy")
    keys = list(grid)
    extra = forwarded_args(ctx, ["sweep", "config", "output", "jobs", "ray", "threads",
                                 "overwrite", "json_", "all_", "list_", "strategy"])
    batch = []
    for values in itertools.product(*(grid[k] for k in keys)):
        combo = dict(zip(keys, values, strict=True))
        name = ",".join(f"{k}={v}" for k, v in combo.items())
        name = "".join(c if c.isalnum() or c in "-_.,=" else "_" for c in name)
        batch.append(Job(name, ["solve", names[0], "--config",
                                          json.dumps({**base, **combo}), *extra]))
    folder = Path(output) if output else Path("outputs") / Path(names[0]).stem / "sweep"
    say(f"{len(batch)} combination(s) of {', '.join(keys)} for {names[0]}; output {folder} "
        "(manifest.jsonl)")
    report_batch(run_batch(batch, folder, workers=jobs, ray=ray, console=console), folder,
                 ["rel_l2", "steps"])
