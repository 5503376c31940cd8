"""One command-line grammar for every `fields fit ...` and `fields solve`.

Every fitting command takes the same options with the same meaning (`RunOptions`):

- ``--output DIR``: the run's folder (default ``outputs/<input name>/<kind>/<timestamp>/``);
- ``--max-seconds S``: training-time budget (evaluation and checkpoints not counted);
- ``--steps N``: total optimisation steps (every optimiser's steps counted);
- ``--seed N``: every random generator (default `DEFAULT_SEED`, the same for every kind);
- ``--config JSON|FILE``: overrides of the kind's config dataclass, inline JSON or a path to a
  ``.json`` file (kind-specific flags stay as shorthands for common fields);
- ``--resume CHECKPOINT``: continue a run from its checkpoint (in the checkpoint's folder
  unless ``--output`` says otherwise);
- ``--threads N``: torch threads (0: leave as is);
- ``--overwrite``: replace the run already in the output folder (its files are removed
  first); without it a folder that holds a run is refused;
- ``--checkpoint-every S``: seconds between checkpoints (the first comes after 30 s or the
  first evaluation, whichever is first).

Every run folder holds ``config.json`` (the full resolved config, `write_run_config`),
``metrics.json`` (`write_metrics`: ``steps``, ``seconds``, ``wall_seconds`` and the kind's
metrics), ``checkpoint.pt`` and pictures. Old spellings of these options keep working as
hidden aliases that print one deprecation line (`alias`).

Errors are printed as plain text (never rich markup) by `error`, without a traceback:
bad input exits 2, a run that diverged or could not write its files exits 1, Ctrl-C 130 and
SIGTERM 143 (both after writing a checkpoint).
"""

from __future__ import annotations

import json
import math
import os
import shutil
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

from fields import distributed
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
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="replace the run already in the output folder (its files are removed "
                        "first)")]
CheckpointEveryOpt = Annotated[float, typer.Option(
    "--checkpoint-every", help="seconds between checkpoints (the first after 30 s or the "
                               "first evaluation; 0: only at the end and on Ctrl-C / SIGTERM)")]
DEFAULT_CHECKPOINT_EVERY = 120.0
DeviceOpt = Annotated[str, typer.Option(
    "--device", help="where the field trains: cpu, cuda or cuda:N (the CUDA kernels need "
                     "fields._C built where torch has CUDA)")]
# the files that make a folder a run's (see `prepare_run_folder`)
RUN_FILES = ("config.json", "checkpoint.pt", "metrics.json")
# how a kind's checkpoint is called in messages
KIND_NAMES = {"nerf": "a NeRF", "sdf": "an SDF", "inr": "an INR", "flow": "a scene-flow",
              "pinn": "a PINN"}


def hidden(flag: str) -> Any:
    """A hidden typer option for an old spelling of a flag (see `alias`)."""
    return typer.Option(flag, hidden=True)


def error(e: BaseException | str, code: int = 2) -> typer.Exit:
    """Prints ``error: <message>`` as plain text (markup in the message is escaped) and
    returns the `typer.Exit` to raise."""
    if console.quiet:  # a rank other than 0 under torchrun: its own error still shows
        import sys

        print(f"error (rank {distributed.rank()}): {e}", file=sys.stderr, flush=True)
    else:
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
    overwrite: bool = False
    checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY

    def check(self, kind: str | None = None, command: str | None = None) -> None:
        """ValueError when a budget is impossible, the checkpoint to resume is missing or of
        another kind than `kind` (`command` names the command in the message), or
        ``--output`` already holds a run that neither ``--resume`` nor ``--overwrite``
        allows."""
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        if not (self.max_seconds > 0 and math.isfinite(self.max_seconds)):
            raise ValueError(f"--max-seconds must be a positive number, got {self.max_seconds}")
        if not (self.checkpoint_every >= 0 and math.isfinite(self.checkpoint_every)):
            raise ValueError(f"--checkpoint-every must be a number of seconds >= 0, got "
                             f"{self.checkpoint_every}")
        if self.resume is not None:
            if not Path(self.resume).is_file():
                raise ValueError(f"--resume {self.resume}: no such checkpoint")
            if kind is not None:
                check_checkpoint_kind(self.resume, kind, command or f"fit {kind}")
        if self.output:
            prepare_run_folder(Path(self.output), self.resume, self.overwrite, clear=False)

    def folder(self, input_name: str, kind: str) -> Path:
        """The run's folder, checked and ready (`prepare_run_folder`): ``--output``, else the
        folder of the checkpoint to ``--resume``, else ``outputs/<input>/<kind>/<timestamp>``."""
        output = self.output or (str(Path(self.resume).parent) if self.resume else None)
        out = run_folder(output, input_name, kind)
        prepare_run_folder(out, self.resume, self.overwrite)
        return out

    def train_config(self, **kw: Any) -> Any:
        """The `fields.train.TrainConfig` of these options (`kw`: the kind's other fields)."""
        from fields.train import TrainConfig

        return TrainConfig(steps=self.steps, max_seconds=self.max_seconds, seed=self.seed,
                           checkpoint_every=self.checkpoint_every, **kw)

    def budget(self) -> dict[str, Any]:
        """The budget part of config.json."""
        return {"steps": self.steps, "max_seconds": self.max_seconds, "seed": self.seed,
                "resume": self.resume}


def run_folder(output: str | None, input_name: str, kind: str) -> Path:
    """``output``, else ``outputs/<input name>/<kind>/<timestamp>`` (a new folder per run:
    ``-n2``, ``-n3``, ... is added when one of that second exists). Under torchrun, rank 0's
    choice on every rank; with a rendezvous id (``torchrun --standalone`` or ``--rdzv-id``)
    the folder is ``torchrun-<id>``, the same after a restart (``--max-restarts``)."""
    if output:
        return Path(output)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in input_name) or "run"
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none") if distributed.launched() else "none"
    if run_id not in ("", "none"):
        return Path("outputs") / safe / kind / ("torchrun-" + "".join(
            c if c.isalnum() or c in "-_." else "_" for c in run_id))
    folder = Path("outputs") / safe / kind / time.strftime("%Y-%m-%d_%H%M%S")
    n = 2
    while folder.exists():  # two runs started in the same second
        folder = folder.with_name(f"{folder.name.split('-n')[0]}-n{n}")
        n += 1
    return Path(distributed.broadcast_object(str(folder)))


def check_checkpoint_kind(path: str | Path, kind: str, command: str) -> None:
    """ValueError when the checkpoint at `path` is not of `kind`: "this is an INR checkpoint,
    fields fit nerf needs a NeRF one"."""
    from fields.checkpoint import read_checkpoint

    found = read_checkpoint(path).get("kind")
    if found != kind:
        what = KIND_NAMES.get(str(found), f"a {found!r}") if found else "an unnamed"
        raise ValueError(f"--resume {path}: this is {what} checkpoint (field 'kind' is "
                         f"{found!r}); fields {command} continues {KIND_NAMES.get(kind, kind)} "
                         f"one")


def _ours(folder: Path) -> bool:
    """Whether `folder`'s config.json was written by a fields run (`write_run_config`)."""
    try:
        d = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and "kind" in d and "input" in d


def prepare_run_folder(out: Path, resume: str | None = None, overwrite: bool = False,
                       clear: bool = True) -> None:
    """Refuses to mix a new run into a folder that holds one (any of `RUN_FILES`): allowed are
    a new or empty folder, a folder with other files, the folder of the checkpoint being
    resumed (the run goes on there), and, with `overwrite`, a fields run's folder, whose files
    are removed first (when `clear`). ValueError saying which flag to use otherwise.

    Under torchrun only rank 0 checks and clears; after a restart (``--max-restarts``) the
    folder is the run's own and is kept as it is (`fields.train.train` resumes from its
    checkpoint)."""
    if not distributed.is_main() or distributed.restart_count() > 0:
        return
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--output {out}: is a file, expected a folder")
    present = [f for f in RUN_FILES if (out / f).exists()]
    if not present:
        return
    same = resume is not None and Path(resume).resolve().parent == out.resolve()
    if same and overwrite:
        raise ValueError(f"--overwrite would remove the checkpoint that --resume {resume} "
                         f"continues; give one of them")
    if same:
        return
    if not overwrite:
        raise ValueError(f"{out} already holds a run ({', '.join(present)}): continue it with "
                         f"--resume {out / 'checkpoint.pt'}, or replace it with --overwrite")
    if not _ours(out):
        raise ValueError(f"{out}: holds {', '.join(present)} but no config.json of a fields "
                         f"run; --overwrite clears only fields runs: choose another --output")
    if resume is not None and out.resolve() in Path(resume).resolve().parents:
        raise ValueError(f"--overwrite would remove the checkpoint that --resume {resume} "
                         f"continues; give one of them")
    if clear:
        for entry in out.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def write_run_config(out: Path, kind: str, input_name: str, options: RunOptions,
                     config: dict[str, Any], **extra: Any) -> Path:
    """Writes ``config.json``: the kind, the input, the budget and the full resolved config
    (rank 0 only under torchrun, with the world size)."""
    if distributed.active():
        extra = {**extra, "world_size": distributed.world_size()}
    if not distributed.is_main():
        return out / "config.json"
    return write_json(out / "config.json", {"kind": kind, "input": input_name,
                                            **options.budget(), **extra, "config": config})


def write_metrics(out: Path, steps: int, seconds: float, wall_seconds: float,
                  metrics: dict[str, Any]) -> Path:
    """Writes ``metrics.json`` with the common keys first: ``steps`` (optimisation steps),
    ``seconds`` (training time), ``wall_seconds`` (the fit with its evaluations and
    checkpoints), then the kind's (rank 0 only under torchrun)."""
    if not distributed.is_main():
        return out / "metrics.json"
    rest = {k: v for k, v in metrics.items() if k not in ("steps", "seconds", "wall_seconds")}
    return write_json(out / "metrics.json", {"steps": steps, "seconds": seconds,
                                             "wall_seconds": wall_seconds, **rest})


def run_notes(state: Any) -> dict[str, Any]:
    """What a `fields.train.TrainState` adds to metrics.json: ``rollbacks`` (the divergence
    guard's) and ``warnings``, when there are any."""
    notes: dict[str, Any] = {}
    if getattr(state, "rollbacks", None):
        notes["rollbacks"] = state.rollbacks
    if getattr(state, "warnings", None):
        notes["warnings"] = state.warnings
    return notes


@contextmanager
def guarded(out: Path | None = None) -> Iterator[None]:
    """Runs a command's work: Ctrl-C (exit 130) and SIGTERM (exit 143) say where the
    checkpoint is; a run that diverged or could not write a file exits 1, bad input
    (ValueError, TypeError, OSError) 2, each with one plain line."""
    from fields.io import WriteError
    from fields.train import Diverged, RankFailed, Terminated

    try:
        yield
    except KeyboardInterrupt as e:
        ckpt = out / "checkpoint.pt" if out is not None else None
        where = (f": checkpoint written to {ckpt}" if ckpt is not None and ckpt.is_file()
                 else "")
        what = "terminated" if isinstance(e, Terminated) else "interrupted"
        console.print(f"[yellow]{what}[/yellow]{escape(where)}", highlight=False)
        raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
    except (Diverged, WriteError, RankFailed) as e:
        raise error(e, code=1) from e
    except (ValueError, TypeError, OSError) as e:
        raise error(e) from e


def terminate_on_sigterm() -> None:
    """Makes SIGTERM raise `fields.train.Terminated` (a KeyboardInterrupt) in the main thread,
    so that `kill` is handled like Ctrl-C (the training loop instead stops after the step)."""
    import signal

    from fields.train import Terminated

    def handler(signum: int, frame: Any) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, handler)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".exr")


def scene_image_size(data: str) -> tuple[int, int] | None:
    """(width, height) of the first image of a scene folder (read from its header; downscaled
    copies in ``images_<n>/`` folders are skipped), or None when there is none."""
    import re
    from pathlib import Path

    from PIL import Image

    root = Path(data)
    if root.is_file():
        root = root.parent
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.suffix.lower() == ".exr":
            continue
        rel = path.relative_to(root).parts[:-1]
        if any(re.fullmatch(r"images_\d+", part) or part in ("masks", "depths", "renders")
               for part in rel):
            continue
        try:
            with Image.open(path) as im:
                return im.size
        except OSError:
            continue
    return None


def auto_downscale(data: str | None, downscale: int | None, max_size: int) -> int:
    """`downscale` when given; else the smallest integer factor that brings the scene's
    longest image side to at most `max_size` (0: no limit), 1 for the built-in scene."""
    if max_size < 0:
        raise ValueError(f"--max-size must be >= 0, got {max_size}")
    if downscale is not None:
        return downscale
    if data is None or max_size == 0:
        return 1
    size = scene_image_size(data)
    if size is None:
        return 1
    d = -(-max(size) // max_size)
    if d > 1:
        say(f"images are {size[0]}x{size[1]}: downscaled {d}x so that the longest side is at "
            f"most {max_size} px (--max-size; --downscale 1 keeps them as they are)")
    return d


def load_posed_images(data: str | None, downscale: int = 1, scene_resolution: int = 128,
                      scene: str = "tabletop") -> Any:
    """`(SceneData, name)`: posed images from a folder in any supported format, or the
    built-in procedural scene `scene` (rendered once with a progress bar, then cached)."""
    from rich.progress import Progress

    from fields.data import load_scene
    from fields.scenes.tabletop import SceneSpec, ensure_scene

    if data is None:
        spec = SceneSpec(name=scene, resolution=scene_resolution)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("rendering the built-in scene (once, then cached)", total=1)
            folder = ensure_scene(
                spec, progress=lambda i, n: progress.update(task, completed=i, total=n)
            )
        say(f"built-in scene {spec.name!r} ({scene_resolution}px): {folder}")
        return load_scene(folder), spec.name
    scene = load_scene(data, downscale=downscale)
    return scene, scene.name


def check_device(device: str) -> torch.device:
    """The torch device a --device value names; ValueError saying what is wrong when torch
    cannot use it here."""
    import re

    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ValueError(f"--device: expected cpu, cuda or cuda:N, got {device!r}")
    device = distributed.device_for(device)  # under torchrun, cuda is this rank's GPU
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = (f"torch {torch.__version__} is a CPU build" if torch.version.cuda is None
                     else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")
            raise ValueError(f"--device {device}: {build}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) "
                             "are visible")
    return dev


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


JobsOpt = Annotated[int, typer.Option(
    "--jobs", help="with a folder of items: jobs at once in the local pool (0: one per core)")]
RayOpt = Annotated[str | None, typer.Option(
    "--ray", help="with a folder of items: run the jobs on Ray; --ray alone starts a local "
                  "Ray, --ray ADDRESS joins a cluster (pip install 'fields[cluster]')")]


def fit_many(ctx: typer.Context, command: list[str], input_flag: str | None, files: list[Path],
             output: str | None, name: str, jobs: int, ray: str | None, metric_keys: list[str],
             drop: list[str]) -> None:
    """A batch of fits (`fields.batch`): ``fields <command> <input_flag> FILE`` for each file
    (FILE alone when `input_flag` is None),
    with the options given on the command line of `ctx` (less `drop`), into ``--output`` (default
    ``outputs/<name>/batch``); manifest.jsonl and a summary table. Exit 1 when an item
    failed."""
    from fields.batch import Job, forwarded_args, run_batch, unique_names

    if jobs < 0:
        raise ValueError(f"--jobs must be >= 0, got {jobs}")
    if ray is not None:
        from fields.batch import ray_module

        try:
            ray_module()
        except RuntimeError as e:
            raise ValueError(str(e)) from None
    folder = Path(output) if output else Path("outputs") / name / "batch"
    extra = forwarded_args(ctx, [*drop, "output", "jobs", "ray", "threads", "overwrite"])
    batch = [Job(n, [*command, *([input_flag] if input_flag else []), str(f), *extra])
             for n, f in zip(unique_names(files), files, strict=True)]
    where = "the local pool" if ray is None else (
        "a local Ray" if ray == "local" else f"the Ray cluster at {ray}")
    say(f"{len(batch)} item(s) from {files[0].parent} on {where}; output {folder} "
        f"(manifest.jsonl)")
    report_batch(run_batch(batch, folder, workers=jobs, ray=ray, console=console), folder,
                 metric_keys)


def report_batch(results: list[Any], folder: Path, metric_keys: list[str]) -> None:
    """The summary table and line of a batch's `fields.batch.Result`s; exit 1 when an item
    failed."""
    from fields.batch import summary

    console.print(summary(results, metric_keys))
    failed = [r for r in results if r.status != "done"]
    skipped = sum(r.error == "skipped" for r in results)
    say(f"{len(results) - len(failed) - skipped} done, {skipped} skipped (done before), "
        f"{len(failed)} failed; manifest {folder / 'manifest.jsonl'}")
    if failed:
        raise typer.Exit(1)
