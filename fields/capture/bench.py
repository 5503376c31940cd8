"""`fields bench capture`: cameras recovered from our own renders, scored against the truth."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from fields.capture.align import camera_errors
from fields.capture.process import ProcessOptions, Progress, process_images, process_video


def recovered_errors(scene: Path, truth_file: Path, radius: float,
                     name_of: dict[str, str] | None = None) -> dict[str, Any]:
    """Errors of a processed scene's cameras (transforms.json, OpenGL) against the capture's
    ``truth.json`` after a similarity alignment: rotation (degrees) and camera centre (% of
    the orbit `radius`). `name_of` maps a recovered file name to its name in the truth."""
    truth = json.loads(truth_file.read_text())
    true = {f["name"]: np.asarray(f["c2w"]) for f in truth["frames"]}
    frames = json.loads((scene / "transforms.json").read_text())["frames"]
    got, want = [], []
    for fr in frames:
        name = Path(fr["file_path"]).name
        key = (name_of or {}).get(name, name)
        if key in true:
            got.append(np.asarray(fr["transform_matrix"])[:3])
            want.append(true[key])
    e = camera_errors(np.stack(got), np.stack(want))
    rot, centre = e["rotation_deg"], 100 * e["centre"] / radius
    return {"rotation_mean_deg": float(rot.mean()), "rotation_max_deg": float(rot.max()),
            "centre_mean_pct_radius": float(centre.mean()),
            "centre_max_pct_radius": float(centre.max()), "compared": len(got)}


def bench_capture(out: Path, photos: int, frames: int, keep: int, threads: int, seed: int,
                  progress: Progress) -> list[dict[str, Any]]:
    """Renders the captures (cached in `out` by their spec), processes them with no poses and
    scores the recovered cameras: one row per capture."""
    import torch

    from fields.scenes.capture import CaptureSpec, make_photos, make_video, truth_path

    if threads > 0:
        torch.set_num_threads(threads)
    rows = []
    if photos:
        spec = CaptureSpec(n=photos, seed=seed)
        folder = out / f"photos_{photos}_{seed}"
        if not truth_path(folder).is_file():
            make_photos(folder, spec, lambda k, n: progress("render photos", k, n))
        t = time.perf_counter()
        report = process_images(folder, out / f"scene_photos_{photos}_{seed}",
                                ProcessOptions(threads=threads, matcher="exhaustive"), progress)
        rows.append({"capture": f"{photos} photos", "given": photos,
                     "registered": report["images_registered"],
                     "seconds": time.perf_counter() - t,
                     "reprojection_error_px": report["mean_reprojection_error_px"],
                     **recovered_errors(out / f"scene_photos_{photos}_{seed}",
                                        truth_path(folder), spec.radius)})
    if frames:
        spec = CaptureSpec(n=frames, seed=seed)
        video = out / f"orbit_{frames}_{seed}.mp4"
        if not truth_path(video).is_file():
            make_video(video, spec, progress=lambda k, n: progress("render video", k, n))
        t = time.perf_counter()
        scene = out / f"scene_video_{frames}_{seed}"
        report = process_video(video, scene, keep,
                               ProcessOptions(threads=threads, matcher="sequential"), progress)
        names = {f"frame_{k:05d}.png": f"frame_{k:05d}" for k in report["video"]["frame_indices"]}
        rows.append({"capture": f"video ({frames} frames, {len(names)} kept)",
                     "given": len(names), "registered": report["images_registered"],
                     "seconds": time.perf_counter() - t,
                     "reprojection_error_px": report["mean_reprojection_error_px"],
                     **recovered_errors(scene, truth_path(video), spec.radius, names)})
    return rows
