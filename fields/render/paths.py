"""Camera paths for videos: an orbit around the scene and a spiral (orbit with a rising and
falling elevation)."""

from __future__ import annotations

import math
from typing import Any

import torch

from fields.render.cameras import look_at


def _frame(up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit vectors orthogonal to `up` (and to each other)."""
    up = up / up.norm()
    helper = torch.tensor([1.0, 0.0, 0.0]) if abs(float(up[0])) < 0.9 else torch.tensor(
        [0.0, 1.0, 0.0]
    )
    a = torch.linalg.cross(up, helper)
    a = a / a.norm()
    return a, torch.linalg.cross(up, a)


def orbit_path(
    centre: torch.Tensor,
    radius: float,
    up: torch.Tensor,
    n_frames: int = 48,
    elevation_deg: float = 30.0,
    spiral_deg: float = 0.0,
) -> torch.Tensor:
    """(n_frames, 3, 4) OpenGL camera-to-world matrices circling `centre` at `radius`, at an
    elevation of `elevation_deg` above the plane orthogonal to `up`, looking at the centre.
    With `spiral_deg` > 0 the elevation swings by that much over the path (a spiral)."""
    centre = torch.as_tensor(centre, dtype=torch.float32)
    up = torch.as_tensor(up, dtype=torch.float32)
    a, b = _frame(up)
    k = torch.arange(n_frames, dtype=torch.float32)
    az = 2 * math.pi * k / n_frames
    el = torch.deg2rad(elevation_deg + spiral_deg * torch.sin(2 * az))
    u = up / up.norm()
    eyes = centre + radius * (
        torch.cos(el)[:, None] * (torch.cos(az)[:, None] * a + torch.sin(az)[:, None] * b)
        + torch.sin(el)[:, None] * u
    )
    return look_at(eyes, centre, up=u)


PATHS = {"orbit": 0.0, "spiral": 20.0}


def read_camera_path(path: str) -> tuple[Any, float]:
    """A camera-path file in nerfstudio's format (what its viewer's render panel exports):
    ``{"render_width": W, "render_height": H, "fps": F, "camera_type": "perspective",
    "camera_path": [{"camera_to_world": 16 numbers (a 4x4 OpenGL camera-to-world matrix, row
    by row), "fov": vertical field of view in degrees}, ...]}``, in the scene's coordinates.
    Returns (Cameras of every keyframe, fps); ValueError naming the file and the field."""
    import json
    from pathlib import Path

    from fields.render.cameras import Cameras

    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise ValueError(f"{p}: no such camera-path file") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: not a JSON camera-path file: {e}") from e
    if not isinstance(doc, dict):
        raise ValueError(f"{p}: expected a JSON object with 'camera_path', got "
                         f"{type(doc).__name__}")

    def number(value: object, field: str, positive: bool = True) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
            math.isfinite(value) and (value > 0 or not positive)
        if not ok:
            raise ValueError(f"{p}: field {field!r} must be a {'positive ' if positive else ''}"
                             f"finite number, got {value!r}")
        return float(value)

    kind = doc.get("camera_type", "perspective")
    if kind != "perspective":
        raise ValueError(f"{p}: field 'camera_type' is {kind!r}; only 'perspective' camera "
                         "paths can be rendered")
    for key in ("render_width", "render_height", "camera_path"):
        if key not in doc:
            raise ValueError(f"{p}: missing field {key!r}")
    width = number(doc["render_width"], "render_width")
    height = number(doc["render_height"], "render_height")
    if width != int(width) or height != int(height) or width > 8192 or height > 8192:
        raise ValueError(f"{p}: fields 'render_width' / 'render_height' must be whole numbers "
                         f"up to 8192, got {doc['render_width']!r} x {doc['render_height']!r}")
    fps = number(doc.get("fps", 24), "fps")
    frames = doc["camera_path"]
    if not isinstance(frames, list) or not frames:
        raise ValueError(f"{p}: field 'camera_path' must be a non-empty list of cameras")
    c2w, focal = [], []
    for i, frame in enumerate(frames):
        where = f"camera_path[{i}]"
        if not isinstance(frame, dict):
            raise ValueError(f"{p}: {where} must be an object, got {type(frame).__name__}")
        m = frame.get("camera_to_world")
        if not isinstance(m, list) or len(m) != 16:
            raise ValueError(f"{p}: {where}.camera_to_world must be 16 numbers (a 4x4 matrix "
                             f"row by row), got {str(m)[:60]}")
        vals = [number(v, f"{where}.camera_to_world", positive=False) for v in m]
        mat = torch.tensor(vals, dtype=torch.float32).reshape(4, 4)[:3]
        det = float(torch.linalg.det(mat[:, :3]))
        if not 0.9 < det < 1.1:
            raise ValueError(f"{p}: {where}.camera_to_world's rotation has determinant "
                             f"{det:.3g}; expected a rotation (determinant 1)")
        fov = number(frame.get("fov"), f"{where}.fov")
        if fov >= 180:
            raise ValueError(f"{p}: field '{where}.fov' must be below 180 degrees, got {fov}")
        c2w.append(mat)
        focal.append(0.5 * height / math.tan(math.radians(fov) / 2))
    f = torch.tensor(focal)
    cams = Cameras(torch.stack(c2w), f, f, width / 2, height / 2, int(width), int(height))
    return cams, fps
