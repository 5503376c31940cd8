"""The radiance-field kind: `fields fit nerf`, and render / export / eval / view of its
checkpoints (registered in `fields.kinds`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
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
    cameras, fps = None, float(request.fps)
    if request.camera_path is not None:
        from fields.render.paths import read_camera_path

        cameras, fps = read_camera_path(request.camera_path)
    n = request.frames if cameras is None else len(cameras)
    with Progress(console=console) as progress:
        task = progress.add_task("rendering", total=n)
        video = render_path(
            nerf.model, nerf.grid, nerf.settings, nerf.info, request.path, request.frames,
            scale=request.scale, progress=lambda i, n: progress.update(task, completed=i),
            cameras=cameras,
        )
    write_video(target, video, fps=fps)
    say(f"wrote {target} ({n} frames, {video[0].shape[1]}x{video[0].shape[0]}, {fps:g} fps)")
    return target


def _back(request: ExportRequest, info: dict[str, Any]) -> dict[str, Any] | None:
    """The capture transform to undo, or None (none stored, or --normalised)."""
    return None if request.normalised else info.get("transform")


def export(request: ExportRequest) -> Path:
    """``mesh``: the density iso-surface by marching cubes, coloured by the field seen from
    the training views; ``pointcloud``: each training view's expected depth where it is
    opaque, coloured; ``cameras``: the training cameras. In the capture's own coordinates
    when the data had a capture transform (unless `ExportRequest.normalised`)."""
    from fields.nerf.model import LoadedNerf

    nerf = LoadedNerf(request.checkpoint)
    if request.what == "cameras":
        return _export_cameras(request, nerf.info)
    if request.what == "pointcloud":
        return _export_pointcloud(request, nerf)
    return _export_mesh(request, nerf)


def _export_mesh(request: ExportRequest, nerf: Any) -> Path:
    from fields.command import console, say
    from fields.mesh import save_mesh
    from fields.nerf.model import extract_nerf_mesh, views_from_info
    from fields.render.cameras import to_capture

    with console.status(f"sampling the density on a {request.resolution}^3 grid..."):
        verts, faces, colours = extract_nerf_mesh(
            nerf.model, nerf.model.aabb, request.resolution, request.threshold, grid=nerf.grid,
            settings=nerf.settings, views=views_from_info(nerf.info),
        )
    if len(faces) == 0:
        raise ValueError(f"{request.checkpoint}: no surface: the density never reaches the "
                         f"threshold {request.threshold:g} inside the scene's box at "
                         f"{request.resolution}^3 (try a lower --threshold, e.g. "
                         f"{request.threshold / 4:g}, or train longer); nothing written")
    transform = _back(request, nerf.info)
    if transform is not None:
        verts = to_capture(verts, transform).astype(np.float32)
    target = Path(request.output) if request.output else \
        Path(request.checkpoint).with_name("mesh.ply")
    save_mesh(target, verts, faces, colours)
    say(f"wrote {target}: {len(verts)} vertices, {len(faces)} faces"
        f"{' (capture coordinates)' if transform is not None else ''}")
    return target


def _camera_table(info: dict[str, Any]) -> dict[str, Any]:
    cams = info.get("cameras") or info.get("views")
    if not cams:
        raise ValueError("the checkpoint stores no cameras (written before cameras were kept: "
                         "fit it again)")
    return cams


def _export_cameras(request: ExportRequest, info: dict[str, Any]) -> Path:
    from fields.command import say
    from fields.data.pointclouds import write_points
    from fields.io import write_json
    from fields.render.cameras import cameras_to_capture

    cams = _camera_table(info)
    c2w = np.asarray(cams["c2w"], np.float64)
    transform = _back(request, info)
    if transform is not None:
        c2w = cameras_to_capture(c2w, transform)
    target = Path(request.output) if request.output else \
        Path(request.checkpoint).with_name("cameras.json")
    names = cams.get("names") or [f"view_{i}" for i in range(len(c2w))]
    if target.suffix.lower() == ".json":
        write_json(target, {
            "convention": "OpenGL camera-to-world (x right, y up, looking down -z)",
            "coordinates": "capture" if transform is not None else "scene",
            "width": cams["width"], "height": cams["height"],
            "cameras": [{"name": n, "c2w": c2w[i].tolist(), "fx": cams["fx"][i],
                         "fy": cams["fy"][i], "cx": cams["cx"][i], "cy": cams["cy"][i]}
                        for i, n in enumerate(names)]})
    elif target.suffix.lower() in (".ply", ".npy", ".pcd"):
        write_points(target, c2w[:, :, 3].astype(np.float32),
                     {"normals": (-c2w[:, :, 2]).astype(np.float32)} if target.suffix.lower()
                     != ".npy" else None)
    else:
        raise ValueError(f"{target}: unknown camera file suffix {target.suffix!r}; use .json "
                         "or .ply (.npy, .pcd: the centres)")
    say(f"wrote {target}: {len(c2w)} cameras"
        f"{' (capture coordinates)' if transform is not None else ''}")
    return target


def _export_pointcloud(request: ExportRequest, nerf: Any) -> Path:
    from rich.progress import Progress

    from fields.command import console, say
    from fields.data.pointclouds import write_points
    from fields.nerf.model import render_camera, views_from_info
    from fields.render.cameras import to_capture

    views = views_from_info(nerf.info)
    if views is None:
        raise ValueError(f"{request.checkpoint}: the checkpoint stores no cameras")
    background = torch.tensor(nerf.info["background"], dtype=torch.float32)
    pts, cols = [], []
    with Progress(console=console) as progress:
        task = progress.add_task("rendering depth", total=len(views))
        for i in range(len(views)):  # a view's rays at once
            out = render_camera(nerf.model, nerf.grid, views, i, nerf.settings, background)
            o, d = views.pixel_rays(i)
            opaque = out["opacity"].reshape(-1) > 0.95
            depth = out["depth"].reshape(-1, 1)  # already divided by the opacity
            pts.append((o + d * depth)[opaque])
            cols.append(out["rgb"].reshape(-1, 3)[opaque])
            progress.update(task, completed=i + 1)
    xyz = torch.cat(pts).numpy().astype(np.float64)
    rgb = (torch.cat(cols).clamp(0, 1) * 255 + 0.5).byte().numpy()
    if len(xyz) == 0:
        raise ValueError(f"{request.checkpoint}: no opaque pixel in any training view (opacity "
                         "> 0.95): the field is empty; train longer; nothing written")
    lo, hi = np.asarray(nerf.info["aabb"])
    if nerf.info.get("unbounded"):  # the background, far away, would swamp the object
        keep = np.all((xyz >= 2 * lo) & (xyz <= 2 * hi), axis=1)
        xyz, rgb = xyz[keep], rgb[keep]
    transform = _back(request, nerf.info)
    if transform is not None:
        xyz = to_capture(xyz, transform)
    target = Path(request.output) if request.output else \
        Path(request.checkpoint).with_name("pointcloud.ply")
    write_points(target, xyz.astype(np.float32),
                 {"colors": rgb} if target.suffix.lower() != ".npy" else None)
    say(f"wrote {target}: {len(xyz)} points"
        f"{' (capture coordinates)' if transform is not None else ''}")
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
    cameras = nerf.aligned(split.cameras)  # into the refined poses' frame, if refined
    psnrs, ssims = [], []
    with torch.no_grad():
        for i in range(len(split)):
            out = render_camera(nerf.model, nerf.grid, cameras, i, nerf.settings,
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
    exports=("mesh", "pointcloud", "cameras"),
)
