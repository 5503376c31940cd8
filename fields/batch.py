"""Many small fields: one job per item of a folder (`fields fit sdf --meshes DIR`, `fields fit
image --images DIR`), each its own `fields fit ...` process in its own run folder.

By default the jobs run in a local pool sized to the machine (``--jobs``: as many as there
are cores, one torch thread each); ``--ray`` spreads them over a local Ray, ``--ray ADDRESS``
over an existing Ray cluster (``pip install 'fields[cluster]'``; the output folder must then be
on a file system every node sees). One failing item never stops the batch. The batch folder
holds ``manifest.jsonl``: a line per finished job (item, status ``done`` or ``failed``, its
metrics or error, seconds, output folder); a rerun skips the items whose last line says
``done`` and whose ``metrics.json`` is still there, and tries the failed ones again. A summary
table ends the batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fields.io import write_text_atomic

MANIFEST = "manifest.jsonl"


@dataclass
class Job:
    """One item of a batch: its name (the run folder's) and the command-line arguments of its
    `fields` run (the output folder is added)."""

    name: str
    args: list[str]
    output: str = ""


@dataclass
class Result:
    """How a job ended (a manifest line)."""

    item: str
    status: str  # "done" or "failed"
    seconds: float
    output: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> str:
        d: dict[str, Any] = {"item": self.item, "status": self.status,
                             "seconds": round(self.seconds, 3), "output": self.output}
        if self.status == "done":
            d["metrics"] = self.metrics
        else:
            d["error"] = self.error
        return json.dumps(d)


def items_in(folder: str | Path, suffixes: Sequence[str], what: str) -> list[Path]:
    """The files of `folder` (not recursive) with one of `suffixes`, sorted; ValueError naming
    the folder when it is missing or holds none."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder (expected a folder of {what})")
    files = sorted(p for p in root.iterdir()
                   if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise ValueError(f"{root}: holds no {what} ({', '.join(suffixes)})")
    return files


def unique_names(files: Sequence[Path]) -> list[str]:
    """A run-folder name per file: its stem, with the suffix where two stems are the same."""
    stems = [f.stem for f in files]
    return [f.stem if stems.count(f.stem) == 1 else f.name.replace(".", "_") for f in files]


def read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """The last line of each item in a manifest (missing file: empty); lines that are not
    JSON objects (a write cut short) are skipped."""
    last: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return last
    for line in path.read_text().splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(d, dict) and "item" in d:
            last[str(d["item"])] = d
    return last


def finished(manifest: dict[str, dict[str, Any]], job: Job) -> bool:
    """Whether the manifest says the job is done and its metrics.json is still there."""
    d = manifest.get(job.name)
    return bool(d and d.get("status") == "done"
                and (Path(job.output) / "metrics.json").is_file())


def _command(job: Job, threads: int) -> list[str]:
    return [sys.executable, "-m", "fields", *job.args, "--output", job.output,
            "--threads", str(threads), "--overwrite"]


def run_job(job: Job, threads: int = 1) -> Result:
    """Runs one job as its own `fields` process (so that a crash, an error or a divergence
    stays with it); its metrics.json, or the last line of its error output."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    try:
        out = subprocess.run(_command(job, threads), capture_output=True, text=True, env=env)
        code, text = out.returncode, (out.stdout + out.stderr)
    except OSError as e:
        code, text = -1, str(e)
    seconds = time.perf_counter() - t0
    metrics_file = Path(job.output) / "metrics.json"
    if code == 0 and metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        keep = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))
                or v is None}
        return Result(job.name, "done", seconds, job.output, metrics=keep)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error")]
    why = errors[-1] if errors else (lines[-1] if lines else f"exit code {code}")
    return Result(job.name, "failed", seconds, job.output, error=f"{why} (exit code {code})")


def _local(jobs: Sequence[Job], workers: int, threads: int,
           done: Callable[[Result], None]) -> None:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(max_workers=workers) as pool:  # each job is its own process
        futures = [pool.submit(run_job, job, threads) for job in jobs]
        for f in as_completed(futures):
            done(f.result())


def ray_module() -> Any:
    """The `ray` module; RuntimeError saying how to install it when it is not there."""
    try:
        import ray
    except ImportError as e:
        raise RuntimeError("--ray needs Ray, an optional extra: pip install 'fields[cluster]' "
                           f"(or pip install ray) ({e})") from None
    return ray


def _ray(jobs: Sequence[Job], address: str, threads: int, cpus: int | None,
         done: Callable[[Result], None]) -> None:
    ray = ray_module()
    started = False
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(num_cpus=threads, max_retries=0)(run_job)
        pending = {remote.remote(job, threads): job for job in jobs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    done(ray.get(ref))
                except Exception as e:  # the task itself failed (a node lost): the item fails
                    done(Result(job.name, "failed", 0.0, job.output,
                                error=f"Ray task failed: {str(e).splitlines()[0]}"))
    finally:
        if started:
            ray.shutdown()


def run_batch(jobs: Sequence[Job], folder: str | Path, *, workers: int = 0, threads: int = 1,
              ray: str | None = None, progress: bool = True, console: Any = None,
              on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Runs every job not already done (see `finished`) into ``folder/<job name>/``, appending
    each result to ``folder/manifest.jsonl`` as it ends; returns the results of this run
    (skipped items as their manifest line, status ``done``). `workers`: the local pool's size
    (0: the machine's cores / `threads`); `ray`: None (the local pool), "local" or a Ray
    address. The progress bar goes to `console` (a rich Console; None: rich's default)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / MANIFEST
    for job in jobs:
        job.output = str(root / job.name)
    manifest = read_manifest(manifest_path)
    todo = [j for j in jobs if not finished(manifest, j)]
    results: list[Result] = []
    for j in jobs:
        if j not in todo:
            d = manifest[j.name]
            results.append(Result(j.name, "done", float(d.get("seconds", 0.0)), j.output,
                                  metrics=d.get("metrics", {}), error="skipped"))
    cores = os.cpu_count() or 1
    workers = workers if workers > 0 else max(1, cores // max(threads, 1))
    lines = [ln for ln in (manifest_path.read_text().splitlines()
                           if manifest_path.is_file() else []) if ln.strip()]
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), console=console, disable=not progress)
    with bar:
        task = bar.add_task("batch", total=len(todo), info="")
        failed = 0

        def done(r: Result) -> None:
            nonlocal failed
            results.append(r)
            lines.append(r.to_json())
            # the whole manifest rewritten atomically: a killed batch never leaves half a line
            write_text_atomic(manifest_path, "\n".join(lines) + "\n")
            failed += r.status != "done"
            bar.update(task, advance=1, info=f"{failed} failed" if failed else "")
            if on_result is not None:
                on_result(r)

        if todo:
            if ray is None:
                _local(todo, workers, threads, done)
            else:
                _ray(todo, ray, threads, workers if ray == "local" else None, done)
    order = {j.name: i for i, j in enumerate(jobs)}
    return sorted(results, key=lambda r: order.get(r.item, len(order)))


def summary(results: Sequence[Result], metric_keys: Sequence[str]) -> Any:
    """A rich table: item, status, the metrics named in `metric_keys`, the job's wall seconds,
    and the error of failed items."""
    from rich.table import Table

    table = Table(title="batch")
    table.add_column("item")
    table.add_column("status")
    for k in metric_keys:
        table.add_column(k, justify="right")
    table.add_column("job seconds", justify="right")
    table.add_column("error")
    for r in results:
        status = "skipped (done)" if r.error == "skipped" else r.status
        cells = []
        for k in metric_keys:
            v = r.metrics.get(k)
            cells.append(f"{v:.4g}" if isinstance(v, (int, float)) else "")
        table.add_row(r.item, status, *cells, f"{r.seconds:.1f}",
                      "" if r.status == "done" else (r.error or ""))
    return table


def forwarded_args(ctx: Any, drop: Sequence[str]) -> list[str]:
    """The options of the command of `ctx` (a `typer.Context`) that were given on the command
    line, as arguments for each job's own command (those named in `drop`, the batch's own,
    left out)."""
    args: list[str] = []
    for p in ctx.command.params:
        if p.name in drop or p.param_type_name != "option" or p.name is None:
            continue
        source = ctx.get_parameter_source(p.name)
        if getattr(source, "name", "") != "COMMANDLINE":
            continue
        value = ctx.params.get(p.name)
        if p.is_flag:
            if p.secondary_opts and not value:
                args.append(p.secondary_opts[0])
            elif value:
                args.append(p.opts[0])
            continue
        for v in (value if p.multiple and isinstance(value, (list, tuple)) else [value]):
            if v is not None:
                args += [p.opts[0], str(v)]
    return args


def optional_value(argv: list[str], flag: str, default: str) -> list[str]:
    """`argv` with `default` after `flag` where it has no value (the end, or another option
    next): ``--ray`` alone means a local Ray, ``--ray ADDRESS`` a cluster."""
    out = list(argv)
    for i in range(len(out) - 1, -1, -1):
        if out[i] == flag and (i + 1 == len(out) or out[i + 1].startswith("--")):
            out.insert(i + 1, default)
    return out
