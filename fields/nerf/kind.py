"""The radiance-field kind: `fields fit nerf`, and render / export / eval / view of its
checkpoints (registered in `fields.kinds`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fields.kinds import ExportRequest, Kind, RenderRequest


def _register(app: Any, fit_app: Any, bench_app: Any) -> None:
    from fields.nerf import cli

    cli.register(app, fit_app, bench_app)


def render(request: RenderRequest) -> Path:
    """A video along a camera path (orbit or spiral) around the scene."""
    from rich.progress import Progress

    from fields.command import console, say
    from fields.io import write_video
    from fields.nerf.model import LoadedNerf, render_path

    target = Path(request.output or "video.mp4")
    if target.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"{target}: unknown video extension; use .mp4 or .gif")
    nerf = LoadedNerf(request.checkpoint)
    with Progress(console=console) as progress:
        task = progress.add_task("rendering", total=request.frames)
        video = render_path(
            nerf.model, nerf.grid, nerf.settings, nerf.info, request.path, request.frames,
            scale=request.scale, progress=lambda i, n: progress.update(task, completed=i),
        )
    write_video(target, video, fps=request.fps)
    say(f"wrote {target} ({request.frames} frames, {video[0].shape[1]}x{video[0].shape[0]})")
    return target


def export(request: ExportRequest) -> Path:
    """The density iso-surface by marching cubes, coloured by the field seen from the
    training views."""
    from fields.command import console, say
    from fields.mesh import save_mesh
    from fields.nerf.model import LoadedNerf, extract_nerf_mesh, views_from_info

    nerf = LoadedNerf(request.checkpoint)
    with console.status(f"sampling the density on a {request.resolution}^3 grid..."):
        verts, faces, colours = extract_nerf_mesh(
            nerf.model, nerf.model.aabb, request.resolution, request.threshold, grid=nerf.grid,
            settings=nerf.settings, views=views_from_info(nerf.info),
        )
    target = Path(request.output) if request.output else \
        Path(request.checkpoint).with_name("mesh.ply")
    save_mesh(target, verts, faces, colours)
    say(f"wrote {target}: {len(verts)} vertices, {len(faces)} faces")
    return target


def evaluate(checkpoint: str, data: str | None) -> dict[str, Any]:
    """PSNR and SSIM on every held-out view of the scene the checkpoint was fitted to (from
    its run's config.json), or of `data`."""
    from fields.checkpoint import run_config
    from fields.command import load_posed_images
    from fields.metrics import mean_or_none, psnr, ssim, ssim_note
    from fields.nerf.model import LoadedNerf, render_camera

    nerf = LoadedNerf(checkpoint)
    run = run_config(checkpoint)
    source = data if data is not None else run.get("data")
    scene, name = load_posed_images(source, int(run.get("downscale", 1)),
                                    int(run.get("scene_resolution", 128)))
    split = scene.eval_split()
    psnrs, ssims = [], []
    with torch.no_grad():
        for i in range(len(split)):
            out = render_camera(nerf.model, nerf.grid, split.cameras, i, nerf.settings,
                                scene.background)
            psnrs.append(psnr(out["rgb"], split.images[i]))
            ssims.append(ssim(out["rgb"], split.images[i]))
    note = ssim_note(split.cameras.height, split.cameras.width)
    return {"scene": name, "views": len(split), "psnr": sum(psnrs) / len(psnrs),
            "ssim": mean_or_none(ssims), "psnr_per_view": psnrs,
            **({"notes": [note]} if note else {})}


def load(checkpoint: str) -> Any:
    """The fitted field of the checkpoint (`LoadedNerf`: model, occupancy grid, render settings)."""
    from fields.nerf.model import LoadedNerf

    return LoadedNerf(checkpoint)


def view(checkpoint: str) -> Any:
    """`NerfView` of the checkpoint."""
    from fields.nerf.view import NerfView

    return NerfView.from_checkpoint(checkpoint)


KIND = Kind(
    name="nerf",
    summary="radiance field: density and view-dependent colour from posed images",
    register_cli=_register,
    evaluate=evaluate,
    view=view,
    load=load,
    render=render,
    export=export,
)
