"""`fields fit sdf`, `fields fit neus`, and the SDF parts of `fields render`, `fields export
mesh` and `fields eval` (registered by `fields.sdf.kind`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from rich.console import Console

from fields import distributed
from fields.batch import items_in
from fields.command import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_SEED,
    CheckpointEveryOpt,
    ConfigOpt,
    JobsOpt,
    MaxSecondsOpt,
    OutputOpt,
    OverwriteOpt,
    RayOpt,
    ResumeOpt,
    RunOptions,
    SeedOpt,
    StepsOpt,
    ThreadsOpt,
    console,
    error,
    fit_many,
    guarded,
    load_posed_images,
    parse_config,
    say,
    set_threads,
    write_run_config,
)


def register(app: typer.Typer, fit_app: typer.Typer, bench_app: typer.Typer) -> None:
    """Adds `fields fit sdf` and `fields fit neus`."""
    fit_app.command("sdf")(fit_sdf_cmd)
    fit_app.command("neus")(fit_neus_cmd)


def fit_sdf_cmd(
    ctx: typer.Context,
    shape: Annotated[str, typer.Option(help="built-in procedural shape: csg, sphere, torus, "
                                            "box")] = "csg",
    mesh: Annotated[str | None, typer.Option(
        help="a mesh to fit instead (obj / ply / stl / glb / off, via trimesh)")] = None,
    points: Annotated[str | None, typer.Option(
        help="an oriented point cloud to fit instead (ply with nx ny nz, npy, ...): no "
             "distances, IGR / SIREN losses")] = None,
    gt: Annotated[str | None, typer.Option(
        help="with --points: a mesh of the true surface, for the metrics")] = None,
    output: OutputOpt = None,
    max_seconds: MaxSecondsOpt = 300.0,
    steps: StepsOpt = 100_000,
    seed: SeedOpt = DEFAULT_SEED,
    config: ConfigOpt = None,
    resume: ResumeOpt = None,
    threads: ThreadsOpt = 0,
    overwrite: OverwriteOpt = False,
    checkpoint_every: CheckpointEveryOpt = DEFAULT_CHECKPOINT_EVERY,
    model: Annotated[str, typer.Option(help="hash (hash grid + MLP) or siren")] = "hash",
    eval_every: Annotated[float, typer.Option(
        help="seconds between quick surface evaluations (0: none)")] = 60.0,
    resolution: Annotated[int, typer.Option(
        help="marching-cubes grid vertices per axis for mesh.ply and the metrics")] = 385,
    meshes: Annotated[str | None, typer.Option(
        help="a folder of meshes: fit each as its own job (a batch: manifest.jsonl, "
             "resumable)")] = None,
    jobs: JobsOpt = 0,
    ray: RayOpt = None,
) -> None:
    """Fit a signed distance field to a built-in shape (exact distances), a mesh (distances
    from open3d) or an oriented point cloud; writes config.json, checkpoint.pt, mesh.ply,
    metrics.json (chamfer_l1, f_score, normal_consistency in units of the truth's bounding-box
    diagonal) and renders/compare.png (truth | fit | fit normals). With --meshes DIR, every
    mesh of DIR is fitted as its own job into --output/<mesh name>/ (local pool, or Ray)."""
    if meshes is not None:
        if mesh or points or resume:
            raise error("--meshes fits a folder: not with --mesh, --points or --resume (a "
                        "rerun of the batch skips the items already done)")
        with guarded():
            files = items_in(meshes, (".obj", ".ply", ".stl", ".glb", ".gltf", ".off"),
                             "meshes")
            fit_many(ctx, ["fit", "sdf"], "--mesh", files, output, Path(meshes).name, jobs, ray,
                     ["chamfer_l1", "f_score", "steps"], ["meshes"])
        return
    if jobs or ray is not None:
        raise error("--jobs and --ray go with --meshes (a folder of meshes)")
    from fields.sdf.field import SDFConfig
    from fields.sdf.run import builtin_target, fit_sdf, mesh_target, points_target

    opts = RunOptions(output, max_seconds, steps, seed, config, resume, threads, overwrite,
                      checkpoint_every)
    set_threads(threads)
    if mesh and points:
        raise error("give --mesh or --points, not both")
    if gt and not points:
        raise error("--gt goes with --points (the other inputs are their own ground truth)")
    if resolution < 8:
        raise error("--resolution must be >= 8")
    with guarded():
        opts.check("sdf")
        cfg = SDFConfig.from_dict({**SDFConfig(model=model).to_dict(),
                                   **parse_config(config, "SDFConfig")})
        with console.status("preparing the supervision (surface, signed distances)..."):
            if points:
                target = points_target(points, gt)
            elif mesh:
                target = mesh_target(mesh, seed)
            else:
                target = builtin_target(shape, seed=seed)
        out = opts.folder(target.name, "sdf")
        write_run_config(out, "sdf", target.name, opts, cfg.to_dict(),
                         shape=None if mesh or points else shape, mesh=mesh, points=points,
                         gt=gt, resolution=resolution, eval_every=eval_every)
    what = (f"{len(target.points)} oriented points" if target.points is not None
            else f"{len(target.faces)} faces")
    say(f"fitting {target.name}: {what}, model {cfg.model}; budget {steps} steps / "
        f"{max_seconds:g} s; output {out}")
    with guarded(out):
        metrics = fit_sdf(target, cfg, out, steps, max_seconds, eval_every, seed, resolution,
                          on_eval=_log_surface, resume=resume,
                          checkpoint_every=checkpoint_every, log=say)
    if not distributed.is_main():
        return
    scores = (f"Chamfer-L1 {100 * metrics['chamfer_l1']:.3f}% of the diagonal, F-score@0.5% "
              f"{metrics['f_score']:.4f}, normal consistency "
              f"{metrics['normal_consistency']:.4f}; " if metrics.get("chamfer_l1") is not None
              else "no ground truth, no metrics; ")
    say(f"{scores}{metrics['steps']} steps, {metrics['seconds']:.0f} s; mesh "
        f"{'watertight' if metrics['watertight'] else 'NOT watertight'}. Wrote {out}/")


def fit_neus_cmd(
    data: Annotated[str | None, typer.Option(
        help="posed images (+ masks): NeuS / IDR (cameras_sphere.npz), Blender, instant-ngp, "
             "LLFF, COLMAP (default: the built-in procedural scene, whose exact surface is "
             "known)")] = None,
    output: OutputOpt = None,
    max_seconds: MaxSecondsOpt = 1200.0,
    steps: StepsOpt = 100_000,
    seed: SeedOpt = DEFAULT_SEED,
    config: ConfigOpt = None,
    resume: ResumeOpt = None,
    threads: ThreadsOpt = 0,
    overwrite: OverwriteOpt = False,
    checkpoint_every: CheckpointEveryOpt = DEFAULT_CHECKPOINT_EVERY,
    eval_every: Annotated[float, typer.Option(
        help="seconds between quick surface evaluations (0: none)")] = 120.0,
    resolution: Annotated[int, typer.Option(help="marching-cubes grid for mesh.ply")] = 385,
    scene_resolution: Annotated[int, typer.Option(help="built-in scene's image size")] = 128,
    downscale: Annotated[int, typer.Option(help="downscale images by this factor")] = 1,
    model: Annotated[str, typer.Option(
        help="neus, or ref-neus: colour from the view direction mirrored about the normal "
             "(shiny objects); Ref-NeuS's reflection score, down-weighting pixels other views "
             "disagree with, is --config '{\"reflection_score\": true}' (measured not to "
             "help: README)")] = "neus",
    scene: Annotated[str, typer.Option(
        help="the built-in scene without --data: tabletop, glossy (reflective objects on a "
             "polished table), shiny (the same objects on a matte table) or chrome (shiny with a "
             "mirror box for the sphere)")
    ] = "tabletop",
) -> None:
    """Fit a surface to posed images (NeuS: SDF-to-opacity volume rendering with a learned
    sharpness, eikonal term, masks from the images' alpha); writes config.json, checkpoint.pt
    (an SDF checkpoint: `fields export mesh`, `fields render`, `fields view`, `fields eval`
    take it), mesh.ply, metrics.json (surface metrics when the truth is known) and
    renders/compare.png."""
    from fields.scenes.tabletop import SCENES
    from fields.sdf.neus import NeusConfig
    from fields.sdf.run import fit_neus, scene_objects, scene_truth

    opts = RunOptions(output, max_seconds, steps, seed, config, resume, threads, overwrite,
                      checkpoint_every)
    set_threads(threads)
    if resolution < 8:
        raise error("--resolution must be >= 8")
    if model not in ("neus", "ref-neus"):
        raise error(f"--model: expected neus or ref-neus, got {model!r}")
    if scene not in SCENES:
        raise error(f"--scene: expected one of {', '.join(SCENES)}, got {scene!r}")
    with guarded():
        opts.check("sdf", "fit neus")
        given = parse_config(config, "NeusConfig")
        if model == "ref-neus":  # Ref-NeuS's radiance; its score on request (README)
            given = {"reflected": True, **given}
        cfg = NeusConfig.from_dict(given)
        images, name = load_posed_images(data, downscale, scene_resolution, scene)
        truth = scene_truth(scene) if data is None else None
        objects = scene_objects(scene) if data is None else None
        out = opts.folder(name, "neus" if model == "neus" else "ref_neus")
        write_run_config(out, "neus", name, opts, cfg.to_dict(), data=data,
                         downscale=downscale, scene_resolution=scene_resolution,
                         resolution=resolution, eval_every=eval_every, model=model,
                         scene=scene if data is None else None)
    say(f"fitting {name} ({model}): {len(images.train)} views {images.train.cameras.width}x"
        f"{images.train.cameras.height}"
        f"{' with masks' if images.train.alpha is not None else ''}; "
        f"budget {steps} steps / {max_seconds:g} s; output {out}")
    with guarded(out):
        metrics = fit_neus(images, cfg, out, steps, max_seconds, eval_every, seed, resolution,
                           truth=truth, objects=objects, on_eval=_log_surface, resume=resume,
                           checkpoint_every=checkpoint_every, log=say)
    if not distributed.is_main():
        return
    scores = (f"Chamfer-L1 {100 * metrics['chamfer_l1']:.3f}% of the diagonal, F-score@0.5% "
              f"{metrics['f_score']:.4f}; " if metrics.get("chamfer_l1") is not None else "")
    say(f"{scores}held-out view PSNR {metrics['psnr_view0']:.2f} dB; {metrics['steps']} steps, "
        f"{metrics['seconds']:.0f} s. Wrote {out}/")
    per = {k: v["chamfer_l1"] for k, v in metrics.get("objects", {}).items()
           if v["chamfer_l1"] is not None}
    if per:
        say("Chamfer-L1 per object: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in per.items()))


def _log_surface(state: Any, rec: dict[str, Any]) -> None:
    """Logs a quick surface evaluation made while training."""
    if rec.get("chamfer_l1") is not None:
        console.log(f"step {rec['step']}, {rec['seconds']:.0f} s: Chamfer-L1 "
                    f"{100 * rec['chamfer_l1']:.3f}% of the diagonal (mesh at 129^3)")


def evaluate_checkpoint(checkpoint: str, data: str | None) -> dict[str, Any]:
    """`fields eval` of an SDF checkpoint: the zero level set (at the run's resolution, 385 by
    default) against the true surface: the mesh `data` when given, else what the run was
    fitted to (its config.json: a built-in shape, a mesh, the --gt of a point cloud, the
    built-in scene of a NeuS run). ValueError when no true surface is known."""
    from fields.checkpoint import run_config
    from fields.mesh import extract_surface, is_watertight, load_mesh, surface_metrics
    from fields.sdf.field import load_sdf
    from fields.sdf.run import builtin_target, scene_objects, scene_truth

    field, _ = load_sdf(checkpoint)
    run = run_config(checkpoint)
    resolution = int(run.get("resolution", 385))
    objects = None
    if data is not None:
        truth, source = load_mesh(data), data
    elif run.get("kind") == "neus":
        if run.get("data") is not None:
            raise ValueError(f"{checkpoint}: fitted to {run['data']}, whose true surface is not "
                             "known; give a mesh of it with --data")
        scene = run.get("scene") or "tabletop"
        truth, source = scene_truth(scene), f"built-in scene {scene!r}"
        objects = scene_objects(scene)
    elif run.get("mesh"):
        truth, source = load_mesh(run["mesh"]), run["mesh"]
    elif run.get("gt"):
        truth, source = load_mesh(run["gt"]), run["gt"]
    elif run.get("shape"):
        target = builtin_target(run["shape"], seed=int(run.get("seed", 0)))
        truth, source = (target.vertices, target.faces), f"built-in shape {run['shape']}"
    else:
        where = Path(checkpoint).with_name("config.json")
        raise ValueError(f"{checkpoint}: no true surface to measure against ({where} names "
                         "no shape, mesh or gt); give a mesh with --data")
    sdf = field.sdf if hasattr(field, "color_network") else field
    verts, faces = extract_surface(sdf, field.aabb, resolution)
    metrics = surface_metrics((verts, faces), truth, objects=objects)
    return {"truth": source, "resolution": resolution, "vertices": len(verts),
            "faces": len(faces), "watertight": is_watertight(faces), **metrics}


def export_sdf_mesh(checkpoint: str, resolution: int, out: str | None,
                    console: Console, normalised: bool = False) -> Path:
    """`fields export mesh` for an SDF checkpoint: the zero level set, in chunks; in the
    capture's coordinates when the fit's data had a capture transform (NeuS on a processed
    capture or a nerfstudio file) and not `normalised`."""
    from rich.progress import Progress

    from fields.mesh import extract_surface, save_mesh
    from fields.render.cameras import to_capture
    from fields.sdf.field import load_sdf

    field, payload = load_sdf(checkpoint)
    transform = None if normalised else payload["sdf"].get("transform")
    with Progress(console=console) as progress:
        task = progress.add_task(f"marching cubes, {resolution}^3", total=None)
        verts, faces = extract_surface(
            field, field.aabb, resolution,
            progress=lambda i, n: progress.update(task, completed=i, total=n))
    if len(faces) == 0:
        raise ValueError(f"{checkpoint}: no surface: the field has no zero crossing on the "
                         f"{resolution}^3 grid of its box (a field that never changes sign: "
                         "train longer, or check the fit's metrics.json); nothing written")
    colours = None
    if hasattr(field, "color_network") and len(verts):  # NeuS: its radiance head
        from fields.sdf.neus import vertex_colours

        colours = vertex_colours(field, torch.from_numpy(verts))
    if transform is not None:
        verts = to_capture(verts, transform).astype(np.float32)
    target = Path(out) if out else Path(checkpoint).with_name("mesh.ply")
    save_mesh(target, verts, faces, colours)
    console.print(f"wrote {target}: {len(verts)} vertices, {len(faces)} faces"
                  f"{', coloured' if colours is not None else ''}"
                  f"{' (capture coordinates)' if transform is not None else ''}")
    return target


def render_sdf_video(checkpoint: str, out: str | None, frames: int, fps: int, size: int,
                     console: Console, path: str = "orbit") -> Path:
    """`fields render` for an SDF checkpoint: a sphere-traced, shaded orbit."""
    from rich.progress import Progress

    from fields.io import write_video
    from fields.sdf.field import load_sdf
    from fields.sdf.run import orbit_cameras, render_view

    field, _ = load_sdf(checkpoint)
    target = Path(out or "turntable.mp4")
    if target.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"{target}: unknown video extension; use .mp4 or .gif")
    cams = orbit_cameras(field.aabb, frames, size, path)
    video = []
    with Progress(console=console) as progress, torch.no_grad():
        task = progress.add_task("sphere tracing", total=frames)
        for i in range(frames):
            video.append(render_view(field, cams, i, field.aabb).clamp(0, 1))
            progress.update(task, completed=i + 1)
    write_video(target, video, fps=fps)
    console.print(f"wrote {target} ({frames} frames, {size}x{size})")
    return target
