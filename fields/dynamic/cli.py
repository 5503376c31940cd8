"""`fields fit dynamic`: fit a radiance field that moves to multi-view video (registered by
`fields.dynamic.kind`)."""

from __future__ import annotations

from typing import Annotated, Any

import torch
import typer

from fields import distributed
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
    console,
    guarded,
    parse_config,
    run_notes,
    say,
    set_threads,
    write_run_config,
)


def register(app: typer.Typer, fit_app: typer.Typer, bench_app: typer.Typer) -> None:
    """Adds `fields fit dynamic` and `fields bench dynamic`."""
    fit_app.command("dynamic")(fit_dynamic_cmd)
    bench_app.command("dynamic")(bench_dynamic_cmd)


def load_video_scene(data: str | None, downscale: int = 1, scene_resolution: int = 96
                     ) -> tuple[Any, str]:
    """`(SceneData, name)`: multi-view video from a folder (D-NeRF's Blender layout or a
    nerfstudio / instant-ngp transforms.json, with a per-frame ``time``), or the built-in
    dynamic scene (rendered once with a progress bar, then cached)."""
    from rich.progress import Progress

    from fields.data import load_scene
    from fields.dynamic.model import require_times
    from fields.scenes.kinetic import KineticSpec, ensure_kinetic

    if data is None:
        spec = KineticSpec(resolution=scene_resolution)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("rendering the built-in dynamic scene (once, then cached)",
                                     total=1)
            folder = ensure_kinetic(
                spec, progress=lambda i, n: progress.update(task, completed=i, total=n))
        say(f"built-in dynamic scene 'kinetic' ({scene_resolution}px): {folder}")
        scene = load_scene(folder)
        return scene, "kinetic"
    scene = load_scene(data, downscale=downscale)
    require_times(scene, str(data))
    return scene, scene.name


def fit_dynamic_cmd(
    data: Annotated[str | None, typer.Option(
        help="multi-view video folder: D-NeRF's Blender layout (transforms_*.json) or a "
             "nerfstudio transforms.json, every frame with a 'time' in [0, 1] (default: the "
             "built-in dynamic scene)")] = None,
    output: OutputOpt = None,
    max_seconds: MaxSecondsOpt = 300.0,
    steps: StepsOpt = 50_000,
    seed: SeedOpt = DEFAULT_SEED,
    config: ConfigOpt = None,
    resume: ResumeOpt = None,
    threads: ThreadsOpt = 0,
    overwrite: OverwriteOpt = False,
    checkpoint_every: CheckpointEveryOpt = DEFAULT_CHECKPOINT_EVERY,
    model: Annotated[str, typer.Option(
        help="planes (K-Planes: six space-time feature planes), deform (a deformation "
             "into a canonical hash-grid field) or static (the canonical field alone, time "
             "ignored: the baseline)")] = "planes",
    eval_every: Annotated[float, typer.Option(help="seconds between held-out evaluations")] = 60.0,
    downscale: Annotated[int, typer.Option(help="downscale images by this factor")] = 1,
    scene_resolution: Annotated[int, typer.Option(help="built-in scene's image size")] = 96,
    video_frames: Annotated[int, typer.Option(
        help="frames of the bullet-time video (the camera orbits while time runs; 0: none)"
             )] = 48,
) -> None:
    """Fit a radiance field that moves (multi-view video) at every time; writes config.json,
    checkpoint.pt, metrics.json, renders/ (held-out views at held-out times) and
    bullet_time.mp4 to the output folder."""
    from fields.dynamic.model import MODELS, DynamicConfig, DynamicTask
    from fields.train import seed_everything

    opts = RunOptions(output, max_seconds, steps, seed, config, resume, threads, overwrite,
                      checkpoint_every)
    set_threads(threads)
    if model not in MODELS:
        raise typer.BadParameter(f"expected one of {', '.join(MODELS)}", param_hint="--model")
    with guarded():
        opts.check("dynamic")
        overrides = parse_config(config, "DynamicConfig")
        cfg = DynamicConfig.from_dict({**overrides, "model": model})
        scene, name = load_video_scene(data, downscale, scene_resolution)
        out = opts.folder(name, "dynamic")
        train_cfg = opts.train_config(eval_every=eval_every)
        seed_everything(seed)
        task = DynamicTask(scene, cfg, seed=seed)
        write_run_config(out, "dynamic", name, opts, task.config.to_dict(), data=data,
                         model=model, downscale=downscale, scene_resolution=scene_resolution,
                         eval_every=eval_every)
    split = scene.eval_split()
    n_times = len(set(scene.train.times.tolist()))
    say(f"fitting {name}: {len(scene.train)} training images {scene.train.cameras.width}x"
        f"{scene.train.cameras.height} at {n_times} times, {len(split)} held-out; model "
        f"{model}; budget {steps} steps / {max_seconds:g} s; output {out}")

    def on_eval(state: Any, rec: dict[str, Any]) -> None:
        console.log(f"step {rec['step']}, {rec['seconds']:.0f} s: held-out PSNR "
                    f"{rec['psnr']:.2f} dB")

    _run(task, train_cfg, out, resume, on_eval, name, video_frames)


def _run(task: Any, train_cfg: Any, out: Any, resume: str | None, on_eval: Any, name: str,
         video_frames: int) -> None:
    import time

    from fields.dynamic.outputs import write_outputs
    from fields.train import train

    split = task.data.eval_split()
    wall = time.perf_counter()
    with guarded(out):
        state = train(task, train_cfg, checkpoint=out / "checkpoint.pt", resume=resume,
                      checkpoint_extra=task.checkpoint_extra(), on_eval=on_eval, log=say)
        if not distributed.is_main():
            return  # under torchrun (every rank trains the whole batch), rank 0 writes
        console.print("evaluating on every held-out view...")
        task.module.eval()
        with torch.no_grad():
            final = task.evaluate(final=True)
        metrics = {
            "steps": state.step, "seconds": state.seconds,
            "wall_seconds": time.perf_counter() - wall, "scene": name,
            "model": task.config.model, "psnr": final["psnr"], "ssim": final["ssim"],
            **({"psnr_seen_views": final["psnr_seen_views"]}
               if "psnr_seen_views" in final else {}),
            "psnr_per_view": final["psnr_per_view"], "eval_seconds": state.eval_seconds,
            "rays_per_s": task.rays_trained / max(state.seconds, 1e-9),
            "samples_per_s": task.samples_trained / max(state.seconds, 1e-9),
            "occupancy": float(task.grid.occupancy_fraction),
            "threads": torch.get_num_threads(), "history": state.history,
            **run_notes(state),
        }
        write_outputs(task, out, metrics, video_frames=video_frames)
    seen = (f", {metrics['psnr_seen_views']:.2f} dB on the training views at held-out times"
            if "psnr_seen_views" in metrics else "")
    ssim = f"SSIM {metrics['ssim']:.4f}" if metrics["ssim"] is not None else "no SSIM"
    say(f"PSNR {metrics['psnr']:.2f} dB, {ssim} over {len(split)} held-out views at held-out "
        f"times{seen}, after {state.step} steps, {state.seconds:.0f} s of training "
        f"({metrics['rays_per_s'] / 1e3:.1f}k rays/s). Wrote {out}/")


def bench_dynamic_cmd(
    data: Annotated[str | None, typer.Option(
        help="multi-view video folder, as for `fields fit dynamic` (default: the built-in "
             "dynamic scene)")] = None,
    models: Annotated[list[str] | None, typer.Option(
        "--model", help="models to fit (repeatable; default: planes, deform, static)")] = None,
    seeds: Annotated[list[int] | None, typer.Option(
        "--seed", help="seeds (repeatable; every model is fitted with each; default: 0)")
        ] = None,
    seconds: Annotated[float, typer.Option(help="training seconds per fit")] = 300.0,
    config: ConfigOpt = None,
    out: Annotated[str, typer.Option(help="folder for the table, checkpoints and pictures")] =
        "outputs/bench-dynamic",
    eval_every: Annotated[float, typer.Option(help="seconds between held-out evaluations")] = 30.0,
    downscale: Annotated[int, typer.Option(help="downscale images by this factor")] = 1,
    scene_resolution: Annotated[int, typer.Option(help="built-in scene's image size")] = 96,
    threads: ThreadsOpt = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """The dynamic models and the static baseline on one multi-view video, one after the other
    with the same training time, every seed: held-out PSNR / SSIM at held-out times, a table
    with each model's mean and range over the seeds, and in OUT bench.json,
    psnr_vs_time.png (first seed), comparison.png (held-out views: truth | each model) and
    each fit's checkpoint."""
    import json
    from pathlib import Path

    from rich.table import Table

    from fields.dynamic.bench import DynamicBenchRow, bench_dynamic, summarise
    from fields.dynamic.model import MODELS
    from fields.io import write_json
    from fields.plots import write_psnr_time_figure

    set_threads(threads)
    chosen = list(models or MODELS)
    seed_list = list(seeds if seeds else [DEFAULT_SEED])
    with guarded():
        bad = [m for m in chosen if m not in MODELS]
        if bad:
            raise ValueError(f"--model: unknown model(s) {bad}; expected some of {list(MODELS)}")
        overrides = parse_config(config, "DynamicConfig")
        overrides.pop("model", None)
        scene, name = load_video_scene(data, downscale, scene_resolution)
    split = scene.eval_split()
    say(f"bench dynamic on {name}: {len(scene.train)} training images, {len(split)} held-out "
        f"views at held-out times; models {', '.join(chosen)}; seeds "
        f"{', '.join(map(str, seed_list))}; {seconds:g} s each, {torch.get_num_threads()} "
        f"threads")
    rows: list[DynamicBenchRow] = []

    def on_row(row: DynamicBenchRow) -> None:
        rows.append(row)
        if as_json:
            print(json.dumps(row.as_dict(history=False)), flush=True)
        else:
            say(f"{row.model} (seed {row.seed}): PSNR {row.psnr:.2f} dB, SSIM "
                f"{row.ssim or float('nan'):.4f}, {row.steps} steps, "
                f"{row.samples_per_s / 1e3:.0f}k samples/s")

    out_dir = Path(out)
    with guarded(out_dir):
        bench_dynamic(scene, chosen, seed_list, seconds, out_dir, overrides, eval_every,
                      run_info={"data": data, "downscale": downscale,
                                "scene_resolution": scene_resolution},
                      on_row=on_row, log=None if as_json else say)
        summary = summarise(rows)
        write_psnr_time_figure(out_dir / "psnr_vs_time.png",
                               {r.model: r.history for r in rows if r.seed == seed_list[0]},
                               f"{name}, held-out views at held-out times (periodic: "
                               "sampled pixels of 4 views)")
        write_json(out_dir / "bench.json", {
            "scene": name, "seconds": seconds, "threads": torch.get_num_threads(),
            "overrides": overrides, "summary": summary, "rows": [r.as_dict() for r in rows]})
    table = Table(title=f"fields bench dynamic ({name}, {seconds:g} s each, held-out views at "
                        "held-out times)")
    for col in ("model", "seed", "PSNR (dB)", "SSIM", "seen views (dB)", "steps",
                "samples/s", "params"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r.model, str(r.seed), f"{r.psnr:.2f}",
                      "-" if r.ssim is None else f"{r.ssim:.4f}",
                      "-" if r.psnr_seen_views is None else f"{r.psnr_seen_views:.2f}",
                      str(r.steps), f"{r.samples_per_s / 1e3:.0f}k", str(r.params))
    if len(seed_list) > 1:
        for model, s in summary.items():
            table.add_row(model, "mean", f"{s['psnr_mean']:.2f}",
                          f"{s['ssim_mean']:.4f}" if "ssim_mean" in s else "-",
                          f"{s['psnr_min']:.2f}..{s['psnr_max']:.2f}", "", "", "")
    if not as_json:
        console.print(table)
    say(f"wrote {out_dir}/bench.json, psnr_vs_time.png, comparison.png")
