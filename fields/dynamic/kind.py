"""The dynamic radiance-field kind: `fields fit dynamic`, and render / eval / view of its
checkpoints (registered in `fields.kinds`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fields.kinds import Kind, RenderRequest


def _register(app: Any, fit_app: Any, bench_app: Any) -> None:
    from fields.dynamic import cli

    cli.register(app, fit_app, bench_app)


def render(request: RenderRequest) -> Path:
    """A video that runs through `request.time_range` (default all of [0, 1]) while the
    camera orbits the scene, or stays put (`request.still`)."""
    from rich.progress import Progress

    from fields.command import console, say
    from fields.dynamic.model import LoadedDynamic
    from fields.dynamic.outputs import render_time_path
    from fields.io import write_video

    target = Path(request.output or "video.mp4")
    if target.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"{target}: unknown video extension; use .mp4 or .gif")
    f = LoadedDynamic(request.checkpoint)
    times = request.time_range or (0.0, 1.0)
    with Progress(console=console) as progress:
        task = progress.add_task("rendering", total=request.frames)
        video = render_time_path(f.model, f.grid, f.settings, f.info, request.frames, times,
                                 orbit=not request.still, scale=request.scale,
                                 progress=lambda i, n: progress.update(task, completed=i))
    write_video(target, video, fps=float(request.fps))
    say(f"wrote {target} ({request.frames} frames, {video[0].shape[1]}x{video[0].shape[0]}, "
        f"times {times[0]:g} to {times[1]:g})")
    return target


def evaluate(checkpoint: str, data: str | None) -> dict[str, Any]:
    """PSNR and SSIM on every held-out view, each at its own time, of the video the checkpoint
    was fitted to (from its run's config.json), or of `data`."""
    from fields.checkpoint import run_config
    from fields.dynamic.cli import load_video_scene
    from fields.dynamic.model import LoadedDynamic, render_camera_at
    from fields.metrics import mean_or_none, psnr, ssim

    f = LoadedDynamic(checkpoint)
    run = run_config(checkpoint)
    source = data if data is not None else run.get("data")
    scene, name = load_video_scene(source, int(run.get("downscale", 1)),
                                   int(run.get("scene_resolution", 96)))
    split = scene.eval_split()
    psnrs, ssims = [], []
    with torch.no_grad():
        for i in range(len(split)):
            out = render_camera_at(f.model, f.grid, split.cameras, i, float(split.times[i]),
                                   f.settings, scene.background)
            psnrs.append(psnr(out["rgb"], split.images[i]))
            ssims.append(ssim(out["rgb"], split.images[i]))
    return {"scene": name, "views": len(split), "psnr": sum(psnrs) / len(psnrs),
            "ssim": mean_or_none(ssims), "psnr_per_view": psnrs}


def load(checkpoint: str) -> Any:
    """The fitted field (`LoadedDynamic`: model, time-aware occupancy grid, settings)."""
    from fields.dynamic.model import LoadedDynamic

    return LoadedDynamic(checkpoint)


def view(checkpoint: str) -> Any:
    """`DynamicView` of the checkpoint (with a time slider)."""
    from fields.dynamic.view import DynamicView

    return DynamicView.from_checkpoint(checkpoint)


KIND = Kind(
    name="dynamic",
    summary="dynamic radiance field: density and colour that move, from multi-view video",
    register_cli=_register,
    evaluate=evaluate,
    view=view,
    load=load,
    render=render,
    export=None,
    exports=(),
)
