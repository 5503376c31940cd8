"""One command-line grammar for every `fields fit ...` and `fields solve`.

Every fitting command takes the same options with the same meaning (`RunOptions`):

- ``--output DIR``: the run's folder (default ``outputs/<input name>/<kind>/<timestamp>/``);
- ``--max-seconds S``: training-time budget (evaluation and checkpoints not counted);
- ``--steps N``: total optimisation steps (every optimiser's steps counted);
- ``--seed N``: every random generator (default `DEFAULT_SEED`, the same for every kind);
- ``--config JSON|FILE``: overrides of the kind's config dataclass, inline JSON or a path to a
  ``.json`` file (kind-specific flags stay as shorthands for common fields);
- ``--resume CHECKPOINT``: continue a run from its checkpoint;
- ``--threads N``: torch threads (0: leave as is).

Every run folder holds ``config.json`` (the full resolved config, `write_run_config`),
``metrics.json`` (`write_metrics`: ``steps``, ``seconds``, ``wall_seconds`` and the kind's
metrics), ``checkpoint.pt`` and pictures. Old spellings of these options keep working as
hidden aliases that print one deprecation line (`alias`).

Errors are printed as plain text (never rich markup) by `error`, without a traceback.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fields.io import write_json

console = Console()
DEFAULT_SEED = 0

OutputOpt = Annotated[str | None, typer.Option(
    "--output", help="the run's folder (default: outputs/<input>/<kind>/<timestamp>)")]
MaxSecondsOpt = Annotated[float, typer.Option(
    "--max-seconds", help="training-time budget in seconds")]
StepsOpt = Annotated[int, typer.Option("--steps", help="total optimisation steps")]
SeedOpt = Annotated[int, typer.Option("--seed", help="random seed (every generator)")]
ConfigOpt = Annotated[str | None, typer.Option(
    "--config", help="overrides of the kind's config fields: inline JSON, e.g. "
                     "'{\"lr\": 0.005}', or a path to a .json file")]
ResumeOpt = Annotated[str | None, typer.Option(
    "--resume", help="a checkpoint.pt to continue from")]
ThreadsOpt = Annotated[int, typer.Option("--threads", help="torch threads (0: leave as is)")]


def hidden(flag: str) -> Any:
    """A hidden typer option for an old spelling of a flag (see `alias`)."""
    return typer.Option(flag, hidden=True)


def error(e: BaseException | str, code: int = 2) -> typer.Exit:
    """Prints ``error: <message>`` as plain text (markup in the message is escaped) and
    returns the `typer.Exit` to raise."""
    console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def say(text: str) -> None:
    """Prints a line whose content (paths, user input) is shown as it is, never as markup."""
    console.print(escape(text), highlight=False, soft_wrap=True)


_warned: set[str] = set()


def alias(value: Any, old_value: Any, old: str, new: str) -> Any:
    """`value`, or `old_value` when it was given under the deprecated spelling `old` (then one
    line, once per process, says to use `new`)."""
    if old_value is None:
        return value
    if old not in _warned:
        _warned.add(old)
        console.print(f"[yellow]deprecated:[/yellow] {old} is now {new}", highlight=False)
    return old_value


def set_threads(threads: int) -> None:
    """Sets torch's thread count (0: leave as is)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def parse_config(text: str | None, what: str) -> dict[str, Any]:
    """The ``--config`` overrides: a JSON object given inline or in a ``.json`` file (empty
    without one). ValueError naming the file (or ``--config``) and what was expected."""
    if not text:
        return {}
    source = "--config"
    stripped = text.strip()
    if not stripped.startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"--config {text!r}: expected a JSON object of {what} fields or "
                             "the path of a .json file holding one (no such file)")
        source, stripped = str(path), path.read_text()
    try:
        d = json.loads(stripped)
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: not valid JSON ({e})") from e
    if not isinstance(d, dict):
        raise ValueError(f"{source}: expected a JSON object of {what} fields, got "
                         f"{type(d).__name__}")
    return d


@dataclass
class RunOptions:
    """The options every fitting command shares (see the module docstring)."""

    output: str | None
    max_seconds: float
    steps: int
    seed: int = DEFAULT_SEED
    config: str | None = None
    resume: str | None = None
    threads: int = 0

    def check(self) -> None:
        """ValueError when a budget is impossible, or the checkpoint to resume is missing."""
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        if not (self.max_seconds > 0 and math.isfinite(self.max_seconds)):
            raise ValueError(f"--max-seconds must be a positive number, got {self.max_seconds}")
        if self.resume is not None and not Path(self.resume).is_file():
            raise ValueError(f"--resume {self.resume}: no such checkpoint")

    def folder(self, input_name: str, kind: str) -> Path:
        """The run's folder: ``--output``, else ``outputs/<input>/<kind>/<timestamp>``."""
        return run_folder(self.output, input_name, kind)

    def budget(self) -> dict[str, Any]:
        """The budget part of config.json."""
        return {"steps": self.steps, "max_seconds": self.max_seconds, "seed": self.seed,
                "resume": self.resume}


def run_folder(output: str | None, input_name: str, kind: str) -> Path:
    """``output``, else ``outputs/<input name>/<kind>/<timestamp>`` (a new folder per run:
    ``-n2``, ``-n3``, ... is added when one of that second exists)."""
    if output:
        return Path(output)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in input_name) or "run"
    folder = Path("outputs") / safe / kind / time.strftime("%Y-%m-%d_%H%M%S")
    n = 2
    while folder.exists():  # two runs started in the same second
        folder = folder.with_name(f"{folder.name.split('-n')[0]}-n{n}")
        n += 1
    return folder


def write_run_config(out: Path, kind: str, input_name: str, options: RunOptions,
                     config: dict[str, Any], **extra: Any) -> Path:
    """Writes ``config.json``: the kind, the input, the budget and the full resolved config."""
    return write_json(out / "config.json", {"kind": kind, "input": input_name,
                                            **options.budget(), **extra, "config": config})


def write_metrics(out: Path, steps: int, seconds: float, wall_seconds: float,
                  metrics: dict[str, Any]) -> Path:
    """Writes ``metrics.json`` with the common keys first: ``steps`` (optimisation steps),
    ``seconds`` (training time), ``wall_seconds`` (the fit with its evaluations and
    checkpoints), then the kind's."""
    rest = {k: v for k, v in metrics.items() if k not in ("steps", "seconds", "wall_seconds")}
    return write_json(out / "metrics.json", {"steps": steps, "seconds": seconds,
                                             "wall_seconds": wall_seconds, **rest})


@contextmanager
def guarded(out: Path | None = None) -> Iterator[None]:
    """Runs a command's work: Ctrl-C says where the checkpoint is (exit 130); bad input
    (ValueError, TypeError, OSError) exits 2 with one plain line."""
    try:
        yield
    except KeyboardInterrupt:
        where = f": checkpoint written to {out / 'checkpoint.pt'}" if out is not None else ""
        console.print(f"[yellow]interrupted[/yellow]{escape(where)}", highlight=False)
        raise typer.Exit(130) from None
    except (ValueError, TypeError, OSError) as e:
        raise error(e) from e


def load_posed_images(data: str | None, downscale: int = 1, scene_resolution: int = 128) -> Any:
    """`(SceneData, name)`: posed images from a folder in any supported format, or the
    built-in procedural scene (rendered once with a progress bar, then cached)."""
    from rich.progress import Progress

    from fields.data import load_scene
    from fields.scenes.tabletop import SceneSpec, ensure_scene

    if data is None:
        spec = SceneSpec(resolution=scene_resolution)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("rendering the built-in scene (once, then cached)", total=1)
            folder = ensure_scene(
                spec, progress=lambda i, n: progress.update(task, completed=i, total=n)
            )
        say(f"built-in scene {spec.name!r} ({scene_resolution}px): {folder}")
        return load_scene(folder), spec.name
    scene = load_scene(data, downscale=downscale)
    return scene, scene.name


def device_name(device: str) -> str:
    """'cpu', or the GPU's name (the figures are about that device)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device}: {torch.cuda.get_device_name(torch.device(device))}"
    return device


def report(
    title: str,
    columns: list[str],
    cells: Callable[[Any], list[str]],
    run: Callable[[Callable[[Any], None]], object],
    as_json: bool,
) -> None:
    """Runs a benchmark, printing each row as JSON, or all of them as one table at the end."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right")

    def on_row(row: Any) -> None:
        if as_json:
            print(json.dumps(row.as_dict()), flush=True)
        else:
            table.add_row(*cells(row))

    if as_json:
        run(on_row)
    else:
        with console.status("measuring..."):
            run(on_row)
        console.print(table)
