"""The `fields` command line."""

from __future__ import annotations

import json
import platform
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.table import Table

from fields import __version__, _ext

app = typer.Typer(help="fields: a neural-fields engine.", no_args_is_help=True)
bench_app = typer.Typer(help="Side-by-side performance measurements.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
console = Console()


@app.command()
def info() -> None:
    """What this installation has: versions, kernels, threads."""
    console.print(
        f"fields {__version__}, torch {torch.__version__}, Python {platform.python_version()}"
    )
    if _ext.available():
        console.print(
            f"fields._C: CPU kernels ({_ext.cpu_isa()}), CUDA kernels: "
            f"{'yes' if _ext.has_cuda_kernels() else 'no'}"
        )
    else:
        console.print(f"[red]{_ext.unavailable_reason()}[/red]")
    console.print(f"threads: {torch.get_num_threads()}, CUDA device: {torch.cuda.is_available()}")


@bench_app.command("mlp")
def bench_mlp_cmd(
    widths: Annotated[list[int], typer.Option(help="hidden widths")] = [64, 128],  # noqa: B006
    depth: Annotated[int, typer.Option(help="hidden layers")] = 4,
    batches: Annotated[list[int], typer.Option(help="batch sizes")] = [  # noqa: B006
        2**14,
        2**16,
        2**18,
        2**20,
    ],
    modes: Annotated[list[str], typer.Option(help="forward and/or train")] = [  # noqa: B006
        "forward",
        "train",
    ],
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    threads: Annotated[int, typer.Option(help="torch threads (0: leave as is)")] = 0,
    min_time: Annotated[float, typer.Option(help="seconds of timed calls per figure")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Fused MLP backends against eager torch (n_in 32, n_out 16, ReLU, no bias)."""
    from fields.bench import BenchRow, bench_mlp

    for m in modes:
        if m not in ("forward", "train"):
            raise typer.BadParameter(
                f"mode {m!r}: expected 'forward' or 'train'", param_hint="--modes"
            )
    if threads > 0:
        torch.set_num_threads(threads)
    table = Table(
        title=f"fields bench mlp (depth {depth}, {device}, {torch.get_num_threads()} threads)"
    )
    for col in ("backend", "width", "batch", "mode", "ms", "samples/s", "GFLOP/s", "vs torch"):
        table.add_column(col, justify="right")

    def on_row(row: BenchRow) -> None:
        if as_json:
            print(json.dumps(row.as_dict()), flush=True)
        else:
            table.add_row(
                row.backend,
                str(row.width),
                str(row.batch),
                row.mode,
                f"{row.ms:.2f}",
                f"{row.samples_per_s:.3g}",
                f"{row.gflops:.1f}",
                f"{row.speedup:.2f}x",
            )

    if as_json:
        bench_mlp(widths, depth, batches, modes, device=device, min_time=min_time, on_row=on_row)
    else:
        with console.status("measuring..."):
            bench_mlp(
                widths, depth, batches, modes, device=device, min_time=min_time, on_row=on_row
            )
        console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
