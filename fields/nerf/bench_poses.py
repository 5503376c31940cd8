"""`fields bench poses`: camera pose refinement on the built-in scene with perturbed poses.

Three fits of the same budget on the same images: with the true poses; with every training
pose turned by `degrees` and moved by `fraction` of the orbit radius, refined (BARF: SE(3)
corrections, coarse-to-fine hash levels); and (the baseline) the same perturbed poses, not
refined. The refined poses are compared with the true ones after the similarity that best
maps their centres (Umeyama), as in BARF's evaluation. Held-out views are evaluated after
test-time pose alignment: the true held-out cameras are moved by the same similarity into
the refined frame, then each one's pose is refined against its own image with the field
frozen (`fields.nerf.poses.refine_view`); the perturbed, unrefined fit gets the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from fields.capture.align import camera_errors
from fields.data.dataset import SceneData, Split
from fields.nerf.model import NerfConfig, NerfTask, render_camera, render_rays
from fields.nerf.poses import apply_similarity, perturb_poses, refine_view, similarity_between
from fields.render.cameras import Cameras


def _with_cameras(scene: SceneData, c2w: torch.Tensor) -> SceneData:
    """The scene with its training cameras replaced by c2w (N, 3, 4)."""
    cams = scene.train.cameras
    moved = Cameras(c2w, cams.fx, cams.fy, cams.cx, cams.cy, cams.width, cams.height,
                    cams.distortion, cams.model)
    train = Split(scene.train.images, moved, scene.train.names, scene.train.alpha,
                  scene.train.mask)
    return replace(scene, splits={**scene.splits, "train": train})


def _pose_errors(c2w: torch.Tensor, true_c2w: torch.Tensor, radius: float) -> dict[str, float]:
    err = camera_errors(c2w.double().numpy(), true_c2w.double().numpy())
    rot, centre = err["rotation_deg"], np.asarray(err["centre"]) / radius * 100.0
    return {"rotation_mean_deg": float(rot.mean()), "rotation_max_deg": float(rot.max()),
            "centre_mean_pct_radius": float(centre.mean()),
            "centre_max_pct_radius": float(centre.max())}


def held_out_psnr(task: NerfTask, split: Split, true_train: torch.Tensor, test_steps: int,
                  seed: int = 0) -> dict[str, float]:
    """Mean PSNR over the split's views with the given cameras moved into the task's frame
    (the similarity from `true_train` to the task's training cameras, refined or not) and,
    with `test_steps`, each pose then refined against its own image."""
    from fields.metrics import psnr

    s, r, t = similarity_between(true_train.double().numpy(),
                                 task.refined_cameras().double().numpy())
    cams = split.cameras
    c2w = torch.from_numpy(apply_similarity(cams.c2w.double().numpy(), s, r, t)).float()
    moved = Cameras(c2w, cams.fx, cams.fy, cams.cx, cams.cy, cams.width, cams.height,
                    cams.distortion, cams.model)
    bg = task.data.background
    g = torch.Generator().manual_seed(seed)
    aligned, refined = [], []
    task.module.eval()
    for p in task.module.parameters():
        p.requires_grad_(False)
    centre = task.data.aabb.mean(0)
    for i in range(len(split)):  # a loop over held-out views; each one's rays are batched
        image = split.images[i].reshape(-1, 3)
        with torch.no_grad():
            aligned.append(psnr(render_camera(task.model, task.grid, moved, i, task.settings,
                                              bg)["rgb"], split.images[i]))
        if test_steps <= 0:
            continue
        one = moved[i]

        def rays(n: int, one: Cameras = one, image: torch.Tensor = image
                 ) -> tuple[torch.Tensor, ...]:
            idx = torch.randint(0, image.shape[0], (n,), generator=g)
            u = (idx % one.width).float() + 0.5
            v = (idx // one.width).float() + 0.5
            o, d = one.rays(torch.zeros_like(idx), u, v)
            return o, d, image[idx]

        def render(o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
            return render_rays(task.model, task.grid, o, d, task.settings, bg)["rgb"]

        c = refine_view(render, rays, one.c2w[0], centre, steps=test_steps)
        fixed = Cameras(c[None], one.fx, one.fy, one.cx, one.cy, one.width, one.height,
                        one.distortion, one.model)
        with torch.no_grad():
            refined.append(psnr(render_camera(task.model, task.grid, fixed, 0, task.settings,
                                              bg)["rgb"], split.images[i]))
    for p in task.module.parameters():
        p.requires_grad_(True)
    out = {"psnr_aligned": float(np.mean(aligned))}
    if refined:
        out["psnr_test_time"] = float(np.mean(refined))
    return out


def bench_poses(
    scene: SceneData,
    seconds: float,
    degrees: float = 3.0,
    fraction: float = 0.05,
    seed: int = 0,
    test_steps: int = 100,
    baseline: bool = True,
    config: NerfConfig | None = None,
    steps: int = 1_000_000,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Rows: "true poses", "perturbed, refined" and (with `baseline`) "perturbed, not
    refined": held-out PSNR, pose errors after alignment, steps and seconds."""
    from fields.train import TrainConfig, seed_everything, train

    true_c2w = scene.train.cameras.c2w.clone()
    centre = scene.aabb.mean(0)
    radius = float((true_c2w[:, :, 3] - centre).norm(dim=-1).median())
    noisy_c2w = perturb_poses(true_c2w, degrees, fraction * radius, seed=seed)
    base = config or NerfConfig()
    runs = [("true poses", true_c2w, False), ("perturbed, refined", noisy_c2w, True)]
    if baseline:
        runs.append(("perturbed, not refined", noisy_c2w, False))
    split = scene.eval_split()
    rows = []
    for name, c2w, refine in runs:
        seed_everything(seed)
        task = NerfTask(_with_cameras(scene, c2w), replace(base, refine_poses=refine,
                                                           appearance=False), seed=seed)
        wall = time.perf_counter()
        state = train(task, TrainConfig(steps=steps, max_seconds=seconds, eval_every=0,
                                        checkpoint_every=0, seed=seed),
                      show_progress=show_progress, log=None)
        row: dict[str, Any] = {"run": name, "steps": state.step,
                               "seconds": round(state.seconds, 1)}
        row.update(held_out_psnr(task, split, true_c2w, test_steps if name != "true poses"
                                 else 0, seed))
        if name != "true poses":
            before = _pose_errors(c2w, true_c2w, radius)
            after = _pose_errors(task.refined_cameras(), true_c2w, radius)
            row.update({f"initial_{k}": v for k, v in before.items()})
            row.update(after)
        row["wall_seconds"] = round(time.perf_counter() - wall, 1)
        row["perturbation"] = {"degrees": degrees, "fraction_of_radius": fraction,
                               "radius": radius}
        rows.append(row)
        if on_row is not None:
            on_row(row)
    ref = rows[0]["psnr_aligned"]
    for row in rows[1:]:
        best = row.get("psnr_test_time", row["psnr_aligned"])
        row["psnr_gap_db"] = float(ref - best)
        row["meets_targets"] = bool(
            row["rotation_mean_deg"] <= 0.5 and row["centre_mean_pct_radius"] <= 1.0
            and row["psnr_gap_db"] <= 1.0) if not math.isnan(best) else False
    return rows
