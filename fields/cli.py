"""The `fields` command line."""

from __future__ import annotations

import platform
from typing import Annotated, Any

import torch
import typer

from fields import __version__, _ext, distributed
from fields.command import (
    ThreadsOpt,
    alias,
    console,
    device_name,
    error,
    guarded,
    hidden,
    report,
    say,
    set_threads,
    write_json,
)

app = typer.Typer(help="fields: a neural-fields engine.", no_args_is_help=True)
bench_app = typer.Typer(help="Side-by-side performance measurements.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
fit_app = typer.Typer(help="Fit a field to data.", no_args_is_help=True)
app.add_typer(fit_app, name="fit")


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
    depth: Annotated[list[int], typer.Option(
        help="hidden layers (repeat for several)")] = [4],  # noqa: B006
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
    """Fused MLP backends against eager torch (n_in 32, n_out 16, ReLU, no bias): the CPU
    kernels on the CPU; on a GPU (--device cuda, fp16) the tensor-core kernels and, when
    importable, tiny-cuda-nn."""
    from fields.bench import BenchRow, bench_mlp

    for m in modes:
        if m not in ("forward", "train"):
            raise typer.BadParameter(
                f"mode {m!r}: expected 'forward' or 'train'", param_hint="--modes"
            )
    if threads > 0:
        torch.set_num_threads(threads)

    def cells(row: BenchRow) -> list[str]:
        return [
            row.backend,
            str(row.width),
            str(row.depth),
            str(row.batch),
            row.mode,
            f"{row.ms:.2f}",
            f"{row.samples_per_s:.3g}",
            f"{row.gflops:.1f}",
            "" if row.peak_fraction is None else f"{100 * row.peak_fraction:.0f}%",
            f"{row.speedup:.2f}x",
        ]

    peak = ""
    if device == "cpu" and _ext.available():
        peak = f", peak: {_ext.cpu_isa()} FMA loop as in `fields bench peak`"
    report(
        f"fields bench mlp ({device_name(device)}, {torch.get_num_threads()} threads{peak})",
        ["backend", "width", "depth", "batch", "mode", "ms", "samples/s", "GFLOP/s",
         "of peak", "vs torch"],
        cells,
        lambda on_row: bench_mlp(
            widths, depth, batches, modes, device=device, min_time=min_time, on_row=on_row
        ),
        as_json,
    )


@bench_app.command("peak")
def bench_peak_cmd(
    isas: Annotated[list[str] | None, typer.Option(
        "--isa", help="instruction sets: avx512, avx2, generic (default: all this CPU runs)"),
    ] = None,
    threads: Annotated[list[int] | None, typer.Option(
        help="thread counts (default: 1 and torch's thread count)")] = None,
    seconds: Annotated[float, typer.Option(help="seconds per run (best of --repeats)")] = 0.5,
    repeats: Annotated[int, typer.Option(help="runs per figure")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """The machine's fp32 FMA peak per instruction set: 12 independent FMA chains on the
    widest vectors, no memory traffic. `fields bench mlp` gives its figures as a fraction of
    this peak (the kernels' instruction set, torch's thread count)."""
    from fields.bench import PeakRow, bench_peak

    def cells(row: PeakRow) -> list[str]:
        return [row.isa, str(row.threads), f"{row.gflops:.1f}", f"{row.gflops_per_thread:.1f}"]

    try:
        report(
            f"fields bench peak (fp32 FMA; the MLP kernels use {_ext.cpu_isa() or 'none'})",
            ["isa", "threads", "GFLOP/s", "per thread"],
            cells,
            lambda on_row: bench_peak(isas, threads, seconds, repeats, on_row=on_row),
            as_json,
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e


@bench_app.command("encoding")
def bench_encoding_cmd(
    batches: Annotated[list[int], typer.Option(help="batch sizes")] = [  # noqa: B006
        2**16,
        2**18,
    ],
    dims: Annotated[int, typer.Option(help="input dimensions (1-4)")] = 3,
    levels: Annotated[int, typer.Option(help="n_levels")] = 16,
    features: Annotated[int, typer.Option(help="n_features_per_level (1, 2, 4, 8)")] = 2,
    log2_hashmap_size: Annotated[int, typer.Option(help="log2 of the entries per level")] = 19,
    base_resolution: Annotated[int, typer.Option(help="coarsest resolution")] = 16,
    per_level_scale: Annotated[float, typer.Option(help="resolution growth per level")] = 2.0,
    interpolation: Annotated[str, typer.Option(help="Nearest, Linear or Smoothstep")] = "Linear",
    grid_type: Annotated[str, typer.Option(help="Hash, Dense or Tiled")] = "Hash",
    modes: Annotated[list[str], typer.Option(help="forward and/or forward+backward")] = [  # noqa: B006
        "forward",
        "forward+backward",
    ],
    input_grad: Annotated[bool, typer.Option(help="also compute the input gradient")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    threads: Annotated[int, typer.Option(help="torch threads (0: leave as is)")] = 0,
    min_time: Annotated[float, typer.Option(help="seconds of timed calls per figure")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Grid encoding backends against the torch reference (default: the 3-D hash grid); on a
    GPU (--device cuda) the CUDA kernels."""
    from fields.bench import ENCODING_MODES, EncodingBenchRow, bench_encoding

    for m in modes:
        if m not in ENCODING_MODES:
            raise typer.BadParameter(
                f"mode {m!r}: expected one of {', '.join(ENCODING_MODES)}", param_hint="--modes"
            )
    if threads > 0:
        torch.set_num_threads(threads)

    def cells(row: EncodingBenchRow) -> list[str]:
        return [
            row.backend,
            str(row.batch),
            row.mode,
            f"{row.ms:.2f}",
            f"{row.samples_per_s:.3g}",
            f"{row.speedup:.2f}x",
        ]

    title = (
        f"fields bench encoding ({grid_type} grid, {dims}-D, {levels} levels x {features} "
        f"features, 2^{log2_hashmap_size} entries, {interpolation}, {device_name(device)}, "
        f"{torch.get_num_threads()} threads)"
    )
    try:
        report(
            title,
            ["backend", "batch", "mode", "ms", "samples/s", "vs torch"],
            cells,
            lambda on_row: bench_encoding(
                batches,
                n_dims=dims,
                n_levels=levels,
                n_features=features,
                log2_hashmap_size=log2_hashmap_size,
                base_resolution=base_resolution,
                per_level_scale=per_level_scale,
                interpolation=interpolation,
                grid_type=grid_type,
                modes=modes,
                input_grad=input_grad,
                min_time=min_time,
                on_row=on_row,
                device=device,
            ),
            as_json,
        )
    except ValueError as e:  # a bad grid description: say which, without a traceback
        raise error(e) from e


@bench_app.command("march")
def bench_march_cmd(
    rays: Annotated[list[int], typer.Option(help="rays per call")] = [4096, 65536],  # noqa: B006
    resolution: Annotated[int, typer.Option(help="occupancy grid cells per axis")] = 128,
    occupancy: Annotated[float, typer.Option(help="fraction of cells occupied")] = 0.15,
    render_steps: Annotated[int, typer.Option(help="steps across the box diagonal")] = 512,
    threads: Annotated[int, typer.Option(help="torch threads (0: leave as is)")] = 0,
    min_time: Annotated[float, typer.Option(help="seconds of timed calls per figure")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """The C++ occupancy-grid ray marcher against its torch reference."""
    from fields.bench import MarchBenchRow, bench_march

    if threads > 0:
        torch.set_num_threads(threads)

    def cells(row: MarchBenchRow) -> list[str]:
        return [row.backend, str(row.n_rays), f"{row.occupancy:.3f}", str(row.samples),
                f"{row.ms:.2f}", f"{row.rays_per_s:.3g}", f"{row.speedup:.2f}x"]

    try:
        report(
            f"fields bench march ({resolution}^3 grid, {torch.get_num_threads()} threads)",
            ["backend", "rays", "occupied", "samples", "ms", "rays/s", "vs torch"],
            cells,
            lambda on_row: bench_march(rays, resolution, occupancy, render_steps,
                                       min_time=min_time, on_row=on_row),
            as_json,
        )
    except ValueError as e:
        raise error(e) from e


@bench_app.command("tiny-mlp")
def bench_tiny_mlp_cmd(
    nets: Annotated[int, typer.Option(help="networks (KiloNeRF: 16^3)")] = 4096,
    width: Annotated[int, typer.Option(help="neurons per hidden layer")] = 32,
    depth: Annotated[int, typer.Option(help="hidden layers")] = 2,
    batch: Annotated[list[int], typer.Option(help="rows per call")] = [2**16, 2**18],  # noqa: B006
    n_in: Annotated[int, typer.Option(help="inputs per row")] = 63,
    no_loop: Annotated[bool, typer.Option("--no-loop", help="skip the per-network loop")] = False,
    threads: Annotated[int, typer.Option(help="torch threads (0: leave as is)")] = 0,
    min_time: Annotated[float, typer.Option(help="seconds of timed calls per figure")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Many tiny MLPs (rows grouped by network): the fused batched kernels against their
    torch reference and a loop of one fused MLP call per network."""
    from fields.bench import BatchedBenchRow, bench_batched_mlp

    if threads > 0:
        torch.set_num_threads(threads)

    def cells(row: BatchedBenchRow) -> list[str]:
        frac = f"{row.peak_fraction:.0%}" if row.peak_fraction is not None else "-"
        return [row.method, row.mode, str(row.batch), f"{row.ms:.2f}",
                f"{row.samples_per_s:.3g}", f"{row.gflops:.1f}", frac, f"{row.speedup:.2f}x"]

    try:
        report(
            f"fields bench tiny-mlp ({nets} networks, {n_in} -> {width} x {depth} -> 4, "
            f"{torch.get_num_threads()} threads)",
            ["method", "mode", "rows", "ms", "rows/s", "GFLOP/s", "of peak", "vs batched"],
            cells,
            lambda on_row: bench_batched_mlp(nets, width, depth, batch, n_in=n_in,
                                             loop=not no_loop, min_time=min_time,
                                             on_row=on_row),
            as_json,
        )
    except ValueError as e:
        raise error(e) from e


export_app = typer.Typer(help="Export a fitted field: meshes, point clouds, cameras.",
                         no_args_is_help=True)
app.add_typer(export_app, name="export")


@app.command("render")
def render_cmd(
    checkpoint: Annotated[str, typer.Argument(help="a checkpoint.pt written by fields fit")],
    output: Annotated[str | None, typer.Option(
        "--output", help="output file; its suffix picks the format: a video (.mp4, .gif) for "
                         "radiance and distance fields, an image (.png), audio (.wav), volume "
                         "(.npy) or video (.mp4) for INRs")] = None,
    path: Annotated[str, typer.Option(help="camera path: orbit or spiral")] = "spiral",
    frames: Annotated[int, typer.Option(help="number of frames")] = 60,
    fps: Annotated[int, typer.Option(help="frames per second")] = 24,
    scale: Annotated[float, typer.Option(help="resolution relative to the data's")] = 1.0,
    camera_path: Annotated[str | None, typer.Option(
        "--camera-path", help="a camera-path .json in nerfstudio's format (its size, fps and "
                              "keyframes replace --path, --frames, --fps, --scale; radiance "
                              "fields)")] = None,
    time_range: Annotated[str | None, typer.Option(
        "--time-range", help="dynamic fields: the times the video runs through, START:END in "
                             "[0, 1] (default 0:1; one number: bullet time at that instant)"
        )] = None,
    still: Annotated[bool, typer.Option(
        "--still", help="dynamic fields: keep the camera at the path's first position while "
                        "time runs")] = False,
    out: Annotated[str | None, hidden("--out")] = None,
) -> None:
    """Render a fitted field, whatever its kind: a radiance or distance field as a video along
    a camera path (or a nerfstudio camera-path file); a dynamic field as a video that runs
    through time while the camera orbits (--time-range, --still); an INR (image, audio,
    volume, video) sampled at `--scale` times its resolution (it is continuous)."""
    from fields.kinds import RenderRequest, checkpoint_kind, parse_time_range

    output = alias(output, out, "--out", "--output")
    if frames < 1 or fps < 1 or not scale > 0:
        raise error("--frames and --fps must be >= 1 and --scale > 0")
    try:
        times = parse_time_range(time_range)
    except ValueError as e:
        raise error(f"--time-range: {e}") from e
    with guarded():
        kind = checkpoint_kind(checkpoint)
        if kind.render is None:
            raise ValueError(f"{checkpoint}: a {kind.name} checkpoint has nothing to render")
        if camera_path is not None and kind.name != "nerf":
            raise ValueError(f"--camera-path: only radiance-field (nerf) checkpoints render "
                             f"camera-path files; {checkpoint} is a {kind.name} checkpoint")
        if (times is not None or still) and kind.name != "dynamic":
            raise ValueError(f"--time-range / --still: only dynamic-field checkpoints have a "
                             f"time; {checkpoint} is a {kind.name} checkpoint")
        kind.render(RenderRequest(checkpoint, output, path, frames, fps, scale, camera_path,
                                  times, still))


NormalisedOpt = Annotated[bool, typer.Option(
    "--normalised", help="keep the scene's normalised coordinates (default: the capture's own, "
                         "when the data had a capture transform)")]


def _export(request: Any) -> None:
    from fields.kinds import checkpoint_kind

    with guarded():
        kind = checkpoint_kind(request.checkpoint)
        if kind.export is None or request.what not in kind.exports:
            has = f" (it exports: {', '.join(kind.exports)})" if kind.export else ""
            raise ValueError(f"{request.checkpoint}: a {kind.name} checkpoint has no "
                             f"{request.what} to export{has}")
        kind.export(request)


@export_app.command("mesh")
def export_mesh_cmd(
    checkpoint: Annotated[str, typer.Argument(help="a checkpoint.pt written by fields fit")],
    output: Annotated[str | None, typer.Option(
        "--output", help="mesh file (default: mesh.ply next to the checkpoint); its suffix "
                         "picks the format: .ply, .obj, .glb, .stl or .off")] = None,
    resolution: Annotated[int, typer.Option(help="grid vertices per axis")] = 256,
    threshold: Annotated[float, typer.Option(help="density iso-level (radiance fields)")] = 10.0,
    normalised: NormalisedOpt = False,
    out: Annotated[str | None, hidden("--out")] = None,
) -> None:
    """Extract a mesh by marching cubes: a radiance field's density iso-surface (coloured),
    or a signed distance field's zero level set (in chunks: any resolution)."""
    from fields.kinds import ExportRequest

    output = alias(output, out, "--out", "--output")
    if resolution < 2:
        raise error("--resolution must be >= 2")
    _export(ExportRequest(checkpoint, output, resolution, threshold, "mesh", normalised))


@export_app.command("pointcloud")
def export_pointcloud_cmd(
    checkpoint: Annotated[str, typer.Argument(help="a radiance field's checkpoint.pt")],
    output: Annotated[str | None, typer.Option(
        "--output", help="point file (default: pointcloud.ply next to the checkpoint): .ply "
                         "(with colours), .npy, .pcd")] = None,
    normalised: NormalisedOpt = False,
) -> None:
    """The surface points seen by the training cameras (each view's expected depth where it is
    opaque), coloured."""
    from fields.kinds import ExportRequest

    _export(ExportRequest(checkpoint, output, what="pointcloud", normalised=normalised))


@export_app.command("cameras")
def export_cameras_cmd(
    checkpoint: Annotated[str, typer.Argument(help="a radiance field's checkpoint.pt")],
    output: Annotated[str | None, typer.Option(
        "--output", help="cameras.json (names, OpenGL camera-to-world matrices, intrinsics) "
                         "or .ply (camera centres, viewing directions as normals)")] = None,
    normalised: NormalisedOpt = False,
) -> None:
    """The training cameras of a checkpoint."""
    from fields.kinds import ExportRequest

    _export(ExportRequest(checkpoint, output, what="cameras", normalised=normalised))


@app.command("eval")
def eval_cmd(
    checkpoint: Annotated[str, typer.Argument(help="a checkpoint.pt of any kind")],
    data: Annotated[str | None, typer.Option(
        help="the ground truth to measure against (default: what the checkpoint was fitted "
             "to, from its run's config.json)")] = None,
    output: Annotated[str | None, typer.Option(
        "--output", help="JSON file for the metrics (default: eval.json next to the "
                         "checkpoint)")] = None,
    threads: ThreadsOpt = 0,
) -> None:
    """Held-out metrics of a checkpoint of any kind, written as JSON (NeRF: PSNR/SSIM on the
    test views; SDF: Chamfer, F-score, normal consistency; INR: PSNR/SSIM against the signal;
    scene flow: EPE and accuracies; PINN: relative L2 against the reference)."""
    from pathlib import Path

    from fields.kinds import checkpoint_kind

    set_threads(threads)
    with guarded():
        kind = checkpoint_kind(checkpoint)
        metrics = {"kind": kind.name, "checkpoint": checkpoint, **kind.evaluate(checkpoint, data)}
        target = Path(output) if output else Path(checkpoint).with_name("eval.json")
        write_json(target, metrics)
    shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in metrics.items()
                      if isinstance(v, (int, float, str)) and k not in ("kind", "checkpoint"))
    say(f"{kind.name}: {shown}")
    say(f"wrote {target}")


def _register_kinds() -> None:
    """Every kind adds its commands (`fit ...`, `solve`); then `fields view`, `fields process`."""
    from fields.capture import cli as cli_capture
    from fields.kinds import all_kinds
    from fields.viewer import cli as cli_view

    for kind in all_kinds():
        kind.register_cli(app, fit_app, bench_app)
    cli_view.register(app, bench_app)
    cli_capture.register(app, bench_app)


_register_kinds()


def main() -> None:
    """The `fields` script (SIGTERM is handled like Ctrl-C). Under torchrun, each rank joins
    the process group first (`fields.distributed.setup`) and only rank 0 prints."""
    from fields.command import terminate_on_sigterm

    terminate_on_sigterm()
    if distributed.launched():  # one of torchrun's ranks: join the group; rank 0 prints
        try:
            distributed.setup()
        except RuntimeError as e:
            raise SystemExit(f"error: {e}") from None
        if not distributed.is_main():
            console.quiet = True
    import sys

    from fields.batch import optional_value

    try:
        app(args=optional_value(sys.argv[1:], "--ray", "local"))  # --ray alone: a local Ray
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
