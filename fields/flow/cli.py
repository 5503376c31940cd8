"""`fields fit flow`, `fields bench flow` and the evaluation of a flow checkpoint
(`evaluate_flow`, for `fields eval`): scene flow between point clouds (registered by
`fields.flow.kind`)."""

from __future__ import annotations

from typing import Annotated, Any

import torch
import typer

from fields.command import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_SEED,
    CheckpointEveryOpt,
    ConfigOpt,
    MaxSecondsOpt,
    OutputOpt,
    OverwriteOpt,
    ResumeOpt,
    RunOptions,
    SeedOpt,
    StepsOpt,
    ThreadsOpt,
    alias,
    console,
    error,
    guarded,
    hidden,
    parse_config,
    report,
    run_notes,
    say,
    set_threads,
    write_metrics,
    write_run_config,
)


def register(app: typer.Typer, fit_app: typer.Typer, bench_app: typer.Typer) -> None:
    """Adds `fields fit flow` and `fields bench flow`."""
    fit_app.command("flow")(fit_flow_cmd)
    bench_app.command("flow")(bench_flow_cmd)


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
    threads: ThreadsOpt = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Scene flow: the distance-transform method against NSFP's Chamfer loss on the built-in
    lidar pairs, errors and time from one run, with the speed-up and EPE ratio."""
    from fields.bench import FlowBenchRow, bench_flow
    from fields.flow import METHODS

    set_threads(threads)
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
        report(
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
        raise error(e) from e


def _flow_progress() -> Any:
    """The pairs' progress bar of `fields fit flow --sequence`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _read_flow_gt(path: str, n: int) -> torch.Tensor:
    """The ground-truth flow (n, 3) float32 of a file: .npy or any point-cloud format;
    ValueError naming the file when it is not (n, 3) and finite."""
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


def _builtin_pair(recipe: dict[str, Any]) -> Any:
    """The built-in lidar pair of a ground-truth recipe {"seed", "time", "n_points"}."""
    from fields.scenes.street import make_flow_pair

    with console.status("making the built-in lidar pair..."):
        return make_flow_pair(seed=int(recipe["seed"]), n_points=int(recipe["n_points"]),
                              time=int(recipe["time"]))


def fit_flow_cmd(
    source: Annotated[
        str | None, typer.Argument(help="source cloud (.ply .npy .pcd .bin .txt); default: "
                                        "the built-in synthetic lidar pair")
    ] = None,
    target: Annotated[str | None, typer.Argument(help="target cloud")] = None,
    output: OutputOpt = None,
    max_seconds: MaxSecondsOpt = 600.0,
    steps: StepsOpt = 5000,
    seed: SeedOpt = DEFAULT_SEED,
    config: ConfigOpt = None,
    resume: ResumeOpt = None,
    threads: ThreadsOpt = 0,
    overwrite: OverwriteOpt = False,
    checkpoint_every: CheckpointEveryOpt = DEFAULT_CHECKPOINT_EVERY,
    gt: Annotated[
        str | None, typer.Option(help="ground-truth flow of the source points (N x 3 .npy)")
    ] = None,
    method: Annotated[
        str, typer.Option(help="dt (distance transform, fast) or nsfp (Chamfer, the paper)")
    ] = "dt",
    pair_time: Annotated[int, typer.Option(
        "--time", help="the built-in pair: frames t and t + 1 of the street scene")] = 0,
    sequence: Annotated[
        str | None, typer.Option(help="a folder of frames (sorted by name), or 'builtin' for "
                                      "the synthetic sequence: fit every consecutive pair")
    ] = None,
    frames: Annotated[int, typer.Option(help="frames of the built-in sequence")] = 5,
    trajectories: Annotated[
        bool, typer.Option(help="with --sequence: integrate the flows into trajectories of the "
                                "first frame's points")
    ] = False,
    max_iters: Annotated[int | None, hidden("--max-iters")] = None,
) -> None:
    """Fit a neural scene-flow prior between two point clouds (or along a sequence); writes
    config.json, checkpoint.pt, flow.npy, metrics.json and flow.png to the output folder.
    --steps counts every optimisation step (the rigid-motion phase's too), per pair with
    --sequence; --max-seconds is the training time, per pair with --sequence. --seed seeds the
    network and the built-in data."""
    import time

    from fields.flow import DEFAULTS, METHODS, FlowConfig

    steps = alias(steps, max_iters, "--max-iters", "--steps")
    opts = RunOptions(output, max_seconds, steps, seed, config, resume, threads, overwrite,
                      checkpoint_every)
    set_threads(threads)
    if method not in METHODS:
        raise typer.BadParameter(f"expected one of {', '.join(METHODS)}", param_hint="--method")
    if (source is None) != (target is None):
        raise error("give both SOURCE and TARGET clouds, or neither (the built-in pair)")
    if sequence is not None and source is not None:
        raise error("--sequence fits the frames of a folder: give it without SOURCE and TARGET")
    if trajectories and sequence is None:
        raise error("--trajectories needs --sequence")
    if resume is not None and sequence is not None:
        raise error("--resume continues the checkpoint of one pair: not with --sequence")
    wall = time.perf_counter()
    with guarded():
        opts.check("flow")
        overrides = parse_config(config, "FlowConfig")
        overrides.setdefault("seed", seed)
        overrides.setdefault("max_iters", steps)
        cfg = FlowConfig.from_dict({**DEFAULTS[method], "method": method, **overrides})
    if sequence is not None:
        _fit_flow_sequence(sequence, frames, trajectories, cfg, opts, wall)
        return
    _fit_flow_pair(source, target, gt, pair_time, cfg, opts, wall)


def _fit_flow_pair(source: str | None, target: str | None, gt: str | None, pair_time: int,
                   cfg: Any, opts: RunOptions, wall: float) -> None:
    """`fields fit flow [SOURCE TARGET]`: one pair, one `FlowTask` run by the training loop."""
    import time
    from pathlib import Path

    from fields.data.pointclouds import read_points
    from fields.flow import FlowTask, write_flow_outputs
    from fields.train import train

    builtin = None
    with guarded():
        if source is None:
            builtin = {"seed": opts.seed, "time": pair_time, "n_points": 8192}
            pair = _builtin_pair(builtin)
            name, src_np, tgt_np = pair.name, pair.source, pair.target
            gt_flow = torch.from_numpy(pair.flow)
        else:
            assert target is not None
            src_np, tgt_np = read_points(source), read_points(target)
            name, gt_flow = Path(source).stem, None
        if gt is not None:
            gt_flow = _read_flow_gt(gt, len(src_np))
        src, tgt = torch.from_numpy(src_np).float(), torch.from_numpy(tgt_np).float()
        if opts.resume is not None:
            _check_resume(opts.resume, src, tgt)
        task = FlowTask(src, tgt, cfg, gt=gt_flow)
        out = opts.folder(name, "flow")
        truth = {"gt": str(Path(gt).resolve()) if gt is not None else None, "builtin": builtin}
        write_run_config(out, "flow", name, opts, cfg.to_dict(), method=cfg.method,
                         source=source or "builtin", target=target or "builtin", **truth)
    say(f"scene flow {name}: {len(src)} -> {len(tgt)} points, method {cfg.method}, network "
        f"{cfg.depth}x{cfg.width}; budget {opts.steps} steps / {opts.max_seconds:g} s; "
        f"output {out}")
    with guarded(out):
        state = train(task, opts.train_config(eval_every=0.0),
                      checkpoint=out / "checkpoint.pt", resume=opts.resume,
                      checkpoint_extra=task.checkpoint_extra(ground_truth=truth), log=say)
        fit = task.result(steps=state.step, train_seconds=state.seconds)
        metrics = write_flow_outputs(out, fit, src, tgt, gt_flow, time.perf_counter() - wall,
                                     title=name, extra=run_notes(state))
    quality = (
        f"EPE3D {metrics['epe3d']:.4f} m, Acc-strict {metrics['acc_strict']:.3f}, Acc-relax "
        f"{metrics['acc_relax']:.3f}, outliers {metrics['outliers']:.3f}, angle "
        f"{metrics['angle_error']:.3f} rad; " if gt_flow is not None else ""
    )
    say(f"{quality}{fit.steps} steps ({fit.rigid_steps} rigid, best flow iteration "
        f"{fit.best_iter}) in {state.seconds:.1f} s. Wrote {out}/config.json, checkpoint.pt, "
        "flow.npy, metrics.json, flow.png")


def _check_resume(path: str, source: torch.Tensor, target: torch.Tensor) -> None:
    """ValueError naming the checkpoint when it is not a scene-flow fit of these clouds."""
    from fields.checkpoint import read_checkpoint

    payload = read_checkpoint(path)
    if payload.get("kind") != "flow":
        raise ValueError(f"--resume {path}: not a scene-flow checkpoint (field 'kind' is "
                         f"{payload.get('kind')!r}, expected 'flow')")
    for key, cloud in (("source", source), ("target", target)):
        saved = payload.get(key)
        if not (torch.is_tensor(saved) and saved.shape == cloud.shape
                and torch.equal(saved.float(), cloud)):
            raise ValueError(f"--resume {path}: its field {key!r} is not the {key} cloud being "
                             "fitted; give the clouds (or the built-in pair's --seed and --time) "
                             "it was fitted to")


def _fit_flow_sequence(sequence: str, n_frames: int, trajectories: bool, cfg: Any,
                       opts: RunOptions, wall: float) -> None:
    """`fields fit flow --sequence`: every consecutive pair, then the accumulated cloud and
    the trajectories; per-pair outputs and checkpoints in flows/."""
    import time
    from pathlib import Path

    import numpy as np

    from fields.data.pointclouds import write_points
    from fields.flow import accumulate, fit_sequence, integrate, read_sequence
    from fields.io import WriteError, save_npy_atomic
    from fields.metrics import scene_flow_metrics
    from fields.plots import write_flow_figure, write_trajectory_figure
    from fields.train import Diverged, Terminated

    gt_flows = gt_traj = None
    with guarded():
        if sequence == "builtin":
            from fields.scenes.street import make_flow_sequence

            with console.status("making the built-in lidar sequence..."):
                seq = make_flow_sequence(n_frames, seed=opts.seed)
            clouds, names, name = seq.frames, [f"frame {k}" for k in range(n_frames)], seq.name
            gt_flows, gt_traj = seq.flows, seq.trajectories
        else:
            clouds, names = read_sequence(sequence)
            name = Path(sequence).name
        out = opts.folder(name, "flow")
        write_run_config(out, "flow", name, opts, cfg.to_dict(), method=cfg.method,
                         sequence=sequence if sequence == "builtin" else
                         str(Path(sequence).resolve()), frames=len(clouds),
                         trajectories=trajectories)
    n_pairs = len(clouds) - 1
    say(f"scene flow along {name}: {len(clouds)} frames, method {cfg.method}; budget per pair "
        f"{opts.steps} steps / {opts.max_seconds:g} s; output {out}")

    def pair_extra(k: int) -> dict[str, Any]:
        builtin = ({"seed": opts.seed, "time": k, "n_points": 8192} if gt_flows is not None
                   else None)
        return {"pair": k, "ground_truth": {"gt": None, "builtin": builtin}}

    pairs: list[dict[str, Any]] = []
    with _flow_progress() as progress:
        task = progress.add_task("pairs", total=n_pairs, status="")

        def on_iter(k: int, rec: dict[str, float]) -> None:
            progress.update(task, status=f"pair {k}: step {rec['step']}, loss "
                                         f"{rec['loss']:.4g}")

        def on_pair(k: int, fit: Any) -> None:
            rec: dict[str, Any] = {"pair": k, "source": names[k], "target": names[k + 1],
                                   "steps": fit.steps, "seconds": fit.train_seconds,
                                   "flow_steps": fit.iters, "rigid_steps": fit.rigid_steps,
                                   "best_step": fit.best_iter}
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
            fits = fit_sequence(clouds, cfg, on_pair=on_pair, on_iter=on_iter,
                                steps=opts.steps, max_seconds=opts.max_seconds,
                                checkpoint_every=opts.checkpoint_every,
                                checkpoint_dir=out / "flows",
                                pair_extra=pair_extra)
        except KeyboardInterrupt as e:
            say(f"{'terminated' if isinstance(e, Terminated) else 'interrupted'}: the finished "
                f"pairs and the current pair's checkpoint are in {out}/flows")
            raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
        except (Diverged, WriteError) as e:
            raise error(e, code=1) from e
        except (ValueError, RuntimeError, OSError) as e:
            raise error(e) from e
    metrics: dict[str, Any] = {"name": name, "frames": len(clouds), "method": cfg.method,
                               "pairs": pairs}
    fields_ = [f.forward_field for f in fits]
    with guarded(out):
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
        steps = sum(p["steps"] for p in pairs)
        seconds = sum(p["seconds"] for p in pairs)
        write_metrics(out, steps, seconds, time.perf_counter() - wall, metrics)
    quality = (f"mean EPE3D {metrics['epe3d']:.4f} m, Acc-strict {metrics['acc_strict']:.3f}; "
               if gt_flows is not None else "")
    drift = (f"trajectory error after {len(clouds) - 1} steps "
             f"{metrics['trajectory_epe_final']:.4f} m; "
             if "trajectory_epe_final" in metrics else "")
    say(f"{quality}{drift}{n_pairs} pairs, {steps} steps in {seconds:.1f} s. Wrote {out}/"
        "config.json, metrics.json, flows/ (flow, picture, checkpoint of each pair), "
        "accumulated.ply" + (", trajectories.npy, trajectories.png" if trajectories else ""))


def evaluate_flow(checkpoint: str, data: str | None) -> dict[str, Any]:
    """The scene-flow errors (`fields.metrics.scene_flow_metrics`: epe3d, acc_strict,
    acc_relax, outliers, angle_error) of the checkpoint's flow at its source points (N, 3)
    against the ground truth: `data` (an (N, 3) .npy flow file), else what the run's
    config.json (or the checkpoint itself, for the pairs of a sequence) names: its --gt file,
    or the built-in pair, regenerated from its seed and time. ValueError naming the checkpoint
    when there is none."""
    import numpy as np

    from fields.checkpoint import run_config
    from fields.flow import load_flow_field
    from fields.metrics import scene_flow_metrics

    field, payload = load_flow_field(checkpoint)
    source = payload["source"].float()
    n = len(source)
    if data is not None:
        gt, where = _read_flow_gt(data, n), data
    else:
        run = run_config(checkpoint)
        truth = run if ("gt" in run or "builtin" in run) else payload.get("ground_truth") or {}
        if truth.get("gt"):
            gt, where = _read_flow_gt(str(truth["gt"]), n), str(truth["gt"])
        elif truth.get("builtin"):
            recipe = truth["builtin"]
            pair = _builtin_pair(recipe)
            if pair.source.shape != tuple(source.shape) or not np.array_equal(
                    pair.source, source.numpy()):
                raise ValueError(f"{checkpoint}: the built-in pair {pair.name} made from its "
                                 f"run's seed and time ({recipe}) is not the checkpoint's "
                                 "source cloud; give the flow with --data FLOW.npy")
            gt, where = torch.from_numpy(pair.flow), f"builtin {pair.name}"
        else:
            raise ValueError(f"{checkpoint}: no ground-truth flow is known for this checkpoint "
                             f"(its run had no --gt and no built-in pair); give one with --data "
                             f"FLOW.npy, an ({n}, 3) array, one row per source point")
    field.eval()
    with torch.no_grad():
        flow = torch.cat([field(p) for p in source.split(2**15)])
    return {"ground_truth": where, "n_source": n, **scene_flow_metrics(flow, gt)}
