"""`fields fit sdf`: a signed distance field from a built-in shape or a mesh, with its
outputs (checkpoint, mesh, metrics, pictures)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fields import distributed
from fields.mesh import extract_surface, is_watertight, sample_surface, save_mesh, surface_metrics
from fields.sdf.field import (
    PointCloudTask,
    SDFConfig,
    SDFField,
    SDFTask,
    SurfaceSamples,
    mesh_samples,
)

CUBE = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


class Target:
    """What is fitted: the ground-truth surface (a mesh; None when unknown), the box, the
    supervision (signed distances in `samples`, or an oriented point cloud in `points` /
    `normals`), and a signed distance function to render the truth with (None: unknown)."""

    def __init__(self, name: str, vertices: np.ndarray | None, faces: np.ndarray | None,
                 aabb: torch.Tensor, samples: SurfaceSamples | None,
                 sdf: Callable[[torch.Tensor], torch.Tensor] | None,
                 points: torch.Tensor | None = None,
                 normals: torch.Tensor | None = None) -> None:
        self.name, self.vertices, self.faces = name, vertices, faces
        self.aabb, self.samples, self.sdf = aabb, samples, sdf
        self.points, self.normals = points, normals


def builtin_target(shape: str, gt_resolution: int = 385, seed: int = 0) -> Target:
    """A procedural shape: its exact SDF supervises, its surface meshed at `gt_resolution` is
    the ground truth for the metrics."""
    from fields.scenes.shapes import builtin_shape

    f = builtin_shape(shape)
    verts, faces = extract_surface(f, CUBE, gt_resolution)
    surface, _ = sample_surface(verts, faces, 2**18, seed)
    samples = SurfaceSamples.from_function(f, torch.from_numpy(surface).float(), CUBE, seed=seed)
    return Target(shape, verts, faces, CUBE.clone(), samples, f)


def mesh_target(path: str, seed: int = 0) -> Target:
    """A mesh file: signed distances by open3d, the mesh itself is the ground truth. The box is
    a cube around the mesh, 10% larger than its longest side."""
    from fields.mesh import load_mesh
    from fields.sdf.field import _open3d

    verts, faces = load_mesh(path)
    lo, hi = verts.min(0), verts.max(0)
    centre, half = (lo + hi) / 2, 0.55 * float((hi - lo).max())
    if not half > 0:
        raise ValueError(f"{path}: the mesh is flat or a point (extent {hi - lo})")
    aabb = torch.tensor(np.stack([centre - half, centre + half]), dtype=torch.float32)
    samples = mesh_samples(verts, faces, aabb, seed=seed, source=path)
    o3d = _open3d(path)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(verts.astype(np.float32)),
                        o3d.core.Tensor(faces.astype(np.uint32)))

    def sdf(p: torch.Tensor) -> torch.Tensor:
        d = scene.compute_signed_distance(o3d.core.Tensor(p.float().numpy())).numpy()
        return torch.from_numpy(np.asarray(d, dtype=np.float32))

    return Target(Path(path).stem, verts, faces, aabb, samples, sdf)


def points_target(path: str, gt: str | None = None) -> Target:
    """An oriented point cloud (`fields.data.pointclouds.read_points`: normals as the fields
    nx ny nz, or .npy columns 3-5); `gt`, a mesh of the true surface for the metrics. The box
    is a cube 10% larger than the cloud's longest side."""
    from fields.data.pointclouds import read_points
    from fields.mesh import load_mesh

    xyz, fields = read_points(path, with_fields=True)
    names = next((n for n in (("nx", "ny", "nz"), ("c3", "c4", "c5"))
                  if all(k in fields for k in n)), None)
    if names is None:
        raise ValueError(f"{path}: no normals (fields nx ny nz, or .npy columns 3-5); "
                         f"--points needs an oriented point cloud; it has fields "
                         f"{sorted(fields) or 'none'}")
    normals = np.stack([np.asarray(fields[k], dtype=np.float32) for k in names], axis=1)
    lengths = np.linalg.norm(normals, axis=1)
    if not np.isfinite(normals).all() or (lengths < 1e-6).any():
        raise ValueError(f"{path}: fields {' '.join(names)}: normals must be finite and "
                         "non-zero")
    lo, hi = xyz.min(0), xyz.max(0)
    centre, half = (lo + hi) / 2, 0.55 * float((hi - lo).max())
    if not half > 0:
        raise ValueError(f"{path}: the points are all at one place")
    aabb = torch.tensor(np.stack([centre - half, centre + half]), dtype=torch.float32)
    verts = faces = None
    if gt is not None:
        verts, faces = load_mesh(gt)
    return Target(Path(path).stem, verts, faces, aabb, None, None,
                  torch.from_numpy(np.asarray(xyz, dtype=np.float32)), torch.from_numpy(normals))


def evaluator(target: Target, resolution: int,
              quick_resolution: int = 129) -> Callable[[SDFField, bool], dict[str, float]]:
    """Scores a field's zero level set against the target's surface (quick while training,
    at `resolution` at the end)."""

    def evaluate(field: SDFField, final: bool) -> dict[str, float]:
        if target.vertices is None:
            return {}
        res = resolution if final else quick_resolution
        verts, faces = extract_surface(field, target.aabb, res)
        m = surface_metrics((verts, faces), (target.vertices, target.faces),
                            n_points=100_000 if final else 20_000)
        return {k: m[k] for k in ("chamfer_l1", "f_score", "normal_consistency")}

    return evaluate


def orbit_cameras(aabb: torch.Tensor, n: int, size: int, path: str = "orbit") -> Any:
    """`n` cameras on an orbit (or spiral) around the box (z up, 25 degrees above the
    horizon), looking at its centre, `size` pixels square, 40-degree field of view."""
    from fields.render.cameras import Cameras
    from fields.render.paths import PATHS, orbit_path

    if path not in PATHS:
        raise ValueError(f"unknown camera path {path!r}; expected one of {sorted(PATHS)}")
    radius = 1.6 * float((aabb[1] - aabb[0]).norm()) / 2
    c2w = orbit_path(aabb.mean(0), radius, torch.tensor([0.0, 0.0, 1.0]), n,
                     elevation_deg=25.0, spiral_deg=PATHS[path])
    focal = 0.5 * size / math.tan(math.radians(40) / 2)
    return Cameras(c2w, focal, focal, size / 2, size / 2, size, size)


def render_view(sdf: Callable[[torch.Tensor], torch.Tensor], cameras: Any, index: int,
                aabb: torch.Tensor, mode: str = "shaded") -> torch.Tensor:
    """(H, W, 3) sphere-traced picture of camera `index`."""
    from fields.render.sphere_trace import render_sdf

    o, d = cameras.pixel_rays(index)
    extent = float((aabb[1] - aabb[0]).max())
    out = render_sdf(sdf, o, d, aabb, mode=mode, epsilon=1e-4 * extent,
                     normal_eps=1e-3 * extent)
    return out["rgb"].reshape(cameras.height, cameras.width, 3)


def write_sdf_outputs(out: Path, field: SDFField, target: Target, metrics: dict[str, Any],
                      resolution: int, picture_size: int = 256,
                      wall_start: float | None = None) -> dict[str, Any]:
    """mesh.ply (the zero level set at `resolution`), metrics.json (surface metrics when the
    truth is known) and renders/compare.png (ground truth when known | fit, shaded | fit,
    normals) for two views."""
    from fields.data.images import write_image
    from fields.io import write_json

    verts, faces = extract_surface(field, target.aabb, resolution)
    save_mesh(out / "mesh.ply", verts, faces)
    metrics = {**metrics, "resolution": resolution, "vertices": len(verts), "faces": len(faces),
               "watertight": is_watertight(faces)}
    if target.vertices is not None:  # a known surface: the metrics
        metrics.update(surface_metrics((verts, faces), (target.vertices, target.faces)))
        metrics["target_watertight"] = is_watertight(target.faces)
    cams = orbit_cameras(target.aabb, 2, picture_size)
    rows = []
    with torch.no_grad():
        for i in range(len(cams)):
            truth = [render_view(target.sdf, cams, i, target.aabb)] if target.sdf else []
            rows.append(torch.cat((*truth, render_view(field, cams, i, target.aabb),
                                   render_view(field, cams, i, target.aabb, "normals")), dim=1))
    write_image(out / "renders" / "compare.png", torch.cat(rows, dim=0).clamp(0, 1))
    if wall_start is not None:
        metrics["wall_seconds"] = time.perf_counter() - wall_start
    metrics = _common_first(metrics)
    write_json(out / "metrics.json", metrics)
    return metrics


def _common_first(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics with the keys every kind writes first: steps, seconds, wall_seconds."""
    head = {k: metrics[k] for k in ("steps", "seconds", "wall_seconds") if k in metrics}
    return {**head, **metrics}


def fit_sdf(target: Target, config: SDFConfig, out: Path, steps: int, max_seconds: float,
            eval_every: float, seed: int, resolution: int,
            on_eval: Callable[[Any, dict[str, Any]], None] | None = None,
            show_progress: bool = True, resume: str | None = None,
            checkpoint_every: float = 120.0,
            log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Trains (continuing from the checkpoint `resume` when given), writes checkpoint.pt and
    the outputs; returns the metrics. `checkpoint_every` and `log` as `fields.train.train`."""
    from fields.train import seed_everything

    wall = time.perf_counter()
    seed_everything(seed)
    if target.points is not None:
        task: SDFTask = PointCloudTask(target.points, target.normals, target.aabb, config,
                                       seed=seed, evaluate_fn=evaluator(target, resolution))
    else:
        task = SDFTask(target.samples, target.aabb, config, seed=seed,
                       evaluate_fn=evaluator(target, resolution))
    extra = {"kind": "sdf", "sdf": {"aabb": target.aabb.tolist(), "config": config.to_dict(),
                                    "source": target.name}}
    run = _train(task, extra, out, steps, max_seconds, eval_every, seed, on_eval, show_progress,
                 resume, checkpoint_every, log)
    if not distributed.is_main():
        return run  # under torchrun, rank 0 writes the outputs
    metrics = {**run, "source": target.name, "model": config.model}
    return write_sdf_outputs(out, task.field, target, metrics, resolution, wall_start=wall)


def _train(task: Any, extra: dict[str, Any], out: Path, steps: int, max_seconds: float,
           eval_every: float, seed: int, on_eval: Any, show_progress: bool,
           resume: str | None = None, checkpoint_every: float = 120.0,
           log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """`fields.train.train` with checkpoint.pt in `out`; the run's steps, seconds and
    history. Leaves the field in eval mode."""
    from fields.command import run_notes
    from fields.train import TrainConfig, train

    wall = time.perf_counter()
    state = train(task, TrainConfig(steps=steps, max_seconds=max_seconds, eval_every=eval_every,
                                    seed=seed, checkpoint_every=checkpoint_every),
                  checkpoint=out / "checkpoint.pt", resume=resume, checkpoint_extra=extra,
                  on_eval=on_eval, show_progress=show_progress, log=log)
    task.field.eval()
    return {"steps": state.step, "seconds": state.seconds,
            "train_wall_seconds": time.perf_counter() - wall, "history": state.history,
            **run_notes(state)}


# -- surfaces from images (NeuS) --


def _scene_sdf(scene: str) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    from fields.scenes.glossy import chrome_sdf, glossy_sdf
    from fields.scenes.tabletop import tabletop_sdf

    return {"tabletop": tabletop_sdf, "glossy": glossy_sdf, "shiny": glossy_sdf,
            "chrome": chrome_sdf}[scene]


def scene_truth(scene: str = "tabletop", resolution: int = 385
                ) -> tuple[np.ndarray, np.ndarray]:
    """A built-in posed-image scene's exact surface (its procedural SDF), meshed."""
    sdf = _scene_sdf(scene)
    lo = torch.tensor([-1.1, -1.1, -0.8])
    hi = torch.tensor([1.1, 1.1, 0.7])
    return extract_surface(lambda p: sdf(p)[0], torch.stack([lo, hi]), resolution)


# the built-in posed-image scenes' objects, in the order of their SDFs' object ids
SCENE_OBJECTS = {
    "tabletop": ("table", "sphere", "torus", "box", "pillars", "capsule"),
    "glossy": ("table", "chrome sphere", "glossy capsule", "torus", "box"),
    "shiny": ("table", "chrome sphere", "glossy capsule", "torus", "box"),
    "chrome": ("table", "mirror box", "glossy capsule", "torus", "box"),
}


def scene_objects(scene: str = "tabletop"
                  ) -> tuple[Callable[[np.ndarray], np.ndarray], tuple[str, ...]]:
    """A built-in posed-image scene's objects for `surface_metrics`: a function labelling
    points (P, 3) with the id (P,) of the nearest object, and the objects' names."""
    sdf = _scene_sdf(scene)

    def label(points: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return sdf(torch.as_tensor(points, dtype=torch.float32))[1].numpy()

    return label, SCENE_OBJECTS[scene]


def fit_neus(data: Any, config: Any, out: Path, steps: int, max_seconds: float,
             eval_every: float, seed: int, resolution: int,
             truth: tuple[np.ndarray, np.ndarray] | None = None,
             objects: tuple[Callable[[np.ndarray], np.ndarray], tuple[str, ...]] | None = None,
             on_eval: Callable[[Any, dict[str, Any]], None] | None = None,
             show_progress: bool = True, resume: str | None = None,
             checkpoint_every: float = 120.0,
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Trains NeuS on posed images (continuing from the checkpoint `resume` when given);
    writes checkpoint.pt, mesh.ply (coloured by the radiance head), metrics.json (with
    `truth`, a mesh, the surface metrics) and renders/compare.png (held-out image | render |
    the surface, sphere traced)."""
    from fields.data.images import write_image
    from fields.io import write_json
    from fields.sdf.neus import NeusTask
    from fields.train import seed_everything

    wall = time.perf_counter()
    seed_everything(seed)

    def evaluate(field: Any, final: bool) -> dict[str, float]:
        if truth is None:
            return {}
        verts, faces = extract_surface(field.sdf, field.aabb, 129)
        m = surface_metrics((verts, faces), truth, n_points=20_000)
        return {k: m[k] for k in ("chamfer_l1", "f_score", "normal_consistency")}

    task = NeusTask(data, config, seed=seed, evaluate_fn=evaluate)
    extra = {"kind": "sdf", "sdf": {"aabb": data.aabb.tolist(), "config": config.to_dict(),
                                    "source": data.name, "neus": True,
                                    "transform": data.meta.get("transform")}}
    run = _train(task, extra, out, steps, max_seconds, eval_every, seed, on_eval, show_progress,
                 resume, checkpoint_every, log)
    if not distributed.is_main():
        return run  # under torchrun, rank 0 writes the outputs
    metrics: dict[str, Any] = {**run, "scene": data.name,
                               "sharpness": task.field.sharpness().item()}
    from fields.sdf.neus import vertex_colours

    verts, faces = extract_surface(task.field.sdf, task.field.aabb, resolution)
    colours = vertex_colours(task.field, torch.from_numpy(verts)) if len(verts) else None
    save_mesh(out / "mesh.ply", verts, faces, colours)
    metrics.update({"resolution": resolution, "vertices": len(verts), "faces": len(faces),
                    "watertight": is_watertight(faces)})
    if truth is not None:
        metrics.update(surface_metrics((verts, faces), truth, objects=objects))
    # a held-out view, its longer side at most 256 pixels: image | render | the surface
    from fields.data.blender import area_downsample
    from fields.render.cameras import Cameras

    split = data.eval_split()
    full = split.cameras[0]
    k = min(1.0, 256 / max(full.width, full.height))
    w, h = max(1, round(full.width * k)), max(1, round(full.height * k))
    cams = Cameras(full.c2w, full.fx * w / full.width, full.fy * h / full.height,
                   full.cx * w / full.width, full.cy * h / full.height, w, h)
    image = area_downsample(split.images[:1], (h, w))[0]
    o, d = cams.pixel_rays(0)
    with torch.no_grad():
        rgb = torch.cat([task.render_rays(oo, dd, data.background, with_grad=False)["rgb"]
                         for oo, dd in zip(o.split(4096), d.split(4096), strict=True)])
        rgb = rgb.reshape(h, w, 3).clamp(0, 1)
        surface = render_view(task.field, cams, 0, task.field.aabb).clamp(0, 1)
    metrics["psnr_view0"] = float(-10 * torch.log10((rgb - image).square().mean()))
    write_image(out / "renders" / "compare.png", torch.cat((image, rgb, surface), dim=1))
    metrics["wall_seconds"] = time.perf_counter() - wall
    metrics = _common_first(metrics)
    write_json(out / "metrics.json", metrics)
    return metrics
