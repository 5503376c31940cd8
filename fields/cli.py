"""The `fields` command line."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.table import Table

from fields import __version__, _ext

app = typer.Typer(help="fields: a neural-fields engine.", no_args_is_help=True)
bench_app = typer.Typer(help="Side-by-side performance measurements.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
fit_app = typer.Typer(help="Fit a field to data.", no_args_is_help=True)
app.add_typer(fit_app, name="fit")
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


def _device_name(device: str) -> str:
    """'cpu', or the GPU's name (the figures are about that device)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device}: {torch.cuda.get_device_name(torch.device(device))}"
    return device


def _report(
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
            f"{row.speedup:.2f}x",
        ]

    _report(
        f"fields bench mlp ({_device_name(device)}, {torch.get_num_threads()} threads)",
        ["backend", "width", "depth", "batch", "mode", "ms", "samples/s", "GFLOP/s",
         "vs torch"],
        cells,
        lambda on_row: bench_mlp(
            widths, depth, batches, modes, device=device, min_time=min_time, on_row=on_row
        ),
        as_json,
    )


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
        f"features, 2^{log2_hashmap_size} entries, {interpolation}, {_device_name(device)}, "
        f"{torch.get_num_threads()} threads)"
    )
    try:
        _report(
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
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e


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
        _report(
            f"fields bench march ({resolution}^3 grid, {torch.get_num_threads()} threads)",
            ["backend", "rays", "occupied", "samples", "ms", "rays/s", "vs torch"],
            cells,
            lambda on_row: bench_march(rays, resolution, occupancy, render_steps,
                                       min_time=min_time, on_row=on_row),
            as_json,
        )
    except ValueError as e:
        raise _error(e) from e


@bench_app.command("flow")
def bench_flow_cmd(
    times: Annotated[
        list[int], typer.Option("--time", help="built-in pairs: frames t, t+1 (repeatable)")
    ] = [0, 6, 12],  # noqa: B006
    seed: Annotated[int, typer.Option(help="scene and (first) network seed")] = 0,
    methods: Annotated[
        list[str], typer.Option("--method", help="methods to run (repeatable)")
    ] = ["nsfp", "dt"],  # noqa: B006
    seeds: Annotated[
        int, typer.Option(min=1, help="network initialisations per pair and method")
    ] = 1,
    threads: Annotated[int, typer.Option(help="torch threads (0: leave as is)")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Scene flow: the distance-transform method against NSFP's Chamfer loss on the built-in
    lidar pairs, errors and time from one run, with the speed-up and EPE ratio."""
    from fields.bench import FlowBenchRow, bench_flow
    from fields.flow import METHODS

    if threads > 0:
        torch.set_num_threads(threads)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise typer.BadParameter(f"unknown {bad}; expected some of {METHODS}",
                                 param_hint="--method")

    def ratio(v: float | None) -> str:
        return "" if v is None else f"{v:.2f}x"

    def cells(row: FlowBenchRow) -> list[str]:
        return [row.pair, row.method, f"{row.epe3d:.4f}", f"{row.acc_strict:.3f}",
                f"{row.acc_relax:.3f}", f"{row.outliers:.3f}", f"{row.angle_error:.3f}",
                str(row.iters), f"{row.seconds:.1f}", ratio(row.speedup), ratio(row.epe_ratio)]

    baseline = "nsfp" if "nsfp" in methods else methods[0]
    try:
        _report(
            f"fields bench flow (built-in lidar pairs, {torch.get_num_threads()} threads; "
            f"ratios against {baseline})",
            ["pair", "method", "EPE3D", "Acc-strict", "Acc-relax", "outliers", "angle",
             "iters", "seconds", "speed-up", "EPE ratio"],
            cells,
            lambda on_row: bench_flow(times, seed, methods, baseline, on_row=on_row,
                                      seeds=seeds),
            as_json,
        )
    except ValueError as e:
        raise _error(e) from e


def _error(e: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {e}")
    return typer.Exit(2)


export_app = typer.Typer(help="Export a fitted field (meshes).", no_args_is_help=True)
app.add_typer(export_app, name="export")


def _load_nerf_data(data: str | None, downscale: int, scene_resolution: int):
    """The data set to fit: a folder in any supported format, or the built-in scene."""
    from rich.progress import Progress

    from fields.data import load_scene
    from fields.data.procedural import SceneSpec, ensure_scene

    if data is None:
        spec = SceneSpec(resolution=scene_resolution)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("rendering the built-in scene (once, then cached)", total=1)
            folder = ensure_scene(
                spec, progress=lambda i, n: progress.update(task, completed=i, total=n)
            )
        console.print(f"built-in scene {spec.name!r} ({scene_resolution}px): {folder}")
        return load_scene(folder), spec.name
    scene = load_scene(data, downscale=downscale)
    return scene, scene.name


@fit_app.command("nerf")
def fit_nerf_cmd(
    data: Annotated[
        str | None,
        typer.Option(help="scene folder: Blender, instant-ngp, LLFF or COLMAP text "
                     "(default: the built-in procedural scene)"),
    ] = None,
    output: Annotated[
        str | None, typer.Option(help="output folder (default outputs/<scene>/nerf/<time>)")
    ] = None,
    model: Annotated[str, typer.Option(help="ngp (hash grid) or vanilla (frequency)")] = "ngp",
    steps: Annotated[int, typer.Option(help="step budget")] = 20_000,
    max_seconds: Annotated[float, typer.Option(help="training-time budget in seconds")] = 300.0,
    eval_every: Annotated[float, typer.Option(help="seconds between held-out evaluations")] = 60.0,
    resume: Annotated[str | None, typer.Option(help="checkpoint to continue from")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    downscale: Annotated[int, typer.Option(help="downscale images by this factor")] = 1,
    scene_resolution: Annotated[int, typer.Option(help="built-in scene's image size")] = 128,
    config: Annotated[
        str | None, typer.Option(help="JSON overrides of NerfConfig fields, e.g. '{\"lr\": 0.005}'")
    ] = None,
    mesh: Annotated[int, typer.Option(help="also export mesh.ply at this resolution (0: no)")] = 0,
    video_frames: Annotated[int, typer.Option(help="frames of the orbit video (0: none)")] = 48,
    threads: Annotated[int, typer.Option(help="torch threads (0: leave as is)")] = 0,
    viewer: Annotated[bool, typer.Option(help="watch it train in the web viewer")] = False,
    viewer_port: Annotated[int, typer.Option(help="the viewer's port")] = 7007,
) -> None:
    """Fit a radiance field (instant-ngp style) to posed images; writes config.json,
    checkpoint.pt, metrics.json, renders/ and orbit.mp4 to the output folder. With --viewer,
    shows the field live at http://127.0.0.1:7007 (training pauses while the camera moves)
    and keeps serving it after training until Ctrl-C."""
    import time
    from pathlib import Path

    from fields.io import write_text_atomic
    from fields.nerf import MODELS, NerfConfig, NerfTask
    from fields.train import TrainConfig, seed_everything

    if threads > 0:
        torch.set_num_threads(threads)
    if model not in MODELS:
        raise typer.BadParameter(f"expected one of {sorted(MODELS)}", param_hint="--model")
    if steps < 1 or not max_seconds > 0:
        raise _error(ValueError("--steps must be >= 1 and --max-seconds > 0"))
    try:
        overrides = json.loads(config) if config else {}
        if not isinstance(overrides, dict):
            raise ValueError(f"--config must be a JSON object of NerfConfig fields, got {config}")
        scene, name = _load_nerf_data(data, downscale, scene_resolution)
        cfg = NerfConfig.from_dict({**MODELS[model]().to_dict(), **overrides})
        out = Path(output or f"outputs/{name}/nerf/{time.strftime('%Y-%m-%d_%H%M%S')}")
        train_cfg = TrainConfig(steps=steps, max_seconds=max_seconds, eval_every=eval_every,
                                seed=seed)
        seed_everything(seed)
        task = NerfTask(scene, cfg, seed=seed)
        run_info = {"scene": name, "data": data, "model": model, "seed": seed,
                    "train": train_cfg.__dict__, "nerf": task.config.to_dict()}
        write_text_atomic(out / "config.json", json.dumps(run_info, indent=2) + "\n")
    except (ValueError, TypeError, OSError) as e:  # OSError: FileNotFoundError, permissions
        raise _error(e) from e
    split = scene.eval_split()
    console.print(
        f"fitting {name}: {len(scene.train)} training views {scene.train.cameras.width}x"
        f"{scene.train.cameras.height}, {len(split)} held-out; model {model}; budget "
        f"{steps} steps / {max_seconds:g} s; output {out}"
    )

    def on_eval(state, rec) -> None:
        console.log(f"step {rec['step']}, {rec['seconds']:.0f} s: held-out PSNR "
                    f"{rec['psnr']:.2f} dB")

    live, on_step, trained = None, None, task
    if viewer:
        from fields.cli_view import LockedTask
        from fields.nerf import scene_info
        from fields.viewer import NerfView, Viewer

        view = NerfView(task.model, task.grid, task.settings, scene.background,
                        scene_info(scene, task.config), name)
        try:
            live = Viewer(view, port=viewer_port, source=str(out / "checkpoint.pt"))
        except (OSError, ValueError) as e:
            raise _error(e) from e
        live.enable_training()
        console.print(f"viewer at [bold]{live.url}[/bold]", highlight=False)
        trained = LockedTask(task, live.lock)

        def on_step(state) -> None:
            live.training_step(state.step, state.seconds, state.last)

    try:
        _fit_nerf_run(task, trained, train_cfg, out, resume, on_eval, on_step, name, scene,
                      video_frames, mesh, live)
    finally:
        if live is not None:
            live.close()


def _fit_nerf_run(task, trained, train_cfg, out, resume, on_eval, on_step, name, scene,
                  video_frames, mesh, live) -> None:
    """The training and outputs of `fields fit nerf` (the viewer, if any, is closed by the
    caller)."""
    import time

    from fields.nerf import write_outputs
    from fields.train import train

    split = scene.eval_split()
    wall = time.perf_counter()
    try:
        state = train(trained, train_cfg, checkpoint=out / "checkpoint.pt", resume=resume,
                      checkpoint_extra=task.checkpoint_extra(), on_eval=on_eval,
                      on_step=on_step)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/yellow]: checkpoint written to {out}/checkpoint.pt")
        raise typer.Exit(130) from None
    except (ValueError, OSError) as e:
        raise _error(e) from e
    console.print("evaluating on every held-out view...")
    task.module.eval()
    with torch.no_grad():
        final = task.evaluate(final=True)
    metrics = {
        "scene": name,
        "psnr": final["psnr"],
        "ssim": final["ssim"],
        "psnr_per_view": final["psnr_per_view"],
        "steps": state.step,
        "seconds": state.seconds,
        "wall_seconds": time.perf_counter() - wall,
        "rays_per_s": task.rays_trained / max(state.seconds, 1e-9),
        "samples_per_s": task.samples_trained / max(state.seconds, 1e-9),
        "occupancy": float(task.grid.occupancy_fraction),
        "threads": torch.get_num_threads(),
        "history": state.history,
    }
    write_outputs(task, out, metrics, video_frames=video_frames, mesh_resolution=mesh or None)
    console.print(
        f"PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f} over {len(split)} held-out "
        f"views after {state.step} steps, {state.seconds:.0f} s of training "
        f"({metrics['rays_per_s'] / 1e3:.1f}k rays/s). Wrote {out}/"
    )
    if live is not None:
        try:
            live.training_done(f"done: {state.step} steps, held-out PSNR "
                               f"{metrics['psnr']:.2f} dB")
            console.print(f"viewer still at [bold]{live.url}[/bold] (Ctrl-C to stop)",
                          highlight=False)
            live.wait()
        except KeyboardInterrupt:
            pass


def _flow_progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _read_flow_gt(path: str, n: int):
    import numpy as np

    from fields.data.pointclouds import read_points

    if path.lower().endswith(".npy"):
        try:
            gt = np.load(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a readable .npy file ({e})") from e
    else:
        gt = read_points(path)
    if gt.ndim != 2 or gt.shape != (n, 3):
        raise ValueError(f"{path}: the ground-truth flow must be an ({n}, 3) array, one row per "
                         f"source point, got shape {gt.shape}")
    if not np.isfinite(gt).all():
        raise ValueError(f"{path}: the ground-truth flow has non-finite values")
    return torch.from_numpy(gt.astype(np.float32))


@fit_app.command("flow")
def fit_flow_cmd(
    source: Annotated[
        str | None, typer.Argument(help="source cloud (.ply .npy .pcd .bin .txt); default: "
                                        "the built-in synthetic lidar pair")
    ] = None,
    target: Annotated[str | None, typer.Argument(help="target cloud")] = None,
    gt: Annotated[
        str | None, typer.Option(help="ground-truth flow of the source points (N x 3 .npy)")
    ] = None,
    method: Annotated[
        str, typer.Option(help="dt (distance transform, fast) or nsfp (Chamfer, the paper)")
    ] = "dt",
    sequence: Annotated[
        str | None, typer.Option(help="a folder of frames (sorted by name), or 'builtin' for "
                                      "the synthetic sequence: fit every consecutive pair")
    ] = None,
    frames: Annotated[int, typer.Option(help="frames of the built-in sequence")] = 5,
    trajectories: Annotated[
        bool, typer.Option(help="with --sequence: integrate the flows into trajectories of the "
                                "first frame's points")
    ] = False,
    output: Annotated[
        str | None, typer.Option(help="output folder (default outputs/<name>/flow/<time>)")
    ] = None,
    config: Annotated[
        str | None, typer.Option(help="JSON overrides of FlowConfig, e.g. '{\"lr\": 0.004}'")
    ] = None,
    max_iters: Annotated[int | None, typer.Option(help="iteration budget per pair")] = None,
    seed: Annotated[int, typer.Option(help="seed of the network and the built-in data")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads (0: leave as is)")] = 0,
) -> None:
    """Fit a neural scene-flow prior between two point clouds (or along a sequence); writes
    flow.npy, metrics.json, flow.png and checkpoint.pt to the output folder."""
    import time
    from pathlib import Path

    from fields.flow import METHODS, FlowConfig

    if threads > 0:
        torch.set_num_threads(threads)
    if method not in METHODS:
        raise typer.BadParameter(f"expected one of {', '.join(METHODS)}", param_hint="--method")
    if (source is None) != (target is None):
        raise _error(ValueError("give both SOURCE and TARGET clouds, or neither (the built-in "
                                "pair)"))
    if sequence is not None and source is not None:
        raise _error(ValueError("--sequence fits the frames of a folder: give it without "
                                "SOURCE and TARGET"))
    if trajectories and sequence is None:
        raise _error(ValueError("--trajectories needs --sequence"))
    try:
        overrides = json.loads(config) if config else {}
        if not isinstance(overrides, dict):
            raise ValueError(f"--config must be a JSON object of FlowConfig fields, got {config}")
        if max_iters is not None:
            overrides["max_iters"] = max_iters
        overrides.setdefault("seed", seed)
        cfg = FlowConfig.for_method(method, **overrides)
    except (ValueError, TypeError) as e:
        raise _error(ValueError(f"--config: {e}")) from e
    stamp = time.strftime("%Y-%m-%d_%H%M%S")
    if sequence is not None:
        _fit_flow_sequence(sequence, frames, trajectories, cfg, output, stamp, seed)
        return

    from fields.data.pointclouds import read_points
    from fields.flow import fit_flow, write_flow_outputs

    try:
        if source is None:
            from fields.data.flow_scenes import make_flow_pair

            with console.status("making the built-in lidar pair..."):
                pair = make_flow_pair(seed=seed)
            name, src_np, tgt_np = pair.name, pair.source, pair.target
            gt_flow = torch.from_numpy(pair.flow)
            if gt is not None:
                gt_flow = _read_flow_gt(gt, len(src_np))
        else:
            src_np, tgt_np = read_points(source), read_points(target)
            name = Path(source).stem
            gt_flow = _read_flow_gt(gt, len(src_np)) if gt is not None else None
    except (ValueError, OSError) as e:
        raise _error(e) from e
    src, tgt = torch.from_numpy(src_np), torch.from_numpy(tgt_np)
    out = Path(output or f"outputs/{name}/flow/{stamp}")
    console.print(f"scene flow {name}: {len(src)} -> {len(tgt)} points, method {method}, "
                  f"network {cfg.depth}x{cfg.width}, at most {cfg.max_iters} iterations; "
                  f"output {out}")
    with _flow_progress() as progress:
        task = progress.add_task("fitting", total=cfg.max_iters, status="")

        def on_iter(rec: dict[str, float]) -> None:
            progress.update(task, completed=rec["iter"],
                            status=f"loss {rec['loss']:.4g} (best {rec['best_loss']:.4g})")

        try:
            fit = fit_flow(src, tgt, cfg, on_iter=on_iter)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/yellow]: nothing written")
            raise typer.Exit(130) from None
        except (ValueError, RuntimeError) as e:
            raise _error(e) from e
        progress.update(task, total=fit.iters, completed=fit.iters)
    info = {"name": name, "source": source or "builtin", "target": target or "builtin",
            "gt": gt or ("builtin" if source is None else None)}
    try:
        metrics = write_flow_outputs(out, fit, src, tgt, gt_flow, info)
    except OSError as e:
        raise _error(e) from e
    quality = (
        f"EPE3D {metrics['epe3d']:.4f} m, Acc-strict {metrics['acc_strict']:.3f}, Acc-relax "
        f"{metrics['acc_relax']:.3f}, outliers {metrics['outliers']:.3f}, angle "
        f"{metrics['angle_error']:.3f} rad; " if gt_flow is not None else ""
    )
    console.print(f"{quality}{fit.iters} iterations (best {fit.best_iter}) in "
                  f"{fit.seconds:.1f} s. Wrote {out}/flow.npy, metrics.json, flow.png, "
                  "checkpoint.pt")


def _fit_flow_sequence(sequence: str, n_frames: int, trajectories: bool, cfg: Any,
                       output: str | None, stamp: str, seed: int) -> None:
    from pathlib import Path

    import numpy as np

    from fields.data.pointclouds import write_points
    from fields.flow import accumulate, fit_sequence, integrate, read_sequence
    from fields.io import save_npy_atomic, write_text_atomic
    from fields.metrics import scene_flow_metrics
    from fields.plots import write_flow_figure, write_trajectory_figure

    gt_flows = gt_traj = None
    try:
        if sequence == "builtin":
            from fields.data.flow_scenes import make_flow_sequence

            with console.status("making the built-in lidar sequence..."):
                seq = make_flow_sequence(n_frames, seed=seed)
            clouds, names, name = seq.frames, [f"frame {k}" for k in range(n_frames)], seq.name
            gt_flows, gt_traj = seq.flows, seq.trajectories
        else:
            clouds, names = read_sequence(sequence)
            name = Path(sequence).name
    except (ValueError, OSError) as e:
        raise _error(e) from e
    out = Path(output or f"outputs/{name}/flow/{stamp}")
    n_pairs = len(clouds) - 1
    console.print(f"scene flow along {name}: {len(clouds)} frames, method {cfg.method}; "
                  f"output {out}")
    pairs: list[dict[str, Any]] = []
    with _flow_progress() as progress:
        task = progress.add_task("pairs", total=n_pairs, status="")

        def on_iter(k: int, rec: dict[str, float]) -> None:
            progress.update(task, status=f"pair {k}: iteration {rec['iter']}, loss "
                                         f"{rec['loss']:.4g}")

        def on_pair(k: int, fit: Any) -> None:
            rec: dict[str, Any] = {"pair": k, "source": names[k], "target": names[k + 1],
                                   "iters": fit.iters, "seconds": fit.seconds}
            flow = fit.flow.numpy()
            save_npy_atomic(out / "flows" / f"flow_{k:03d}.npy", flow)
            gt_k = None if gt_flows is None else gt_flows[k]
            if gt_k is not None:
                rec.update(scene_flow_metrics(fit.flow, torch.from_numpy(gt_k)))
            write_flow_figure(out / "flows" / f"flow_{k:03d}.png", clouds[k], clouds[k + 1],
                              flow, gt_k, title=f"pair {k}")
            pairs.append(rec)
            progress.update(task, completed=k + 1)

        try:
            fits = fit_sequence(clouds, cfg, on_pair=on_pair, on_iter=on_iter)
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted[/yellow]: finished pairs are in {out}/flows")
            raise typer.Exit(130) from None
        except (ValueError, RuntimeError, OSError) as e:
            raise _error(e) from e
    metrics: dict[str, Any] = {"name": name, "frames": len(clouds), "method": cfg.method,
                               "config": cfg.to_dict(), "pairs": pairs,
                               "seconds": sum(p["seconds"] for p in pairs)}
    fields_ = [f.forward_field for f in fits]
    dense, frame_idx = accumulate(clouds, fields_)
    write_points(out / "accumulated.ply", dense.numpy(),
                 {"frame": frame_idx.numpy().astype(np.int32)})
    if trajectories:
        traj = integrate(fields_, torch.from_numpy(np.asarray(clouds[0]))).numpy()
        save_npy_atomic(out / "trajectories.npy", traj.astype(np.float32))
        write_trajectory_figure(out / "trajectories.png", traj)
        if gt_traj is not None:
            err = np.linalg.norm(traj - gt_traj, axis=-1).mean(axis=1)
            metrics["trajectory_epe_per_frame"] = [float(e) for e in err]
            metrics["trajectory_epe_final"] = float(err[-1])
    if gt_flows is not None:
        for key in ("epe3d", "acc_strict", "acc_relax", "outliers", "angle_error"):
            metrics[key] = float(np.mean([p[key] for p in pairs]))
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    quality = (f"mean EPE3D {metrics['epe3d']:.4f} m, Acc-strict {metrics['acc_strict']:.3f}; "
               if gt_flows is not None else "")
    drift = (f"trajectory error after {len(clouds) - 1} steps "
             f"{metrics['trajectory_epe_final']:.4f} m; "
             if "trajectory_epe_final" in metrics else "")
    console.print(f"{quality}{drift}{n_pairs} pairs in {metrics['seconds']:.1f} s. Wrote {out}/"
                  "flows/, accumulated.ply, metrics.json"
                  + (", trajectories.npy, trajectories.png" if trajectories else ""))


@app.command("render")
def render_cmd(
    checkpoint: Annotated[str, typer.Argument(help="a checkpoint.pt written by fields fit")],
    path: Annotated[str, typer.Option(help="camera path: orbit or spiral")] = "spiral",
    out: Annotated[str | None, typer.Option(
        help="output file: a video (.mp4 or .gif) for radiance fields; for INRs an image "
             "(.png), audio (.wav) or volume (.npy)")] = None,
    frames: Annotated[int, typer.Option(help="number of frames")] = 60,
    fps: Annotated[int, typer.Option(help="frames per second")] = 24,
    scale: Annotated[float, typer.Option(help="resolution relative to the data's")] = 1.0,
) -> None:
    """Render a fitted field: a radiance field as a video along a camera path; an INR (image,
    audio, volume, video) sampled at `--scale` times its resolution (it is continuous)."""
    from pathlib import Path

    from rich.progress import Progress

    from fields.io import write_video
    from fields.nerf import LoadedNerf, render_path
    from fields.train import read_checkpoint

    try:
        kind = read_checkpoint(checkpoint).get("kind")
    except (ValueError, OSError) as e:
        raise _error(e) from e
    if kind == "inr":
        _render_inr(checkpoint, out, scale)
        return
    if kind == "sdf":
        from fields.cli_sdf import render_sdf_video

        if frames < 1 or fps < 1 or not scale > 0:
            raise _error(ValueError("--frames and --fps must be >= 1 and --scale > 0"))
        try:
            render_sdf_video(checkpoint, out, frames, fps, max(16, round(256 * scale)), console,
                             path)
        except (ValueError, OSError) as e:
            raise _error(e) from e
        return
    out = out or "video.mp4"
    if frames < 1 or fps < 1 or not scale > 0:
        raise _error(ValueError("--frames and --fps must be >= 1 and --scale > 0"))
    if Path(out).suffix.lower() not in (".mp4", ".gif"):
        raise _error(ValueError(f"{out}: unknown video extension; use .mp4 or .gif"))
    try:
        nerf = LoadedNerf(checkpoint)
        with Progress(console=console) as progress:
            task = progress.add_task("rendering", total=frames)
            video = render_path(
                nerf.model, nerf.grid, nerf.settings, nerf.info, path, frames, scale=scale,
                progress=lambda i, n: progress.update(task, completed=i),
            )
        write_video(out, video, fps=fps)
    except (ValueError, OSError) as e:
        raise _error(e) from e
    console.print(f"wrote {out} ({frames} frames, {video[0].shape[1]}x{video[0].shape[0]})")


def _render_inr(checkpoint: str, out: str | None, scale: float) -> None:
    from pathlib import Path

    from fields.data.images import write_image
    from fields.inr import load_inr, render_signal
    from fields.io import save_npy_atomic

    try:
        model, signal = load_inr(checkpoint)
        kind, shape = signal.get("kind"), tuple(int(n) for n in signal["shape"])
        values = render_signal(model, shape, scale).clamp(0, 1)
        if kind == "image":
            target = Path(out or "render.png")
            write_image(target, values)
        elif kind == "video":
            target = Path(out or "render.mp4")
            from fields.io import write_video

            write_video(target, list(values), fps=24)
        elif kind == "audio":
            from fields.data.signals import write_audio

            target = Path(out or "render.wav")
            rate = round(int(signal.get("rate", 16000)) * scale)
            write_audio(target, values * 2.0 - 1.0, rate)
        elif kind == "volume":
            lo, hi = signal.get("range", [0.0, 1.0])
            target = Path(out or "render.npy")
            save_npy_atomic(target, (values * (hi - lo) + lo).numpy().astype("float32"))
        else:
            raise ValueError(f"{checkpoint}: field 'signal' has unknown kind {kind!r}")
    except (ValueError, OSError) as e:
        raise _error(e) from e
    console.print(f"wrote {target} ({' x '.join(map(str, values.shape))})")


@export_app.command("mesh")
def export_mesh_cmd(
    checkpoint: Annotated[str, typer.Argument(help="a checkpoint.pt written by fields fit")],
    resolution: Annotated[int, typer.Option(help="grid vertices per axis")] = 256,
    threshold: Annotated[float, typer.Option(help="density iso-level")] = 10.0,
    out: Annotated[
        str | None, typer.Option(help="mesh file (default: mesh.ply next to the checkpoint)")
    ] = None,
) -> None:
    """Extract a mesh by marching cubes: a radiance field's density iso-surface (coloured,
    PLY), or a signed distance field's zero level set (in chunks: any resolution; .ply, .obj,
    .glb, .stl or .off by the suffix of --out)."""
    from pathlib import Path

    from fields.mesh import write_ply
    from fields.nerf import LoadedNerf, extract_nerf_mesh, views_from_info
    from fields.train import read_checkpoint

    if resolution < 2:
        raise _error(ValueError("--resolution must be >= 2"))
    try:
        if read_checkpoint(checkpoint).get("kind") == "sdf":
            from fields.cli_sdf import export_sdf_mesh

            export_sdf_mesh(checkpoint, resolution, out, console)
            return
        nerf = LoadedNerf(checkpoint)
        with console.status(f"sampling the density on a {resolution}^3 grid..."):
            verts, faces, colours = extract_nerf_mesh(
                nerf.model, nerf.model.aabb, resolution, threshold, grid=nerf.grid,
                settings=nerf.settings, views=views_from_info(nerf.info),
            )
        target = Path(out) if out else Path(checkpoint).with_name("mesh.ply")
        write_ply(target, verts, faces, colours)
    except (ValueError, OSError) as e:
        raise _error(e) from e
    console.print(f"wrote {target}: {len(verts)} vertices, {len(faces)} faces")


def _register_more() -> None:
    from fields import cli_inr, cli_pinn, cli_sdf, cli_view

    cli_inr.register(fit_app, bench_app, console, _error)
    cli_sdf.register(fit_app, console, _error)
    cli_view.register(app, bench_app, console, _error)
    cli_pinn.register(app, console, _error)


_register_more()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
