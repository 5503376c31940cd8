"""`fields fit sdf`, and the SDF parts of `fields render` / `fields export mesh` (registered by
`fields.cli`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console


def register(fit_app: typer.Typer, console: Console,
             error: Callable[[Exception], typer.Exit]) -> None:
    @fit_app.command("sdf")
    def fit_sdf_cmd(
        shape: Annotated[str, typer.Option(help="built-in procedural shape: csg, sphere, "
                                                "torus, box")] = "csg",
        mesh: Annotated[str | None, typer.Option(
            help="a mesh to fit instead (obj / ply / stl / glb / off, via trimesh)")] = None,
        points: Annotated[str | None, typer.Option(
            help="an oriented point cloud to fit instead (ply with nx ny nz, npy, ...): no "
                 "distances, IGR / SIREN losses")] = None,
        gt: Annotated[str | None, typer.Option(
            help="with --points: a mesh of the true surface, for the metrics")] = None,
        model: Annotated[str, typer.Option(help="hash (hash grid + MLP) or siren")] = "hash",
        output: Annotated[str | None, typer.Option(
            help="output folder (default outputs/<shape>/sdf/<time>)")] = None,
        steps: Annotated[int, typer.Option(help="step budget")] = 100_000,
        max_seconds: Annotated[float, typer.Option(help="training-time budget")] = 300.0,
        eval_every: Annotated[float, typer.Option(
            help="seconds between quick surface evaluations (0: none)")] = 60.0,
        resolution: Annotated[int, typer.Option(
            help="marching-cubes grid vertices per axis for mesh.ply and the metrics")] = 385,
        config: Annotated[str | None, typer.Option(
            help="JSON overrides of SDFConfig fields, e.g. '{\"lr\": 0.005}'")] = None,
        seed: Annotated[int, typer.Option(help="random seed")] = 0,
        threads: Annotated[int, typer.Option(help="torch threads (0: leave as is)")] = 0,
    ) -> None:
        """Fit a signed distance field to a built-in shape (exact distances) or a mesh
        (distances from open3d); writes checkpoint.pt, mesh.ply, metrics.json (chamfer_l1,
        f_score, normal_consistency in units of the truth's bounding-box diagonal) and
        renders/compare.png (truth | fit | fit normals)."""
        import time

        from fields.io import write_text_atomic
        from fields.sdf.field import SDFConfig
        from fields.sdf.run import builtin_target, fit_sdf, mesh_target, points_target

        if threads > 0:
            torch.set_num_threads(threads)
        if mesh and points:
            raise error(ValueError("give --mesh or --points, not both"))
        if gt and not points:
            raise error(ValueError("--gt goes with --points (the other inputs are their own "
                                   "ground truth)"))
        if steps < 1 or not max_seconds > 0 or resolution < 8:
            raise error(ValueError("--steps must be >= 1, --max-seconds > 0, --resolution >= 8"))
        try:
            cfg = SDFConfig.from_dict({**SDFConfig(model=model).to_dict(),
                                       **_json_object(config, "SDFConfig")})
            with console.status("preparing the supervision (surface, signed distances)..."):
                if points:
                    target = points_target(points, gt)
                elif mesh:
                    target = mesh_target(mesh, seed)
                else:
                    target = builtin_target(shape, seed=seed)
            out = Path(output or f"outputs/{target.name}/sdf/{time.strftime('%Y-%m-%d_%H%M%S')}")
            write_text_atomic(out / "config.json", json.dumps(
                {"shape": None if mesh or points else shape, "mesh": mesh, "points": points,
                 "gt": gt, "seed": seed,
                 "steps": steps, "max_seconds": max_seconds, "resolution": resolution,
                 "sdf": cfg.to_dict()}, indent=2) + "\n")
        except (ValueError, OSError, RuntimeError, json.JSONDecodeError) as e:
            raise error(e) from e
        what = (f"{len(target.points)} oriented points" if target.points is not None
                else f"{len(target.faces)} faces")
        console.print(f"fitting {target.name}: {what}, model {cfg.model}; "
                      f"budget {steps} steps / {max_seconds:g} s; output {out}")

        def on_eval(state, rec) -> None:
            if rec.get("chamfer_l1") is None:
                return
            console.log(f"step {rec['step']}, {rec['seconds']:.0f} s: Chamfer-L1 "
                        f"{100 * rec['chamfer_l1']:.3f}% of the diagonal (mesh at 129^3)")

        metrics = _fit(lambda: fit_sdf(target, cfg, out, steps, max_seconds, eval_every, seed,
                                        resolution, on_eval=on_eval), out, console, error)
        scores = (f"Chamfer-L1 {100 * metrics['chamfer_l1']:.3f}% of the diagonal, F-score@0.5% "
                  f"{metrics['f_score']:.4f}, normal consistency "
                  f"{metrics['normal_consistency']:.4f}; " if metrics.get("chamfer_l1") is not None
                  else "no ground truth, no metrics; ")
        console.print(
            f"{scores}{metrics['steps']} steps, {metrics['seconds']:.0f} s; mesh "
            f"{'watertight' if metrics['watertight'] else 'NOT watertight'}. Wrote {out}/")


    @fit_app.command("neus")
    def fit_neus_cmd(
        data: Annotated[str | None, typer.Option(
            help="posed images (+ masks): NeuS / IDR (cameras_sphere.npz), Blender, "
                 "instant-ngp, LLFF, COLMAP (default: the built-in procedural scene, whose "
                 "exact surface is known)")] = None,
        output: Annotated[str | None, typer.Option(
            help="output folder (default outputs/<scene>/neus/<time>)")] = None,
        steps: Annotated[int, typer.Option(help="step budget")] = 100_000,
        max_seconds: Annotated[float, typer.Option(help="training-time budget")] = 1200.0,
        eval_every: Annotated[float, typer.Option(
            help="seconds between quick surface evaluations (0: none)")] = 120.0,
        resolution: Annotated[int, typer.Option(help="marching-cubes grid for mesh.ply")] = 385,
        scene_resolution: Annotated[int, typer.Option(
            help="built-in scene's image size")] = 128,
        downscale: Annotated[int, typer.Option(help="downscale images by this factor")] = 1,
        config: Annotated[str | None, typer.Option(
            help="JSON overrides of NeusConfig fields")] = None,
        seed: Annotated[int, typer.Option(help="random seed")] = 0,
        threads: Annotated[int, typer.Option(help="torch threads (0: leave as is)")] = 0,
    ) -> None:
        """Fit a surface to posed images (NeuS: SDF-to-opacity volume rendering with a learned
        sharpness, eikonal term, masks from the images' alpha); writes checkpoint.pt (an SDF
        checkpoint: `fields export mesh`, `fields render`, `fields view` take it), mesh.ply,
        metrics.json (surface metrics when the truth is known) and renders/compare.png."""
        import time

        from fields.cli import _load_nerf_data
        from fields.sdf.neus import NeusConfig
        from fields.sdf.run import fit_neus, tabletop_truth

        if threads > 0:
            torch.set_num_threads(threads)
        if steps < 1 or not max_seconds > 0 or resolution < 8:
            raise error(ValueError("--steps must be >= 1, --max-seconds > 0, --resolution >= 8"))
        try:
            cfg = NeusConfig.from_dict(_json_object(config, "NeusConfig"))
            scene, name = _load_nerf_data(data, downscale, scene_resolution)
            truth = tabletop_truth() if data is None else None
            out = Path(output or f"outputs/{name}/neus/{time.strftime('%Y-%m-%d_%H%M%S')}")
        except (ValueError, OSError, TypeError, json.JSONDecodeError) as e:
            raise error(e) from e
        console.print(f"fitting {name}: {len(scene.train)} views "
                      f"{scene.train.cameras.width}x{scene.train.cameras.height}"
                      f"{' with masks' if scene.train.alpha is not None else ''}; budget "
                      f"{steps} steps / {max_seconds:g} s; output {out}")

        def on_eval(state, rec) -> None:
            if rec.get("chamfer_l1") is not None:
                console.log(f"step {rec['step']}, {rec['seconds']:.0f} s: Chamfer-L1 "
                            f"{100 * rec['chamfer_l1']:.3f}% of the diagonal (mesh at 129^3)")

        metrics = _fit(lambda: fit_neus(scene, cfg, out, steps, max_seconds, eval_every, seed,
                                         resolution, truth=truth, on_eval=on_eval),
                       out, console, error)
        scores = (f"Chamfer-L1 {100 * metrics['chamfer_l1']:.3f}% of the diagonal, F-score@0.5% "
                  f"{metrics['f_score']:.4f}; " if metrics.get("chamfer_l1") is not None else "")
        console.print(f"{scores}held-out view PSNR {metrics['psnr_view0']:.2f} dB; "
                      f"{metrics['steps']} steps, {metrics['seconds']:.0f} s. Wrote {out}/")


def _fit(run: Callable[[], dict], out: Path, console: Console,
         error: Callable[[Exception], typer.Exit]) -> dict:
    """Runs a fit; Ctrl-C says where the checkpoint is (exit 130), bad input exits 2."""
    try:
        return run()
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/yellow]: checkpoint written to {out}/checkpoint.pt")
        raise typer.Exit(130) from None
    except (ValueError, OSError) as e:
        raise error(e) from e


def _json_object(text: str | None, what: str) -> dict:
    """The --config JSON object (empty without one)."""
    d = json.loads(text) if text else {}
    if not isinstance(d, dict):
        raise ValueError(f"--config must be a JSON object of {what} fields, got {text}")
    return d


def export_sdf_mesh(checkpoint: str, resolution: int, out: str | None,
                    console: Console) -> Path:
    """`fields export mesh` for an SDF checkpoint: the zero level set, in chunks."""
    from rich.progress import Progress

    from fields.mesh import extract_surface, save_mesh
    from fields.sdf.field import load_sdf

    field, _ = load_sdf(checkpoint)
    with Progress(console=console) as progress:
        task = progress.add_task(f"marching cubes, {resolution}^3", total=None)
        verts, faces = extract_surface(
            field, field.aabb, resolution,
            progress=lambda i, n: progress.update(task, completed=i, total=n))
    colours = None
    if hasattr(field, "color_network") and len(verts):  # NeuS: its radiance head
        from fields.sdf.neus import vertex_colours

        colours = vertex_colours(field, torch.from_numpy(verts))
    target = Path(out) if out else Path(checkpoint).with_name("mesh.ply")
    save_mesh(target, verts, faces, colours)
    console.print(f"wrote {target}: {len(verts)} vertices, {len(faces)} faces"
                  f"{', coloured' if colours is not None else ''}")
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
