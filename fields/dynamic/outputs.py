"""What a dynamic fit writes besides its checkpoint: held-out renders, videos through time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fields.dynamic.model import DynamicField, DynamicSettings, render_camera_at
from fields.render.occupancy import OccupancyGrid


def time_path_cameras(info: dict[str, Any], n_frames: int, orbit: bool = True,
                      scale: float = 1.0) -> Any:
    """`n_frames` cameras with the held-out cameras' intrinsics (times `scale`): around the
    scene's orbit (`orbit`), or all at the orbit's first position (time alone moves)."""
    from fields.render.cameras import Cameras
    from fields.render.paths import orbit_path

    o = info["orbit"]
    c2w = orbit_path(torch.tensor(o["centre"]), o["radius"], torch.tensor(o["up"]),
                     n_frames if orbit else 1)
    if not orbit:
        c2w = c2w.expand(n_frames, 3, 4).contiguous()
    cam = info["camera"]
    return Cameras(c2w, cam["fx"] * scale, cam["fy"] * scale, cam["cx"] * scale,
                   cam["cy"] * scale, round(cam["width"] * scale), round(cam["height"] * scale))


def render_time_path(field_: DynamicField, grid: OccupancyGrid, settings: DynamicSettings,
                     info: dict[str, Any], n_frames: int = 48,
                     time_range: tuple[float, float] = (0.0, 1.0), orbit: bool = True,
                     scale: float = 1.0,
                     progress: Callable[[int, int], None] | None = None) -> list[torch.Tensor]:
    """Frames (H, W, 3) while time runs linearly over `time_range`: the camera orbits the
    scene (`orbit`: bullet time when the range is one instant) or stays put."""
    lo, hi = time_range
    if not (0.0 <= lo <= 1.0 and 0.0 <= hi <= 1.0):
        raise ValueError(f"time range must lie in [0, 1], got {lo:g}..{hi:g}")
    if n_frames < 1:
        raise ValueError(f"frames must be >= 1, got {n_frames}")
    cams = time_path_cameras(info, n_frames, orbit, scale)
    bg = torch.tensor(info["background"])
    frames = []
    for i in range(n_frames):  # a frame at a time; its rays are batched
        t = lo + (hi - lo) * (i / max(n_frames - 1, 1))
        frames.append(render_camera_at(field_, grid, cams, i, t, settings, bg)["rgb"])
        if progress is not None:
            progress(i + 1, n_frames)
    return frames


def write_outputs(task: Any, out_dir: Any, metrics: dict[str, Any],
                  video_frames: int = 48) -> dict[str, Any]:
    """Writes renders/ (each held-out view at its time: ground truth | render | error map),
    bullet_time.mp4 (orbit while time runs from 0 to 1) and metrics.json into out_dir."""
    from fields.data.images import error_map, write_image
    from fields.dynamic.model import dynamic_info
    from fields.io import write_json, write_video

    out = Path(out_dir)
    for i, view in enumerate(task.last_eval_images):
        row = torch.cat((view["gt"], view["rgb"],
                         error_map(view["rgb"], view["gt"], 1e-3, 0.3)), dim=1)
        write_image(out / "renders" / f"test_{i:03d}_t{view['time']:.3f}.png", row)
    written = {"renders": str(out / "renders")}
    if video_frames > 0:
        frames = render_time_path(task.model, task.grid, task.settings,
                                  dynamic_info(task.data, task.config), video_frames)
        write_video(out / "bullet_time.mp4", frames)
        written["video"] = str(out / "bullet_time.mp4")
    write_json(out / "metrics.json", metrics)
    return written
