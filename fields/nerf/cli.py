"""`fields fit nerf`: fit a radiance field to posed images (registered by `fields.nerf.kind`)."""

from __future__ import annotations

from typing import Annotated

import torch
import typer
from rich.markup import escape

from fields import distributed
from fields.command import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_SEED,
    CheckpointEveryOpt,
    ConfigOpt,
    DeviceOpt,
    MaxSecondsOpt,
    OutputOpt,
    OverwriteOpt,
    ResumeOpt,
    RunOptions,
    SeedOpt,
    StepsOpt,
    ThreadsOpt,
    alias,
    auto_downscale,
    check_device,
    console,
    device_name,
    error,
    guarded,
    hidden,
    load_posed_images,
    parse_config,
    run_notes,
    say,
    set_threads,
    write_run_config,
)


def register(app: typer.Typer, fit_app: typer.Typer, bench_app: typer.Typer) -> None:
    """Adds `fields fit nerf`, `fields distill`, `fields bench poses` and `fields bench
    nerf`."""
    fit_app.command("nerf")(fit_nerf_cmd)
    app.command("distill")(distill_cmd)
    bench_app.command("poses")(bench_poses_cmd)
    bench_app.command("nerf")(bench_nerf_cmd)


def bench_nerf_cmd(
    data: Annotated[str | None, typer.Option(
        help="scene folder (default: the built-in procedural scene)")] = None,
    scene_resolution: Annotated[int, typer.Option(help="built-in scene's image size")] = 128,
    downscale: Annotated[int, typer.Option(help="downscale --data's images by this")] = 1,
    warmup: Annotated[int, typer.Option(help="steps before measuring (the occupancy grid's "
                                              "warm-up is 256)")] = 300,
    steps: Annotated[int, typer.Option(help="steps timed without instruments")] = 64,
    profiled: Annotated[int, typer.Option(help="steps profiled for the breakdown")] = 32,
    seed: SeedOpt = DEFAULT_SEED,
    config: ConfigOpt = None,
    threads: ThreadsOpt = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
) -> None:
    """Where a NeRF training step's time goes: steps/s, rays/s and samples/s of plain steps,
    then the breakdown of profiled steps (ray generation, marching, encoding and MLP forward
    and backward, compositing, loss, optimiser, grid update, Python + dispatch) in ms and %,
    and each phase's inclusive time. See fields/nerf/bench_step.py for how time is
    attributed."""
    import contextlib
    import json

    from rich.table import Table

    from fields.nerf import NerfConfig
    from fields.nerf.bench_step import bench_nerf_step

    set_threads(threads)
    with guarded():
        if min(warmup, steps, profiled) < 1:
            raise error("--warmup, --steps and --profiled must be >= 1")
        cfg = NerfConfig.from_dict({**NerfConfig().to_dict(),
                                    **parse_config(config, "NerfConfig")})
        # --json: stdout holds the one JSON object only
        with console.capture() if as_json else contextlib.nullcontext():
            scene, name = load_posed_images(data, downscale, scene_resolution)
        res = f"{scene.train.cameras.width}x{scene.train.cameras.height}"
        if not as_json:
            say(f"{name} ({len(scene.train)} views {res}): {warmup} warm-up steps, {steps} "
                f"timed, {profiled} profiled, {torch.get_num_threads()} threads")
        r = bench_nerf_step(scene, name, warmup, steps, profiled, seed, cfg)
    if as_json:
        print(json.dumps({**r.to_dict(), "resolution": res,
                          "threads": torch.get_num_threads()}))
        return
    say(f"{r.steps_per_s:.2f} steps/s, {r.rays_per_s / 1e3:.1f}k rays/s, "
        f"{r.samples_per_s / 1e3:.0f}k samples/s ({r.rays_per_step:.0f} rays, "
        f"{r.samples_per_step / 1e3:.0f}k samples a step)")
    table = Table(title=f"a profiled step: {r.ms_per_step:.1f} ms (profiler included)")
    for col in ("where", "ms", "%"):
        table.add_column(col, justify="left" if col == "where" else "right")
    for k, v in r.buckets.items():
        table.add_row(k.replace("kernel:", "kernel: "), f"{v:.2f}",
                      f"{100 * v / r.ms_per_step:.1f}")
    console.print(table)
    phases = Table(title="phases, inclusive (kernels included)")
    phases.add_column("phase")
    phases.add_column("ms", justify="right")
    for k, v in r.phases.items():
        phases.add_row(k, f"{v:.2f}")
    console.print(phases)


def bench_poses_cmd(
    seconds: Annotated[float, typer.Option(help="training seconds of each fit")] = 120.0,
    degrees: Annotated[float, typer.Option(help="rotation noise of every training pose")] = 3.0,
    fraction: Annotated[float, typer.Option(
        help="position noise of every training pose, as a fraction of the orbit radius")] = 0.05,
    test_steps: Annotated[int, typer.Option(
        help="test-time pose alignment steps per held-out view (0: the similarity only)")] = 100,
    baseline: Annotated[bool, typer.Option(
        "--baseline/--no-baseline", help="also fit the perturbed poses without refinement")]
        = True,
    scene_resolution: Annotated[int, typer.Option(help="built-in scene's image size")] = 128,
    seed: SeedOpt = DEFAULT_SEED,
    config: ConfigOpt = '{"target_samples": 32768}',
    threads: ThreadsOpt = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Camera pose refinement on the built-in scene: every training pose turned by --degrees
    and moved by --fraction of the orbit radius; fits with the true poses, the perturbed
    poses refined, and the perturbed poses as they are, each for --seconds. Reports the
    refined poses' errors after a similarity alignment (Umeyama) and held-out PSNR after
    test-time pose alignment (targets: <= 0.5 deg, <= 1% of the radius, within 1 dB)."""
    import json

    from fields.nerf import NerfConfig
    from fields.nerf.bench_poses import bench_poses

    set_threads(threads)
    with guarded():
        if seconds <= 0 or degrees < 0 or fraction < 0 or test_steps < 0:
            raise error("--seconds must be > 0; --degrees, --fraction, --test-steps >= 0")
        cfg = NerfConfig.from_dict({**NerfConfig().to_dict(),
                                    **parse_config(config, "NerfConfig")})
        scene, _ = load_posed_images(None, 1, scene_resolution)

    def show(row: dict) -> None:
        if as_json:
            print(json.dumps(row), flush=True)
            return
        text = f"{row['run']}: held-out PSNR {row['psnr_aligned']:.2f} dB"
        if "psnr_test_time" in row:
            text += f" ({row['psnr_test_time']:.2f} dB after test-time pose alignment)"
        if "rotation_mean_deg" in row:
            text += (f"; poses {row['initial_rotation_mean_deg']:.2f} deg / "
                     f"{row['initial_centre_mean_pct_radius']:.2f}% -> "
                     f"{row['rotation_mean_deg']:.3f} deg / {row['centre_mean_pct_radius']:.3f}% "
                     f"of the radius (mean; max {row['rotation_max_deg']:.2f} deg / "
                     f"{row['centre_max_pct_radius']:.2f}%)")
        say(f"{text}; {row['steps']} steps in {row['seconds']:.0f} s")

    with guarded():
        rows = bench_poses(scene, seconds, degrees, fraction, seed, test_steps, baseline, cfg,
                           on_row=show, show_progress=not as_json)
    for row in rows[1:]:
        if as_json:
            print(json.dumps({"run": row["run"], "psnr_gap_db": row["psnr_gap_db"],
                              "meets_targets": row["meets_targets"]}))
        else:
            say(f"{row['run']}: {row['psnr_gap_db']:.2f} dB below the true poses' fit; "
                f"targets {'met' if row['meets_targets'] else 'NOT met'}")


def fit_nerf_cmd(
    data: Annotated[str | None, typer.Option(
        help="scene folder: Blender, instant-ngp, LLFF or COLMAP text (default: the built-in "
             "procedural scene)")] = None,
    output: OutputOpt = None,
    max_seconds: MaxSecondsOpt = 300.0,
    steps: StepsOpt = 20_000,
    seed: SeedOpt = DEFAULT_SEED,
    config: ConfigOpt = None,
    resume: ResumeOpt = None,
    threads: ThreadsOpt = 0,
    overwrite: OverwriteOpt = False,
    checkpoint_every: CheckpointEveryOpt = DEFAULT_CHECKPOINT_EVERY,
    model: Annotated[str, typer.Option(
        help="ngp (hash grid), vanilla (frequency), planes (tri-planes) or kilo (16^3 cells of "
             "tiny MLPs; bounded scenes)")] = "ngp",
    eval_every: Annotated[float, typer.Option(help="seconds between held-out evaluations")] = 60.0,
    downscale: Annotated[int | None, typer.Option(
        help="downscale images by this factor (default: automatic, see --max-size)")] = None,
    max_size: Annotated[int, typer.Option(
        help="the automatic downscale's longest image side in pixels (0: none)")] = 1600,
    refine_poses: Annotated[bool | None, typer.Option(
        "--refine-poses/--no-refine-poses",
        help="optimise the training cameras' poses with the field (BARF): for poses that are "
             "off by a degree or more; structure from motion's are better left as they are "
             "(default: off)")] = None,
    appearance: Annotated[bool | None, typer.Option(
        "--appearance/--no-appearance",
        help="a colour transform per training image for exposure and white balance "
             "(default: on for captures)")] = None,
    scene_resolution: Annotated[int, typer.Option(help="built-in scene's image size")] = 128,
    mesh_resolution: Annotated[int, typer.Option(
        help="also export mesh.ply at this resolution (0: no)")] = 0,
    video_frames: Annotated[int, typer.Option(help="frames of the orbit video (0: none)")] = 48,
    viewer: Annotated[bool, typer.Option(help="watch it train in the web viewer")] = False,
    viewer_port: Annotated[int, typer.Option(help="the viewer's port")] = 7007,
    device: DeviceOpt = "cpu",
    mesh: Annotated[int | None, hidden("--mesh")] = None,
) -> None:
    """Fit a radiance field (instant-ngp style) to posed images; writes config.json,
    checkpoint.pt, metrics.json, renders/ and orbit.mp4 to the output folder. With --viewer,
    shows the field live at http://127.0.0.1:7007 (training pauses while the camera moves)
    and keeps serving it after training until Ctrl-C."""
    from fields.nerf import MODELS, NerfConfig, NerfTask
    from fields.train import seed_everything

    mesh_resolution = alias(mesh_resolution, mesh, "--mesh", "--mesh-resolution")
    opts = RunOptions(output, max_seconds, steps, seed, config, resume, threads, overwrite,
                      checkpoint_every)
    set_threads(threads)
    if model not in MODELS:
        raise typer.BadParameter(f"expected one of {sorted(MODELS)}", param_hint="--model")
    with guarded():
        opts.check("nerf")
        if viewer and distributed.active():
            raise ValueError("--viewer: not under torchrun (watch a single-process run, or "
                             "open the checkpoint with `fields view` while it trains)")
        dev = check_device(device)
        overrides = parse_config(config, "NerfConfig")
        if refine_poses is not None:
            overrides["refine_poses"] = refine_poses
        if appearance is not None:
            overrides["appearance"] = appearance
        downscale = auto_downscale(data, downscale, max_size)
        scene, name = load_posed_images(data, downscale, scene_resolution)
        cfg = NerfConfig.from_dict({**MODELS[model]().to_dict(), **overrides})
        out = opts.folder(name, "nerf")
        train_cfg = opts.train_config(eval_every=eval_every)
        seed_everything(seed)
        task = NerfTask(scene, cfg, seed=seed, device=dev)
        write_run_config(out, "nerf", name, opts, task.config.to_dict(), data=data,
                         model=model, downscale=downscale, scene_resolution=scene_resolution,
                         eval_every=eval_every, device=device)
    split = scene.eval_split()
    say(f"fitting {name}: {len(scene.train)} training views {scene.train.cameras.width}x"
        f"{scene.train.cameras.height}, {len(split)} held-out; model {model}; budget "
        f"{steps} steps / {max_seconds:g} s; {device_name(device)}; output {out}")
    extras = [what for what, on in (("pose refinement", task.config.refine_poses),
                                    ("per-image appearance", task.config.appearance)) if on]
    if extras:
        say(f"{' and '.join(extras)} on (--no-refine-poses / --no-appearance to switch off)")

    def on_eval(state, rec) -> None:
        console.log(f"step {rec['step']}, {rec['seconds']:.0f} s: held-out PSNR "
                    f"{rec['psnr']:.2f} dB")

    live, on_step, trained = None, None, task
    if viewer:
        from fields.nerf import scene_info
        from fields.nerf.view import NerfView
        from fields.viewer import Viewer
        from fields.viewer.training import LockedTask

        view = NerfView(task.model, task.grid, task.settings, scene.background,
                        scene_info(scene, task.config), name)
        try:
            live = Viewer(view, port=viewer_port, source=str(out / "checkpoint.pt"))
        except (OSError, ValueError) as e:
            raise error(e) from e
        live.enable_training()
        console.print(f"viewer at [bold]{live.url}[/bold]", highlight=False)
        trained = LockedTask(task, live.lock)

        def on_step(state) -> None:
            live.training_step(state.step, state.seconds, state.last)

    try:
        _fit_nerf_run(task, trained, train_cfg, out, resume, on_eval, on_step, name, scene,
                      video_frames, mesh_resolution, live)
    finally:
        if live is not None:
            live.close()


def _fit_nerf_run(task, trained, train_cfg, out, resume, on_eval, on_step, name, scene,
                  video_frames, mesh_resolution, live) -> None:
    """The training and outputs of `fields fit nerf` (the viewer, if any, is closed by the
    caller)."""
    import time

    from fields.nerf import write_outputs
    from fields.train import train

    split = scene.eval_split()
    wall = time.perf_counter()
    with guarded(out):
        state = train(trained, train_cfg, checkpoint=out / "checkpoint.pt", resume=resume,
                      checkpoint_extra=task.checkpoint_extra(), on_eval=on_eval,
                      on_step=on_step, log=say)
        if not distributed.is_main():
            return  # under torchrun, rank 0 evaluates and writes the outputs
        console.print("evaluating on every held-out view...")
        task.module.eval()
        with torch.no_grad():
            final = task.evaluate(final=True)
        metrics = _metrics(task, state, final, name, time.perf_counter() - wall)
        write_outputs(task, out, metrics, video_frames=video_frames,
                      mesh_resolution=mesh_resolution or None)
    ssim = f"SSIM {metrics['ssim']:.4f}" if metrics["ssim"] is not None else "no SSIM"
    if "psnr_colour_corrected" in metrics:
        ssim += (f", {metrics['psnr_colour_corrected']:.2f} dB colour-corrected (the held-out "
                 "images' exposure fitted per view)")
    periodic = ""
    if state.eval_seconds > 0:
        periodic = (f"; periodic evaluations took {state.eval_seconds:.1f} s, "
                    f"{100 * state.eval_seconds / max(metrics['wall_seconds'], 1e-9):.1f}% of "
                    "the wall time")
    say(f"PSNR {metrics['psnr']:.2f} dB, {ssim} over {len(split)} held-out views after "
        f"{state.step} steps, {state.seconds:.0f} s of training "
        f"({metrics['rays_per_s'] / 1e3:.1f}k rays/s{periodic}). Wrote {out}/")
    for note in metrics.get("notes", []):
        say(f"note: {note}")
    if live is not None:
        try:
            live.training_done(f"done: {state.step} steps, held-out PSNR "
                               f"{metrics['psnr']:.2f} dB")
            console.print(f"viewer still at [bold]{escape(live.url)}[/bold] (Ctrl-C to stop)",
                          highlight=False)
            live.wait()
        except KeyboardInterrupt:
            pass


def _metrics(task, state, final, name, wall_seconds) -> dict:
    """metrics.json of a NeRF fit."""
    metrics = {
        "steps": state.step,
        "seconds": state.seconds,
        "wall_seconds": wall_seconds,
        "scene": name,
        "psnr": final["psnr"],
        **({"psnr_colour_corrected": final["psnr_colour_corrected"]}
           if "psnr_colour_corrected" in final else {}),
        "ssim": final["ssim"],
        "psnr_per_view": final["psnr_per_view"],
        "eval_seconds": state.eval_seconds,
        "rays_per_s": task.rays_trained / max(state.seconds, 1e-9),
        "samples_per_s": task.samples_trained / max(state.seconds, 1e-9),
        "occupancy": float(task.grid.occupancy_fraction),
        "threads": torch.get_num_threads(),
        "history": state.history,
    }
    metrics.update(run_notes(state))
    notes = [str(n) for n in final.get("notes", [])]
    if notes:
        metrics["notes"] = notes
    return metrics


def distill_cmd(
    checkpoint: Annotated[str, typer.Argument(help="the teacher: a NeRF checkpoint.pt")],
    into: Annotated[str, typer.Option(
        help="the student's architecture: ngp (hash grid), vanilla (frequency MLP), planes "
             "(tri-planes) or kilo (16^3 cells of tiny MLPs)")] = "kilo",
    data: Annotated[str | None, typer.Option(
        help="the images to fine-tune on (default: the teacher's, from its config.json)")
    ] = None,
    output: OutputOpt = None,
    max_seconds: MaxSecondsOpt = 300.0,
    steps: StepsOpt = 20_000,
    seed: SeedOpt = DEFAULT_SEED,
    config: ConfigOpt = None,
    resume: ResumeOpt = None,
    threads: ThreadsOpt = 0,
    overwrite: OverwriteOpt = False,
    checkpoint_every: CheckpointEveryOpt = DEFAULT_CHECKPOINT_EVERY,
    stage1: Annotated[float, typer.Option(
        help="fraction of the budget matching the teacher's samples; the rest fine-tunes on "
             "the images")] = 0.5,
    baseline: Annotated[bool, typer.Option(
        "--baseline/--no-baseline",
        help="also fit the same student from scratch on the images for the same budget "
             "(into scratch/) and report the three PSNRs")] = False,
    video_frames: Annotated[int, typer.Option(help="frames of the orbit video (0: none)")] = 48,
    device: DeviceOpt = "cpu",
) -> None:
    """Distil a fitted radiance field into another architecture (PVD's two stages: match the
    teacher's density and colour on samples where the scene is, then fine-tune on the
    images); writes the student's checkpoint.pt, metrics.json (student and teacher PSNR on
    the same held-out views; with --baseline, the student fitted from scratch too),
    renders/ and orbit.mp4."""
    from fields.checkpoint import run_config
    from fields.nerf import MODELS, LoadedNerf, NerfConfig, NerfTask
    from fields.nerf.distill import DistillConfig, DistillTask
    from fields.train import seed_everything

    opts = RunOptions(output, max_seconds, steps, seed, config, resume, threads, overwrite,
                      checkpoint_every)
    set_threads(threads)
    if into not in MODELS:
        raise typer.BadParameter(f"expected one of {sorted(MODELS)}", param_hint="--into")
    with guarded():
        opts.check("nerf", "distill")
        dev = check_device(device)
        overrides = parse_config(config, "NerfConfig")
        # {"distill": {...}} in --config: DistillConfig's fields (the rest are NerfConfig's)
        distill_overrides = overrides.pop("distill", {})
        if not isinstance(distill_overrides, dict):
            raise ValueError(f"--config: distill must be an object of DistillConfig's fields, "
                             f"got {distill_overrides!r}")
        distill = DistillConfig.from_dict({"stage1": stage1, **distill_overrides})
        teacher = LoadedNerf(checkpoint)
        run = run_config(checkpoint)
        source = data if data is not None else run.get("data")
        downscale = int(run.get("downscale", 1) or 1) if data is None else 1
        scene, name = load_posed_images(source, downscale,
                                        int(run.get("scene_resolution", 128)))
        cfg = NerfConfig.from_dict({**MODELS[into]().to_dict(), **overrides})
        out = opts.folder(name, f"distill-{into}")
        train_cfg = opts.train_config(eval_every=0.0)
        seed_everything(seed)
        task = DistillTask(scene, cfg, teacher, distill, seed=seed, device=dev)
        write_run_config(out, "nerf", name, opts, task.config.to_dict(), data=source,
                         model=into, downscale=downscale,
                         scene_resolution=int(run.get("scene_resolution", 128)),
                         device=device, teacher=str(checkpoint),
                         distill=task.distill.to_dict())
    say(f"distilling {checkpoint} into {into} on {name}: {len(scene.train)} training views; "
        f"budget {steps} steps / {max_seconds:g} s ({stage1:.0%} matching the teacher, the "
        f"rest on the images); output {out}")
    scratch = None
    if baseline:
        seed_everything(seed)
        scratch = NerfTask(scene, task.config, seed=seed, device=dev)
        (out / "scratch").mkdir(exist_ok=True)
        write_run_config(out / "scratch", "nerf", name, opts, task.config.to_dict(),
                         data=source, model=into, downscale=downscale,
                         scene_resolution=int(run.get("scene_resolution", 128)), device=device)
    _distill_run(task, scratch, train_cfg, out, resume, scene, name, into, checkpoint,
                 video_frames)


def _distill_run(task, scratch, train_cfg, out, resume, scene, name, into, teacher_checkpoint,
                 video_frames) -> None:
    """Trains the student (and, with `baseline`, the scratch student), evaluates the three on
    the held-out views and writes the outputs."""
    import time

    from fields.command import write_metrics
    from fields.nerf import write_outputs
    from fields.nerf.distill import teacher_psnr
    from fields.train import train

    split = scene.eval_split()
    wall = time.perf_counter()
    with guarded(out):
        state = train(task, train_cfg, checkpoint=out / "checkpoint.pt", resume=resume,
                      checkpoint_extra=task.checkpoint_extra(), log=say)
        console.print("evaluating the student and the teacher on every held-out view...")
        task.module.eval()
        with torch.no_grad():
            final = task.evaluate(final=True)
        t_psnrs = teacher_psnr(task.teacher, split, scene.background)
        metrics = _metrics(task, state, final, name, time.perf_counter() - wall)
        metrics["teacher"] = {"checkpoint": str(teacher_checkpoint),
                              "psnr": sum(t_psnrs) / len(t_psnrs), "psnr_per_view": t_psnrs}
        metrics["student"] = into
        metrics["stage1_steps"] = task.stage2_step if task.stage == 2 else state.step
        if scratch is not None:
            console.print(f"fitting the same {into} student from scratch for the same budget...")
            s_out = out / "scratch"
            s_state = train(scratch, train_cfg, checkpoint=s_out / "checkpoint.pt",
                            checkpoint_extra=scratch.checkpoint_extra(), log=say)
            scratch.module.eval()
            with torch.no_grad():
                s_final = scratch.evaluate(final=True)
            metrics["scratch"] = {"psnr": s_final["psnr"], "ssim": s_final["ssim"],
                                  "steps": s_state.step, "seconds": s_state.seconds,
                                  "psnr_per_view": s_final["psnr_per_view"]}
            write_metrics(s_out, s_state.step, s_state.seconds, s_state.seconds,
                          {"psnr": s_final["psnr"], "ssim": s_final["ssim"]})
        write_outputs(task, out, metrics, video_frames=video_frames)
    line = (f"student ({into}) PSNR {metrics['psnr']:.2f} dB, teacher "
            f"{metrics['teacher']['psnr']:.2f} dB")
    if scratch is not None:
        line += f", the {into} student from scratch {metrics['scratch']['psnr']:.2f} dB"
    say(f"{line} over {len(split)} held-out views after {state.seconds:.0f} s of training. "
        f"Wrote {out}/")
